"""Size and shape classes of regions (helpers used by tools; not tools themselves)."""

from __future__ import annotations

import math

import numpy as np

from viper_rs.core import budget
from viper_rs.core.regions import Region

#: Shape rules (pixel geometry). A region is "rectangular" when it fills at least
#: RECT_FILL of its minimum rotated rectangle; "square" when it is rectangular with
#: sides within SQUARE_RATIO of each other; "circular" when its isoperimetric quotient
#: 4*pi*A/P^2 is at least CIRCLE_QUOTIENT and it is not rectangular. The three are
#: exclusive, as in RSVQA's shape labels. The perimeter is scikit-image's Crofton
#: estimate, which (unlike the pixel staircase) does not penalise digitised curves.
RECT_FILL = 0.85
SQUARE_RATIO = 0.8
CIRCLE_QUOTIENT = 0.8
CIRCLE_AXIS_RATIO = 0.8


def size_class(area_m2: float, small_max_m2: float, large_min_m2: float) -> str:
    """``small`` below small_max_m2, ``large`` from large_min_m2, else ``medium``."""
    if area_m2 < small_max_m2:
        return "small"
    if area_m2 >= large_min_m2:
        return "large"
    return "medium"


def shape_class(region: Region) -> str | None:
    """``square``, ``rectangular``, ``circular`` or None for a region's pixel shape."""
    from viper_rs.core.regions import pixel_polygon

    poly = region.extra.get("_pixel_polygon")
    if poly is None:
        poly = pixel_polygon(region.crop)
        region.extra["_pixel_polygon"] = poly
    if poly is None or poly.area < 4:
        return None
    rect = poly.minimum_rotated_rectangle
    xs, ys = rect.exterior.coords.xy
    sides = sorted(math.dist((xs[i], ys[i]), (xs[i + 1], ys[i + 1])) for i in range(2))
    fill = poly.area / rect.area if rect.area > 0 else 0.0
    if fill >= RECT_FILL:
        return "square" if sides[1] > 0 and sides[0] / sides[1] >= SQUARE_RATIO else "rectangular"
    from skimage.measure import regionprops

    props = regionprops(region.crop.astype(np.uint8))[0]
    perimeter = props.perimeter_crofton
    quotient = 4 * math.pi * props.area / perimeter**2 if perimeter > 0 else 0.0
    ratio = props.axis_minor_length / props.axis_major_length if props.axis_major_length else 0.0
    if quotient >= CIRCLE_QUOTIENT and ratio >= CIRCLE_AXIS_RATIO:
        return "circular"
    return None


def apply_size(
    regions: list[Region], size: str, small_max_m2: float, large_min_m2: float
) -> list[Region]:
    """Regions whose size class is ``size``."""
    return [r for r in regions if size_class(r.area_m2, small_max_m2, large_min_m2) == size]


def apply_shape(regions: list[Region], shape: str) -> list[Region]:
    """Regions whose shape class is ``shape``."""
    out = []
    for r in regions:
        budget.check()
        if shape_class(r) == shape:
            out.append(r)
    return out
