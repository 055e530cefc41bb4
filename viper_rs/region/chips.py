"""Chips of a region: square cores on the working grid, each read with a halo of context."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from viper_rs.errors import ImageError, InputError
from viper_rs.geo import GeoImage
from viper_rs.rasterfile import open_raster
from viper_rs.region.image import RegionImage

#: Smallest chip core side in pixels.
MIN_CHIP_PX = 16
#: Default chip core side and halo (metres).
CHIP_M = 256.0
HALO_M = 64.0


@dataclass
class Chip:
    """One chip: its ``core`` (r0, c0, r1, c1) on the working grid, the ``read`` window
    (core plus halo, inside the grid), the sources that intersect it and its status
    (pending | ok | failed | skipped)."""

    id: str
    index: tuple[int, int]  # (chip row, chip column)
    core: tuple[int, int, int, int]
    read: tuple[int, int, int, int]
    sources: list[int]
    status: str = "pending"
    ms: float = 0.0
    error: str | None = None
    attempts: int = 0
    valid_m2: float = 0.0  # ground area of the core's valid pixels (once read)
    extra: dict[str, Any] = field(default_factory=dict)


def layout(image: RegionImage, chip_m: float, halo_m: float) -> list[Chip]:
    """The chips covering the working grid; chips outside the requested area or with no
    source are ``skipped``. InputError when a chip core is below :data:`MIN_CHIP_PX`."""
    px = image.grid.pixel_size
    size = int(round(chip_m / px)) if math.isfinite(chip_m) else 0
    if size < MIN_CHIP_PX:
        raise InputError(
            f"--chip-m {chip_m:g} is {size} px at {px:g} m/px; chips need at least {MIN_CHIP_PX} px"
        )
    if not (halo_m >= 0 and math.isfinite(halo_m)):
        raise InputError(f"--halo-m must be a number of metres >= 0, got {halo_m}")
    halo = int(math.ceil(halo_m / px))
    h, w = image.shape
    area = image.grid.area
    chips = []
    for i, r0 in enumerate(range(0, h, size)):
        for j, c0 in enumerate(range(0, w, size)):
            r1, c1 = min(r0 + size, h), min(c0 + size, w)
            core_box = image.grid.window_box(r0, c0, r1, c1)
            # The halo stops at the grid's edge: a chip touching it sees the edge as the
            # whole image would (windowed rules treat an image edge unlike nodata).
            read = (max(r0 - halo, 0), max(c0 - halo, 0), min(r1 + halo, h), min(c1 + halo, w))
            read_box = image.grid.window_box(*read)
            srcs = [k for k, fp in enumerate(image.grid.footprints) if fp.intersects(read_box)]
            chip = Chip(id=f"r{i}c{j}", index=(i, j), core=(r0, c0, r1, c1), read=read,
                        sources=srcs)
            if not srcs or not core_box.intersects(area) or core_box.intersection(area).area <= 0:
                chip.status = "skipped"
                chip.error = "outside the requested area or every source"
            chips.append(chip)
    return chips


def read_chip(image: RegionImage, chip: Chip, resampling: str = "nearest") -> GeoImage | None:
    """The chip's read window as a GeoImage in the working CRS (every intersecting source
    reprojected into it, first source first), or None when it holds no valid pixel.
    Raises on unreadable sources."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import from_bounds

    r0, c0, r1, c1 = chip.read
    h, w = r1 - r0, c1 - c0
    dst_transform = image.grid.window_transform(r0, c0)
    nb = len(image.band_names)
    data: np.ndarray | None = None
    filled = np.zeros((h, w), dtype=bool)
    white = None
    bounds = image.grid.window_box(*chip.read).bounds
    method = Resampling[resampling]
    for k in chip.sources:
        src = image.sources[k]
        # a source accepted by the scan: a URL there was typed by the user
        with open_raster(src.uri, remote=True) as ds:
            sb = transform_bounds(image.crs, ds.crs, *bounds, densify_pts=21)
            win = from_bounds(*sb, transform=ds.transform)
            col0 = max(math.floor(win.col_off) - 2, 0)
            row0 = max(math.floor(win.row_off) - 2, 0)
            col1 = min(math.ceil(win.col_off + win.width) + 2, ds.width)
            row1 = min(math.ceil(win.row_off + win.height) + 2, ds.height)
            if col1 <= col0 or row1 <= row0:
                continue
            from rasterio.windows import Window

            sw = Window(col0, row0, col1 - col0, row1 - row0)
            pixels = ds.read(indexes=list(range(1, nb + 1)), window=sw)
            smask = _valid_mask(ds, sw, pixels)
            s_transform = ds.window_transform(sw)
            s_crs = ds.crs
        if data is None:
            data = np.zeros((nb, h, w), dtype=pixels.dtype)
            white = src.white_point
        part = np.zeros((nb, h, w), dtype=data.dtype)
        cover = np.zeros((h, w), dtype=np.uint8)
        reproject(pixels, part, src_transform=s_transform, src_crs=s_crs,
                  dst_transform=dst_transform, dst_crs=image.crs, resampling=method)
        reproject(smask, cover, src_transform=s_transform, src_crs=s_crs,
                  dst_transform=dst_transform, dst_crs=image.crs, resampling=Resampling.nearest,
                  src_nodata=0, dst_nodata=0)
        new = (cover > 0) & ~filled
        data[:, new] = part[:, new]
        filled |= new
    if data is None or not filled.any():
        return None
    try:
        return GeoImage(data=data, band_names=list(image.band_names), transform=dst_transform,
                        crs=image.crs, valid=filled, path=chip.id, white_point=white)
    except ImageError:
        return None


def _valid_mask(ds: Any, window: Any, pixels: np.ndarray) -> np.ndarray:
    """uint8 validity of a source window: GDAL's dataset mask, except that a 4th band GDAL
    calls alpha is image data here (NAIP's NIR; the region's bands never include alpha), so
    such files are masked by their nodata value only."""
    from rasterio.enums import MaskFlags

    if any(MaskFlags.alpha in flags for flags in ds.mask_flag_enums):
        if ds.nodata is None:
            return np.ones(pixels.shape[1:], dtype=np.uint8)
        return (pixels != ds.nodata).any(axis=0).astype(np.uint8)
    return (ds.dataset_mask(window=window) > 0).astype(np.uint8)


def core_slice(chip: Chip) -> tuple[slice, slice]:
    """The chip's core inside its read window."""
    r0, c0, r1, c1 = chip.core
    rr, cc = chip.read[0], chip.read[1]
    return slice(r0 - rr, r1 - rr), slice(c0 - cc, c1 - cc)
