"""Measuring a scene's statistics (one image, or several together however they are cut)
and the context a chip needs (:func:`context_m`); the :class:`SceneStats` record itself is
in :mod:`viper_rs.vision.spectral.stats`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from viper_rs.vision.spectral.stats import (
    BAND_MEDIANS,
    DEFAULT_MAX_PIXELS,
    SceneStats,
    _Recorder,
)
from viper_rs.vision.spectral.thresholds import DEFAULT_THRESHOLDS, SpectralThresholds

if TYPE_CHECKING:
    from viper_rs.core.geo import GeoImage

def stats_of(image: GeoImage, thresholds: SpectralThresholds = DEFAULT_THRESHOLDS) -> SceneStats:
    """The statistics the single-image path measures on ``image`` (for images finer than
    ``FINEST_GSD_M``: on its block-averaged version, as the rules do)."""
    from viper_rs.vision.spectral.maps import compute_class_maps

    stats = compute_class_maps(image, thresholds).stats
    assert stats is not None
    return stats


# ----------------------------------------------------------------------------- regions
def _work_image(image: GeoImage) -> GeoImage:
    """``image`` as the rules see it (block-averaged when finer than ``FINEST_GSD_M``)."""
    from viper_rs.vision.spectral.maps import FINEST_GSD_M, _coarse_image

    gsd = image.ground_sampling_distance
    if gsd is not None and gsd < FINEST_GSD_M:
        f = max(1, min(int(FINEST_GSD_M / gsd + 1e-9), *image.shape))
        if f > 1:
            return _coarse_image(image, f)
    return image


def _lattice(image: GeoImage, k: int, f: int = 1) -> np.ndarray | None:
    """Pixels on every ``k``-th row and column of the grid the image's transform lies on
    (``f``: image pixels per grid pixel); ``None`` when ``k`` is 1 (every pixel)."""
    if k <= 1:
        return None
    h, w = -(-image.height // f), -(-image.width // f)
    tr = image.transform
    r_off = c_off = 0
    if tr.b == 0 and tr.d == 0 and tr.a and tr.e:
        r_off, c_off = round(tr.f / (tr.e * f)), round(tr.c / (tr.a * f))
    rows = (np.arange(h) + r_off) % k == 0
    cols = (np.arange(w) + c_off) % k == 0
    return rows[:, None] & cols[None, :]


def _counted(image: GeoImage, valid: np.ndarray, k: int) -> np.ndarray:
    """The pixels of ``image`` a scene statistic counts: ``valid``, inside the region of
    interest (a chip's core, not its halo) and on the sampling lattice."""
    sel = valid if image.roi is None else (valid & image.roi)
    lat = _lattice(image, k)
    return sel if lat is None else (sel & lat)


def _pooled_gsd(images: Sequence[GeoImage]) -> float | None:
    """One GSD for the scene: the images' own when they agree, else the root of their
    mean pixel area (``None`` when one has no ground size)."""
    gsds = [im.ground_sampling_distance for im in images]
    if any(g is None for g in gsds):
        return None
    if len(set(gsds)) == 1:
        return gsds[0]
    area = sum(float(im.row_pixel_area.sum()) * im.width for im in images)
    return math.sqrt(area / sum(im.height * im.width for im in images))


def scene_stats(
    images: Sequence[GeoImage],
    thresholds: SpectralThresholds = DEFAULT_THRESHOLDS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SceneStats:
    """The scene statistics of several images taken together (the chips or tiles of one
    region), for :func:`compute_class_maps` of each of them.

    Each image counts its valid pixels inside its region of interest (``roi``: a chip's
    core without its halo). Quantiles are taken over the pooled pixel values, so the same
    pixels give the same statistics however they are cut; above ``max_pixels`` pixels a
    lattice of the common pixel grid is used (every k-th row and column, from the
    transforms), which is also the same however the grid is cut. Windowed inputs (the
    water candidates of the NDVI split, the land cover under the paved reference) match
    the whole image's when each chip carries a halo of :func:`context_m`.
    """
    from viper_rs.core.pixel_values import nominal_white_point
    from viper_rs.vision.spectral.landcover import (
        _land_cover,
        _ndvi_threshold,
        _nir_indices,
        _visible_indices,
    )
    from viper_rs.vision.spectral.maps import _valid_pixels
    from viper_rs.vision.spectral.objects import _working_grid

    if len(images) == 0:
        raise ValueError("scene_stats needs at least one image")
    t = thresholds
    works = [_work_image(im) for im in images]
    gsd = _pooled_gsd(works)
    wgsd = 1.0 if gsd is None else gsd
    valids = [_valid_pixels(im, []) for im in works]
    total = sum(int(_counted(im, v, 1).sum()) for im, v in zip(works, valids, strict=True))
    k = max(1, math.ceil(math.sqrt(total / max(1, max_pixels))))

    # Pooled raw values: white point, nodata fill values, brightness quantiles.
    raw_all = [im.data[:, _counted(im, im.valid, k)].ravel() for im in works]
    pooled = np.concatenate(raw_all)[None, None, :]
    white_point = nominal_white_point(pooled, np.ones(pooled.shape[1:], bool))
    del raw_all, pooled
    wp = np.float32(white_point)
    scaled: dict[str, list[np.ndarray]] = {role: [] for role in BAND_MEDIANS}
    for im, v in zip(works, valids, strict=True):
        sel = _counted(im, v, k)
        for role in BAND_MEDIANS:
            if role == "NIR" and not im.has("NIR"):
                continue
            scaled[role].append(im.data[im.band_index(role)][sel].astype(np.float32) / wp)
    band = {r: np.concatenate(x) if x else np.zeros(0, np.float32) for r, x in scaled.items()}
    del scaled
    medians = {  # 0.0 when no pixel counts, as for an image without valid pixels
        BAND_MEDIANS[r]: float(np.median(x)) if x.size else (None if r == "NIR" else 0.0)
        for r, x in band.items()
    }
    bright = (band["R"] + band["G"] + band["B"]) / 3.0
    del band
    stats = SceneStats(
        white_point=white_point, gsd=gsd, **medians,
        median_brightness=float(np.median(bright)) if bright.size else 0.5,
        bright_p99=float(np.percentile(bright, 99)) if bright.size else 1.0,
    )
    del bright

    def scaled_image(im: GeoImage) -> GeoImage:
        return im if im.white_point == white_point else replace(im, white_point=white_point)

    # NDVI split over the pooled non-water pixels (images with a NIR band).
    ndvi_parts: list[np.ndarray] = []
    exg_parts: list[np.ndarray] = []
    for im, v in zip(works, valids, strict=True):
        if not im.has("NIR"):
            continue
        im = scaled_image(im)
        rec = _Recorder(stats)
        vis = _visible_indices(im, v, wgsd, rec)
        _, ndvi, _, water = _nir_indices(im, v, vis, t, wgsd, rec)
        sel = _counted(im, v & ~water, k)
        ndvi_parts.append(ndvi[sel])
        exg_parts.append(vis.exg_s[sel])
    if ndvi_parts:
        ndvi, exg = np.concatenate(ndvi_parts), np.concatenate(exg_parts)
        order = np.lexsort((exg, ndvi))  # one order for the same pixels however cut
        ndvi, exg = ndvi[order], exg[order]
        stats = replace(stats, ndvi_split=_ndvi_threshold(ndvi, exg, np.ones(ndvi.shape, bool), t))
    del ndvi_parts, exg_parts

    # Paved brightness reference, on each image's land cover with the statistics so far.
    paved: list[np.ndarray] = []
    for im, v in zip(works, valids, strict=True):
        im = scaled_image(im)
        rec = _Recorder(stats)
        cover, _, bands = _land_cover(im, v, t, wgsd, [], rec)
        grid = _working_grid(cover, bands, t, wgsd)
        sel = grid.imp
        if im.roi is not None:
            from viper_rs.vision.spectral.pixels import _block_reduce_mean

            sel = sel & (_block_reduce_mean(im.roi, grid.f) >= 0.5)
        lat = _lattice(im, k, grid.f)
        paved.append(grid.bright[sel if lat is None else (sel & lat)])
    values = np.concatenate(paved)
    return replace(
        stats, paved_median_brightness=float(np.median(values)) if values.size else 0.5
    )


# ----------------------------------------------------------------------------- context
def context_m(gsd: float | None, thresholds: SpectralThresholds = DEFAULT_THRESHOLDS) -> float:
    """Halo (m) around a chip within which every windowed rule of the spectral pipeline
    reads pixels: the land-cover windows chained with the widest later window (straight
    paved runs or built-up density). Rules on whole connected components (minimum areas,
    hole filling, water bodies, segment shapes, nearest lit pixel of a shadow) reach as
    far as their component and are not bounded by it."""
    from viper_rs.vision.spectral.maps import FINEST_GSD_M
    from viper_rs.vision.spectral.pixels import _odd, _px

    t = thresholds
    g = 1.0 if gsd is None else max(float(gsd), FINEST_GSD_M)

    def half(n_px: int, pixel: float) -> float:
        return (n_px // 2) * pixel

    # Land cover: smoothed excess green (Gaussian, 4 sigma), NIR/brightness texture,
    # water opening and shore rim, canopy texture on its block grid, tree smoothing.
    r_exg = 4.0 * _px(0.5, g, 0.5) * g
    r_local = half(_odd(_px(3.0, g, 3)), g)
    r_water = 2 * max(1, int(_px(1.0, g))) * g + max(1, int(round(_px(1.5, g)))) * g
    ft = max(1, int(np.floor(t.texture_gsd_m / g + 1e-9)))
    r_tex = half(_odd(_px(t.texture_window_m, g * ft, 3)), g * ft) + g * ft
    r_tree = half(_odd(_px(t.tree_smooth_m, g, 3)), g)
    r_cover = max(r_exg, r_local) + r_water + r_tex + r_tree
    # Objects on their working grid: straight runs (the across-width must be seen up to
    # road_max_width_m and the run up to elongation times that), segmentation gradient,
    # busy share, tree ring.
    fo = max(1, int(np.floor(t.object_gsd_m / g + 1e-9)))
    w = g * fo
    gr = max(1, int(np.floor(1.0 / w + 1e-9))) * w
    r_runs = max(t.road_run_length_m, t.road_min_elongation * t.road_max_width_m) + gr
    r_seg = 4.0 * _px(0.5, w, 0.5) * w + w
    r_busy = half(_odd(_px(2.0, w, 3)), w) + half(_odd(_px(t.parking_context_m, w, 3)), w)
    r_ring = max(1, int(round(_px(2.0, w)))) * w
    r_objects = max(r_runs, r_seg, r_busy, r_ring) + w
    # Built-up density: a box of 2 sigma applied twice.
    r_built = 2 * half(_odd(2.0 * _px(t.built_up_sigma_m, g, 1.0)), g)
    return float(r_cover + max(r_objects, r_built))
