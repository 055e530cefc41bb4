"""Building use (residential / commercial) told from the roof, as far as a roof tells it.

The rule: a building is **commercial** when its footprint is at least
:data:`COMMERCIAL_MIN_M2` and its roof is bright, a flat membrane or metal roof (median
R, G, B brightness of the footprint at least :data:`COMMERCIAL_MIN_BRIGHTNESS` of the full
scale the building model reads); every other building is **residential** (small or dark,
pitched roofs: shingles, tiles). It is what the roof suggests from above, not the use
mapped on the ground (OpenStreetMap's building=retail, =house...): a white-roofed house is
called commercial and a tar-roofed shop residential. Measured on the RSVQA-HR questions
that name residential / commercial buildings (docs/synthetic.md).
"""

from __future__ import annotations

import numpy as np

from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region

#: Smallest footprint (m2) of a commercial building (a small shop or office).
COMMERCIAL_MIN_M2 = 120.0
#: Median roof brightness (mean of R, G, B in [0, 1]) from which a roof is a bright flat
#: membrane or metal roof; shingle, tile and tar roofs are darker.
COMMERCIAL_MIN_BRIGHTNESS = 0.64
#: The rule in words, for notes.
RULE = (f"commercial = footprint >= {COMMERCIAL_MIN_M2:g} m2 with a bright roof (median "
        f"brightness >= {COMMERCIAL_MIN_BRIGHTNESS:g}), residential = the other buildings; "
        "told from the roof, not from the mapped use")


def roof_brightness(rgb: np.ndarray, region: Region) -> float:
    """Median brightness (mean of R, G, B) over a region's pixels of ``rgb`` ((H, W, 3) in
    [0, 1] on the region's image grid)."""
    r0, c0 = region.origin
    h, w = region.crop.shape
    pixels = rgb[r0:r0 + h, c0:c0 + w][region.crop]
    return float(np.median(pixels.mean(axis=1))) if pixels.size else 0.0


def building_use_of(region: Region, rgb: np.ndarray) -> str:
    """"commercial" or "residential" for one building region (see the module's rule)."""
    bright = roof_brightness(rgb, region)
    big = region.area_m2 is not None and region.area_m2 >= COMMERCIAL_MIN_M2
    return "commercial" if big and bright >= COMMERCIAL_MIN_BRIGHTNESS else "residential"


def select_use(regions: list[Region], image: GeoImage, rgb: np.ndarray, use: str
               ) -> list[Region]:
    """The regions whose use (:func:`building_use_of`) is ``use``; ``image`` is the
    regions' image (``rgb`` its R, G, B in [0, 1])."""
    if rgb.shape[:2] != image.shape:
        raise ValueError(f"rgb {rgb.shape[:2]} is not on the image grid {image.shape}")
    return [r for r in regions if building_use_of(r, rgb) == use]
