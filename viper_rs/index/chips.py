"""Chips: overlapping square windows of a fixed ground size over a source, with footprints.

A chip is ``chip_m`` metres on a side (``round(chip_m / pixel size)`` pixels), placed every
``chip_m * (1 - overlap)`` metres with the last chip flush with the source's edge; a source
smaller than one chip is one chip. Its footprint is kept in WGS84 (bbox and the four
corners) for maps and GeoJSON, and as a pixel window for reading.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from affine import Affine

from viper_rs.core.errors import ImageError, InputError
from viper_rs.core.geo import GeoImage
from viper_rs.core.ground_area import linear_unit_factor
from viper_rs.tiling.chips import Chip, box, count_starts, starts, windows
from viper_rs.tiling.sources import Source

#: Chips with fewer valid pixels than this fraction are not indexed (frame margins).
DEFAULT_MIN_VALID = 0.5
#: Chips wider than this many pixels (very fine imagery) are read averaged down to it.
MAX_CHIP_PX = 1024


@dataclass(frozen=True)
class ChipGrid:
    """How sources are cut: chip side in metres and the overlap between neighbours."""

    chip_m: float = 256.0
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if not (self.chip_m > 0 and np.isfinite(self.chip_m)):
            raise InputError(f"chip size must be a positive number of metres, got {self.chip_m}")
        if not 0 <= self.overlap < 1:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}")

    @property
    def stride_m(self) -> float:
        """Distance between neighbouring chip origins (m)."""
        return self.chip_m * (1.0 - self.overlap)


def read_size(chip: Chip) -> tuple[int, int] | None:
    """``(width, height)`` an index chip is read at when it is wider than :data:`MAX_CHIP_PX`."""
    _, _, width, height = chip.window
    side = max(width, height)
    if side <= MAX_CHIP_PX:
        return None
    f = MAX_CHIP_PX / side
    return (max(1, round(width * f)), max(1, round(height * f)))


def chip_image(chip: Chip) -> GeoImage:
    """An index chip's pixels (its source's white point, the window's georeference)."""
    source = chip.sources[0]
    # an accepted source (a URL there was typed by the user or found by a STAC search)
    return GeoImage.open(source.uri, window=chip.window, white_point=source.white_point,
                         out_size=read_size(chip), remote=True)


def chip_id(source: Source, window: tuple[int, int, int, int]) -> str:
    """Stable id of a window of a source version."""
    text = f"{source.key}|{source.fingerprint}|{','.join(map(str, window))}"
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def metres_per_unit(crs_wkt: str) -> float:
    """Metres per CRS unit along the axes (1 for metre CRSs; degrees raise)."""
    return _metres_per_unit(crs_wkt)


@lru_cache(maxsize=64)
def _metres_per_unit(crs_wkt: str) -> float:
    from rasterio.crs import CRS

    crs = CRS.from_user_input(crs_wkt)
    if crs.is_geographic:
        return float("nan")
    try:
        return linear_unit_factor(crs)
    except ImageError:  # no linear units reported: assume metres
        return 1.0


def chip_shape(source: Source, grid: ChipGrid) -> tuple[int, int, int, int]:
    """``(width, height, stride x, stride y)`` of ``source``'s chips in source pixels."""
    xres, yres = source.resolution
    unit_x, unit_y = _units(source)
    cw = max(1, round(grid.chip_m / (xres * unit_x)))
    ch = max(1, round(grid.chip_m / (yres * unit_y)))
    sw = max(1, round(grid.stride_m / (xres * unit_x)))
    sh = max(1, round(grid.stride_m / (yres * unit_y)))
    return cw, ch, sw, sh


def pixel_m(source: Source) -> float:
    """``source``'s ground pixel size in metres (the larger of its two axes)."""
    xres, yres = source.resolution
    unit_x, unit_y = _units(source)
    return max(xres * unit_x, yres * unit_y)


def _units(source: Source) -> tuple[float, float]:
    """Metres per CRS unit along x and y (per degree at the centre for a geographic CRS)."""
    unit = metres_per_unit(source.crs)
    if np.isfinite(unit):
        return unit, unit
    t = Affine(*source.transform)
    _, lat = t @ (source.width / 2, source.height / 2)
    return 111_320.0 * float(np.cos(np.radians(lat))), 110_574.0


def chip_count(source: Source, grid: ChipGrid) -> int:
    """How many chips :func:`plan` makes of ``source`` (nothing listed or read)."""
    cw, ch, sw, sh = chip_shape(source, grid)
    return count_starts(source.width, cw, sw) * count_starts(source.height, ch, sh)


def plan(source: Source, grid: ChipGrid) -> list[Chip]:
    """Every chip of ``source`` (row-major)."""
    from rasterio.warp import transform as warp

    cw, ch, sw, sh = chip_shape(source, grid)
    rows, cols = starts(source.height, ch, sh), starts(source.width, cw, sw)
    ii, jj = np.meshgrid(np.arange(len(rows)), np.arange(len(cols)), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    cores, _ = windows(np.asarray(rows)[ii], np.asarray(cols)[jj], (ch, cw), 0,
                       (source.height, source.width))
    boxes = [box(row) for row in cores]
    t = Affine(*source.transform)
    xs: list[float] = []
    ys: list[float] = []
    for r0, c0, r1, c1 in boxes:
        for px, py in ((c0, r0), (c1, r0), (c1, r1), (c0, r1)):
            x, y = t @ (px, py)
            xs.append(x)
            ys.append(y)
    lons, lats = warp(source.crs, "EPSG:4326", xs, ys)
    lon = np.asarray(lons).reshape(-1, 4)
    lat = np.asarray(lats).reshape(-1, 4)
    chips = []
    for i, core in enumerate(boxes):
        corners = tuple(float(v) for pair in zip(lon[i], lat[i], strict=True) for v in pair)
        bbox = (float(lon[i].min()), float(lat[i].min()), float(lon[i].max()),
                float(lat[i].max()))
        r0, c0, r1, c1 = core
        chips.append(Chip(chip_id(source, (c0, r0, c1 - c0, r1 - r0)), (int(ii[i]), int(jj[i])),
                          core, core, (source,), bbox=bbox, corners=corners))
    return chips
