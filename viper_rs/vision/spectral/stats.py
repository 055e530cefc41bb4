"""Scene statistics: every value the spectral rules derive from a whole image rather than
from a pixel's neighbourhood (white point, nodata fill, NDVI split, brightness
references, the working GSD), as one injectable :class:`SceneStats`.

A single image measures them itself (:func:`stats_of` returns what it measured). A region
cut into chips measures them once over all chips with :func:`scene_stats` and gives the
same values to every chip, so that answers do not depend on how the region was cut.
:func:`context_m` is the halo (m) a chip needs for its windows to see what the whole
image would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    pass

T = TypeVar("T")

#: Pixels :func:`scene_stats` uses at most per statistic; beyond, a lattice of the
#: pixels (every k-th row and column of the common pixel grid) is used.
DEFAULT_MAX_PIXELS = 10_000_000


@dataclass(frozen=True)
class SceneStats:
    """The image-wide statistics of the spectral rules. ``None`` fields are measured from
    each image itself (as a single image does)."""

    #: Raw value that maps to 1.0 (bands are divided by it).
    white_point: float
    #: Ground sampling distance (m) the window sizes and minimum areas are converted with.
    gsd: float | None = None
    #: Median of each scaled band over valid pixels: the value nodata pixels are filled
    #: with before windowed measures.
    median_r: float | None = None
    median_g: float | None = None
    median_b: float | None = None
    median_nir: float | None = None
    #: (NDVI threshold, excess-green support margin, whether it is the scene's own Otsu
    #: split): ``None`` without a NIR band.
    ndvi_split: tuple[float, float, bool] | None = None
    #: Median brightness (mean of scaled R, G, B) of valid pixels: reference of the
    #: shadow and dark-water rules.
    median_brightness: float | None = None
    #: 99th percentile of that brightness: the bands are divided by it for segmentation.
    bright_p99: float | None = None
    #: Median brightness of paved surface on the shape rules' grid (bands divided by
    #: ``bright_p99``): reference of the dark-parking rule.
    paved_median_brightness: float | None = None


#: SceneStats fields measured per band role (the nodata fill values).
BAND_MEDIANS = {"R": "median_r", "G": "median_g", "B": "median_b", "NIR": "median_nir"}


class _Recorder:
    """The scene statistics of one class-map computation: each one taken from ``given``
    when set there, else measured once from the image, and remembered."""

    def __init__(self, given: SceneStats | None = None) -> None:
        self.given = given
        self.used: dict[str, Any] = {}

    def get(self, name: str, measure: Callable[[], T]) -> T:
        """The statistic ``name``: given, or measured by ``measure`` (once)."""
        if name not in self.used:
            value = getattr(self.given, name) if self.given is not None else None
            self.used[name] = measure() if value is None else value
        return self.used[name]

    def stats(self, white_point: float) -> SceneStats:
        """Everything used, as SceneStats."""
        names = [f.name for f in fields(SceneStats) if f.name != "white_point"]
        return SceneStats(white_point=white_point, **{n: self.used.get(n) for n in names})


def _valid_median(x: np.ndarray, valid: np.ndarray) -> float:
    """Median of ``x`` over ``valid`` (0.0 when nothing is valid)."""
    return float(np.median(x[valid])) if valid.any() else 0.0


# ----------------------------------------------------------------------------- single image
