"""Chips of a region: square cores on the working grid, each read with a halo of context."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from viper_rs.core.errors import ImageError, InputError, first_line
from viper_rs.core.geo import GeoImage
from viper_rs.core.rasterfile import open_raster
from viper_rs.region.image import RegionImage
from viper_rs.tiling.chips import Chip, box, windows
from viper_rs.tiling.sources import Source

#: Smallest chip core side in pixels.
MIN_CHIP_PX = 16
#: Default chip core side and halo (metres).
CHIP_M = 256.0
HALO_M = 64.0
#: Why a laid-out chip is not read.
OUTSIDE = "outside the requested area or every source"
#: Up to this many chip positions (summed over the footprints) are counted exactly.
EXACT_POSITIONS = 2_000_000


def layout(image: RegionImage, chip_m: float, halo_m: float) -> list[Chip]:
    """The chips whose read window meets a source's footprint, in row-major order (ids
    ``r{row}c{col}`` of the whole grid's chip positions); those whose core is outside the
    requested area are ``skipped``. Positions over no source (the empty space between
    sources far apart) are not laid out at all. InputError when a chip core is below
    :data:`MIN_CHIP_PX`."""
    import shapely

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
    grid = image.grid
    pos = chip_positions(grid, size, halo)
    if not len(pos):
        return []
    ii, jj = pos[:, 0], pos[:, 1]
    # The halo stops at the grid's edge: a chip touching it sees the edge as the whole
    # image would (windowed rules treat an image edge unlike nodata).
    core_px, read_px = windows(ii * size, jj * size, (size, size), halo, (h, w))
    cores, reads = _boxes(grid.transform, *core_px.T), _boxes(grid.transform, *read_px.T)
    tree = shapely.STRtree(grid.footprints)
    which, src = tree.query(reads, predicate="intersects")
    per_chip: list[list[int]] = [[] for _ in range(len(pos))]
    for k, s in zip(which.tolist(), src.tolist(), strict=True):
        per_chip[k].append(s)
    area = grid.area
    shapely.prepare(area)
    inside = shapely.intersects(area, cores)
    if inside.any():
        inside[inside] = shapely.area(shapely.intersection(area, cores[inside])) > 0
    chips = []
    for k in range(len(pos)):
        srcs = sorted(per_chip[k])
        if not srcs:
            continue
        i, j = int(ii[k]), int(jj[k])
        chip = Chip(id=f"r{i}c{j}", index=(i, j), core=box(core_px[k]), read=box(read_px[k]),
                    sources=tuple(image.sources[s] for s in srcs))
        if not inside[k]:
            chip.status = "skipped"
            chip.error = OUTSIDE
        chips.append(chip)
    return chips


def chip_positions(grid: Any, size: int, halo: int) -> np.ndarray:
    """(N, 2) sorted unique (chip row, chip column) of the chips of ``size`` px whose read
    window (``halo`` px around the core) may meet a footprint of ``grid``: the union of
    each footprint's bounding box of positions, never the whole grid's."""
    h, w = grid.height, grid.width
    n_rows, n_cols = max(math.ceil(h / size), 1), max(math.ceil(w / size), 1)
    inv = ~grid.transform
    parts = []
    for fp in grid.footprints:
        x0, y0, x1, y1 = fp.bounds
        (ca, ra), (cb, rb) = inv @ (x0, y0), inv @ (x1, y1)
        rmin, rmax = min(ra, rb) - halo, max(ra, rb) + halo
        cmin, cmax = min(ca, cb) - halo, max(ca, cb) + halo
        i0, i1 = max(int(math.floor(rmin / size)) - 1, 0), min(int(math.floor(rmax / size)) + 1, n_rows - 1)
        j0, j1 = max(int(math.floor(cmin / size)) - 1, 0), min(int(math.floor(cmax / size)) + 1, n_cols - 1)
        if i1 < i0 or j1 < j0:
            continue
        ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1), indexing="ij")
        parts.append(np.stack([ii.ravel(), jj.ravel()], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(parts).astype(np.int64), axis=0)


def count_positions(grid: Any, size: int, halo: int) -> int:
    """How many chip positions :func:`layout` tests (an upper bound of its chips), counted
    without laying them out: the sum of the footprints' position boxes."""
    h, w = grid.height, grid.width
    n_rows, n_cols = max(math.ceil(h / size), 1), max(math.ceil(w / size), 1)
    inv = ~grid.transform
    total = 0
    for fp in grid.footprints:
        x0, y0, x1, y1 = fp.bounds
        (ca, ra), (cb, rb) = inv @ (x0, y0), inv @ (x1, y1)
        i0 = max(int(math.floor((min(ra, rb) - halo) / size)) - 1, 0)
        i1 = min(int(math.floor((max(ra, rb) + halo) / size)) + 1, n_rows - 1)
        j0 = max(int(math.floor((min(ca, cb) - halo) / size)) - 1, 0)
        j1 = min(int(math.floor((max(ca, cb) + halo) / size)) + 1, n_cols - 1)
        total += max(i1 - i0 + 1, 0) * max(j1 - j0 + 1, 0)
    if total <= EXACT_POSITIONS:  # overlapping boxes (many small tiles) counted once
        return len(chip_positions(grid, size, halo))
    return min(total, n_rows * n_cols)


def _boxes(t: Any, r0: np.ndarray, c0: np.ndarray, r1: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Shapely boxes of grid windows (rows r0:r1, columns c0:c1) in the working CRS."""
    import shapely

    xa, xb = t.c + t.a * c0, t.c + t.a * c1
    ya, yb = t.f + t.e * r0, t.f + t.e * r1
    return shapely.box(np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb),
                       np.maximum(ya, yb))


def read_chip(image: RegionImage, chip: Chip, resampling: str = "nearest") -> GeoImage | None:
    """The chip's read window as a GeoImage in the working CRS (every intersecting source
    reprojected into it, first source first), or None when it holds no valid pixel.
    NaN/infinite values and nodata are never valid. A source on the working grid itself
    (same CRS and pixel size, aligned) is copied without reprojection, so a chip over many
    tiny tiles costs one small read per tile. Raises on unreadable sources."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    r0, c0, r1, c1 = chip.read
    h, w = r1 - r0, c1 - c0
    dst_transform = image.grid.window_transform(r0, c0)
    nb = len(image.band_names)
    data: np.ndarray | None = None
    filled = np.zeros((h, w), dtype=bool)
    white = None
    bounds = image.grid.window_box(*chip.read).bounds
    method = Resampling[resampling]
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="TRUE"):
        for src in chip.sources:
            aligned = _aligned(image, src, r0, c0, h, w)
            if aligned is not None and aligned[1] is None:
                continue  # on the grid but outside this window
            try:
                # a source accepted by the scan: a URL there was typed by the user
                with open_raster(src.uri, remote=True) as ds:
                    if aligned is not None:
                        (dr, dc, sr, sc, n_r, n_c), _ = aligned
                        sw = Window(sc, sr, n_c, n_r)
                        pixels = ds.read(indexes=list(range(1, nb + 1)), window=sw)
                        smask = _valid_mask(ds, sw, pixels) > 0
                    else:
                        sb = transform_bounds(image.crs, ds.crs, *bounds, densify_pts=21)
                        win = from_bounds(*sb, transform=ds.transform)
                        col0 = max(math.floor(win.col_off) - 2, 0)
                        row0 = max(math.floor(win.row_off) - 2, 0)
                        col1 = min(math.ceil(win.col_off + win.width) + 2, ds.width)
                        row1 = min(math.ceil(win.row_off + win.height) + 2, ds.height)
                        if col1 <= col0 or row1 <= row0:
                            continue
                        sw = Window(col0, row0, col1 - col0, row1 - row0)
                        pixels = ds.read(indexes=list(range(1, nb + 1)), window=sw)
                        smask = _valid_mask(ds, sw, pixels)
                        s_transform = ds.window_transform(sw)
                        s_crs = ds.crs
            except (ImageError, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - GDAL raises many types on bad data
                # the chip's failure names the source it could not read
                raise ImageError(f"{src.uri}: its pixels could not be read "
                                 f"({first_line(exc)})") from None
            if data is None:
                data = np.zeros((nb, h, w), dtype=pixels.dtype)
                white = src.white_point
            if aligned is not None:
                dst = (slice(dr, dr + n_r), slice(dc, dc + n_c))
                new = smask & ~filled[dst]
                data[:, dst[0], dst[1]][:, new] = pixels[:, new]
                filled[dst] |= new
                continue
            part = np.zeros((nb, h, w), dtype=data.dtype)
            cover = np.zeros((h, w), dtype=np.uint8)
            reproject(pixels, part, src_transform=s_transform, src_crs=s_crs,
                      dst_transform=dst_transform, dst_crs=image.crs, resampling=method)
            reproject(smask, cover, src_transform=s_transform, src_crs=s_crs,
                      dst_transform=dst_transform, dst_crs=image.crs,
                      resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
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


def _aligned(image: RegionImage, src: Source, r0: int, c0: int, h: int, w: int
             ) -> tuple[tuple[int, int, int, int, int, int] | None, Any] | None:
    """Where a source lying on the working grid (same CRS, pixel size and whole-pixel
    offset) meets the window rows ``r0:r0+h``, columns ``c0:c0+w``: ((window row, window
    col, source row, source col, rows, cols), True), ``(None, None)`` when it lies on the
    grid but outside the window, or None when the source needs reprojecting."""
    t = image.grid.transform
    a, b, c, d, e, f = src.transform
    if b != 0 or d != 0 or t.b != 0 or t.d != 0:
        return None
    tol = 1e-9 * max(abs(t.a), 1e-12)
    if abs(a - t.a) > tol or abs(e - t.e) > tol or src.crs != image.grid.crs_text:
        return None
    col, row = (c - t.c) / t.a, (f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    col, row = int(round(col)), int(round(row))  # the source's pixel (0, 0) on the grid
    top, left = max(row, r0), max(col, c0)
    bottom, right = min(row + src.height, r0 + h), min(col + src.width, c0 + w)
    if bottom <= top or right <= left:
        return None, None
    return (top - r0, left - c0, top - row, left - col, bottom - top, right - left), True


def _valid_mask(ds: Any, window: Any, pixels: np.ndarray) -> np.ndarray:
    """uint8 validity of a source window: GDAL's dataset mask, except that a 4th band GDAL
    calls alpha is image data here (NAIP's NIR; the region's bands never include alpha), so
    such files are masked by their nodata value only. NaN and infinite values (a float file
    without a nodata value) and the nodata value are never valid."""
    from rasterio.enums import MaskFlags

    if any(MaskFlags.alpha in flags for flags in ds.mask_flag_enums):
        if ds.nodata is None:
            valid = np.ones(pixels.shape[1:], dtype=bool)
        elif np.isnan(ds.nodata):
            valid = ~np.isnan(pixels).all(axis=0)
        else:
            valid = (pixels != ds.nodata).any(axis=0)
    else:
        valid = ds.dataset_mask(window=window) > 0
    if pixels.dtype.kind == "f":
        valid &= np.isfinite(pixels).all(axis=0)
    return valid.astype(np.uint8)
