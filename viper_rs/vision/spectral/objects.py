"""Roads, buildings and parking lots: the paved surface split into homogeneous segments,
each classified by shape rules (centre-line length and width, compactness, texture,
straight paved runs, surrounding canopy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components, dijkstra
from skimage import morphology
from skimage.filters import sobel
from skimage.morphology import skeletonize
from skimage.segmentation import watershed

from viper_rs.vision.spectral.landcover import IMPERVIOUS, TREE
from viper_rs.vision.spectral.pixels import (
    _block_reduce_mean,
    _clean,
    _local_stats,
    _min_pixels,
    _odd,
    _px,
    _upsample,
)
from viper_rs.vision.spectral.stats import _Recorder
from viper_rs.vision.spectral.thresholds import SpectralThresholds


# ----------------------------------------------------------------------------- runs
def _directional_runs(mask: np.ndarray, n_angles: int) -> np.ndarray:
    """Run length (pixels) of ``mask`` through each pixel along ``n_angles`` directions.

    Returns an array (n_angles, H, W); angle k is ``k * 180 / n_angles`` degrees. The
    mask is rotated so that each direction becomes a row, runs are labelled along rows,
    and their lengths are rotated back (nearest neighbour, via Pillow for speed).
    """
    from PIL import Image

    h, w = mask.shape
    out = np.zeros((n_angles, h, w), dtype=np.float32)
    horiz = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]])
    src = Image.fromarray(mask.astype(np.uint8) * 255)
    for k in range(n_angles):
        angle = 180.0 * k / n_angles
        rot = np.asarray(src.rotate(angle, resample=Image.NEAREST, expand=True)) > 127
        lab, n = ndi.label(rot, structure=horiz)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel()).astype(np.float32)
        sizes[0] = 0
        runs = Image.fromarray(sizes[lab], mode="F")
        back = np.asarray(runs.rotate(-angle, resample=Image.NEAREST, expand=True))
        bh, bw = back.shape
        r0, c0 = (bh - h) // 2, (bw - w) // 2
        out[k] = back[r0 : r0 + h, c0 : c0 + w] * mask
    return out


def _run_evidence(imp: np.ndarray, wgsd: float, t: SpectralThresholds) -> np.ndarray:
    """Pixels on a long, narrow straight run of paved surface (road evidence)."""
    g = max(1, int(np.floor(1.0 / wgsd + 1e-9)))
    coarse = _block_reduce_mean(imp, g) >= 0.5 if g > 1 else imp
    runs = _directional_runs(coarse, t.road_angles) * (wgsd * g)
    along = runs.max(axis=0)
    across = np.where(coarse, runs.min(axis=0), np.inf)
    ev = (
        coarse & (along >= t.road_run_length_m) & (along >= t.road_min_elongation * across)
        & (across >= t.road_min_width_m) & (across <= t.road_max_width_m)
    )
    return (_upsample(ev, g, imp.shape) if g > 1 else ev) & imp


# ----------------------------------------------------------------------------- segments
def _merge_similar(
    seg: np.ndarray, grad: np.ndarray, bands: list[np.ndarray], max_grad: float,
    min_weak_share: float, max_color: float,
) -> np.ndarray:
    """Merge neighbouring segments of similar colour whose shared boundary is largely weak
    (a car or a marking between two stretches of asphalt does not separate them)."""
    n = int(seg.max())
    if n < 2:
        return seg
    # Edges between two different segments, horizontal then vertical (only those edges are
    # copied: the image-sized edge arrays took ~40 bytes per pixel).
    edges = []
    for sa, sb, ga, gb in ((seg[:, :-1], seg[:, 1:], grad[:, :-1], grad[:, 1:]),
                           (seg[:-1, :], seg[1:, :], grad[:-1, :], grad[1:, :])):
        keep = sa != sb
        keep &= sa > 0
        keep &= sb > 0
        edges.append((sa[keep], sb[keep], np.maximum(ga[keep], gb[keep])))
    a, b, g = (np.concatenate(parts) for parts in zip(*edges, strict=True))
    if not a.size:
        return seg
    code = np.minimum(a, b).astype(np.int64) * (n + 1) + np.maximum(a, b)
    pairs, inv, cnt = np.unique(code, return_inverse=True, return_counts=True)
    weak_share = np.bincount(inv, weights=(g < max_grad).astype(np.float64)) / cnt
    pa, pb = pairs // (n + 1), pairs % (n + 1)
    idx = np.arange(1, n + 1)
    means = np.stack([np.asarray(ndi.mean(x, seg, idx)) for x in bands], axis=1)
    color = np.abs(means[pa - 1] - means[pb - 1]).max(axis=1)
    weak = (weak_share >= min_weak_share) & (color < max_color)
    graph = coo_matrix((np.ones(int(weak.sum())), (pa[weak], pb[weak])), shape=(n + 1, n + 1))
    _, comp = connected_components(graph, directed=False)
    # Each pixel's merged label, numbered as np.unique numbers the labels present, from a
    # table per segment (not image-sized int64 copies).
    lut = np.concatenate([[0], comp[1:] + 1])
    present = np.bincount(seg.ravel(), minlength=n + 1)[: n + 1] > 0
    new = np.searchsorted(np.unique(lut[present]), lut).astype(np.int32)
    return new[seg]


def _segment_paved(
    imp: np.ndarray, bands: list[np.ndarray], wgsd: float, t: SpectralThresholds
) -> np.ndarray:
    """Split the paved surface into homogeneous segments (roofs, road stretches, lots)."""
    sigma = _px(0.5, wgsd, 0.5)
    grad = np.max([sobel(ndi.gaussian_filter(x, sigma)) for x in bands], axis=0)
    seeds, _ = ndi.label(imp & (grad < t.segment_seed_gradient))
    seg = watershed(grad, seeds, mask=imp)
    # Paved pieces without a flat seed (small, busy) become their own segments.
    orphan, n_orphan = ndi.label(imp & (seg == 0))
    if n_orphan:
        seg = np.where(orphan > 0, orphan + seg.max(), seg)
    return _merge_similar(
        seg, grad, bands, t.segment_merge_gradient, t.segment_merge_weak_share,
        t.segment_merge_color,
    )



# ----------------------------------------------------------------------------- steps
@dataclass
class _Grid:
    """The paved surface, tree canopy and bands on the working grid of the shape rules."""

    f: int  # image pixels per working pixel (each way)
    wgsd: float  # working pixel size (m)
    imp: np.ndarray  # paved surface, cleaned
    tree: np.ndarray  # tree canopy
    bands: list[np.ndarray]  # R, G, B scaled to ~0..1
    bright: np.ndarray  # mean of the bands


@dataclass
class _SegmentStats:
    """Per-segment measures (index i is segment label i + 1)."""

    count: np.ndarray  # pixels (at least 1)
    aspect: np.ndarray  # length/width of the equivalent ellipse
    fill: np.ndarray  # compactness: area over the equivalent ellipse's area
    run_frac: np.ndarray  # share of pixels with straight-run road evidence
    mean_b: np.ndarray  # mean brightness
    busy_frac: np.ndarray  # mean share of busy pixels around


def _working_grid(
    cover: np.ndarray, bands: list[np.ndarray], t: SpectralThresholds, gsd: float
) -> _Grid:
    """Paved surface, canopy and bands block-averaged to about ``object_gsd_m``; small
    paved specks dropped and small holes (cars, crowns, markings) filled."""
    imp_full = cover == IMPERVIOUS
    tree_full = cover == TREE
    f = max(1, int(np.floor(t.object_gsd_m / gsd + 1e-9)))
    wgsd = gsd * f
    if f > 1:
        imp = _block_reduce_mean(imp_full, f) >= 0.5
        tree = _block_reduce_mean(tree_full, f) >= 0.5
        bands = [_block_reduce_mean(x, f) for x in bands]
    else:
        imp, tree = imp_full.copy(), tree_full
    imp = _clean(imp, _min_pixels(2.0, wgsd), _min_pixels(t.impervious_hole_m2, wgsd))
    bright = np.mean(bands, axis=0)
    return _Grid(f=f, wgsd=wgsd, imp=imp, tree=tree, bands=bands, bright=bright)


def _busy_share(bright: np.ndarray, wgsd: float, t: SpectralThresholds) -> np.ndarray:
    """Share of busy pixels (textured: cars, markings) around each pixel."""
    lmean, lstd = _local_stats(bright, _odd(_px(2.0, wgsd, 3)))
    busy = (lstd / (lmean + 0.02) >= t.parking_texture_cv).astype(np.float32)
    # Share of busy pixels around each pixel: the asphalt between rows of cars is calm
    # itself but sits in a busy neighbourhood.
    return ndi.uniform_filter(busy, _odd(_px(t.parking_context_m, wgsd, 3)))


def _segment_stats(
    seg: np.ndarray, run_road: np.ndarray, bright: np.ndarray, busy: np.ndarray
) -> _SegmentStats:
    """Per-segment statistics in one pass (areas, second moments, evidence fractions)."""
    n = int(seg.max())
    flat = seg.ravel()
    h, w = seg.shape

    def per_segment(values: np.ndarray | None = None) -> np.ndarray:
        v = None if values is None else np.asarray(values.ravel(), dtype=np.float64)
        return np.bincount(flat, weights=v, minlength=n + 1)[1:]

    count = np.maximum(per_segment(), 1)
    rr = np.repeat(np.arange(h, dtype=np.float64), w)  # row of each pixel, flattened
    mr = per_segment(rr) / count
    vrr = per_segment(rr * rr) / count - mr * mr
    cc = np.tile(np.arange(w, dtype=np.float64), h)  # column of each pixel
    mc = per_segment(cc) / count
    vrc = per_segment(rr * cc) / count - mr * mc
    del rr
    vcc = per_segment(cc * cc) / count - mc * mc
    del cc
    half = np.sqrt(((vrr - vcc) / 2) ** 2 + vrc**2)
    lam1 = np.maximum((vrr + vcc) / 2 + half, 0)
    lam2 = np.maximum((vrr + vcc) / 2 - half, 0)
    aspect = np.sqrt(lam1 + 1 / 12) / np.sqrt(lam2 + 1 / 12)
    # Compactness: area over the area of the ellipse with the same second moments
    # (1 for a disk, 0.95 for a rectangle, low for L-shapes and networks).
    fill = count / (4 * np.pi * np.sqrt((lam1 + 1 / 12) * (lam2 + 1 / 12)))
    run_frac = per_segment(run_road) / count
    mean_b = per_segment(bright) / count
    busy_frac = per_segment(busy) / count
    return _SegmentStats(count=count, aspect=aspect, fill=fill, run_frac=run_frac,
                         mean_b=mean_b, busy_frac=busy_frac)


def _road_shape(
    sub: np.ndarray, area: float, aspect: float, bbox_fill: float, wgsd: float,
    t: SpectralThresholds,
) -> bool:
    """Whether a segment is shaped like a road: a long centre line, road-wide, elongated."""
    if area >= t.road_min_m2 and (aspect >= 2.0 or bbox_fill < 0.5):
        length = max(_centre_line_px(sub) * wgsd, wgsd)
        width = area / length
        return (
            length >= t.road_min_length_m
            and t.road_min_width_m <= width <= t.road_max_width_m
            and length >= t.road_min_elongation * width
        )
    return False


def _centre_line_px(sub: np.ndarray) -> float:
    """Length (px) of a segment's centre line: the longest path through the skeleton of
    the segment with its holes filled. Spurs to corners and loops around cars or crowns
    inside it do not count; an L-shaped road's path follows both arms."""
    skel = skeletonize(ndi.binary_fill_holes(sub))
    rr, cc = np.nonzero(skel)
    n = rr.size
    if n < 3:
        return float(n)
    index = -np.ones(skel.shape, np.int64)
    index[rr, cc] = np.arange(n)
    rows, cols, weights = [], [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        r2, c2 = rr + dr, cc + dc
        ok = (r2 < skel.shape[0]) & (c2 >= 0) & (c2 < skel.shape[1])
        j = np.full(n, -1)
        j[ok] = index[r2[ok], c2[ok]]
        hit = j >= 0
        rows.append(np.arange(n)[hit])
        cols.append(j[hit])
        weights.append(np.full(int(hit.sum()), float(np.hypot(dr, dc))))
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(n, n)).tocsr()
    # Double sweep from the end of the component's farthest branch (exact on trees).
    far = int(breadth_first_order(graph, 0, directed=False, return_predecessors=False)[-1])
    dist = dijkstra(graph, directed=False, indices=far)
    dist = dist[np.isfinite(dist)]
    start = int(np.flatnonzero(dist == dist.max())[0]) if dist.size else far
    dist = dijkstra(graph, directed=False, indices=start)
    dist = dist[np.isfinite(dist)]
    return float(dist.max()) + 1.0 if dist.size else float(n)


def _ring_tree_share(
    seg: np.ndarray, tree: np.ndarray, sl: tuple[slice, slice], lab: int, ring_r: int,
    ring_fp: np.ndarray,
) -> float:
    """Share of tree canopy in the ``ring_r`` pixel ring around segment ``lab``."""
    h, w = seg.shape
    r0, c0 = max(sl[0].start - ring_r, 0), max(sl[1].start - ring_r, 0)
    r1, c1 = min(sl[0].stop + ring_r, h), min(sl[1].stop + ring_r, w)
    inside = seg[r0:r1, c0:c1] == lab
    ring = ndi.binary_dilation(inside, ring_fp) & ~inside
    return float(tree[r0:r1, c0:c1][ring].mean()) if ring.any() else 0.0


def _paved_median(grid: _Grid) -> float:
    """Median brightness of the paved surface on the working grid (0.5 when none)."""
    return float(np.median(grid.bright[grid.imp])) if grid.imp.any() else 0.5


def _classify_segments(
    seg: np.ndarray, st: _SegmentStats, grid: _Grid, t: SpectralThresholds,
    ref_b: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Road, building and parking masks: each segment large enough is the first of road,
    parking lot (busy), building, parking lot (dark, relative to ``ref_b``: the scene's
    median paved brightness, default the image's) whose rules it meets, else plain paved
    surface."""
    imp, wgsd = grid.imp, grid.wgsd
    px_area = wgsd * wgsd
    if ref_b is None:
        ref_b = _paved_median(grid)
    ring_r = max(1, int(round(_px(2.0, wgsd))))
    ring_fp = morphology.disk(ring_r)
    bmin_px = max(4, _min_pixels(t.building_min_m2, wgsd))
    count, aspect, fill = st.count, st.aspect, st.fill
    road = np.zeros_like(imp)
    building = np.zeros_like(imp)
    parking = np.zeros_like(imp)
    for i, sl in enumerate(ndi.find_objects(seg)):
        if sl is None or count[i] < bmin_px:
            continue  # stays plain paved surface
        lab = i + 1
        sub = seg[sl] == lab
        area = count[i] * px_area
        bbox_fill = count[i] / sub.size
        road_shape = _road_shape(sub, area, aspect[i], bbox_fill, wgsd, t)
        building_like = (
            aspect[i] <= t.building_max_aspect and area <= t.building_max_m2
            and fill[i] >= t.building_min_fill and st.busy_frac[i] <= t.building_max_busy
        )
        squat = building_like and aspect[i] <= 2.0
        if road_shape or (st.run_frac[i] >= t.road_run_fraction and not squat):
            road[sl] |= sub
            continue
        open_area = area >= t.parking_min_m2 and fill[i] >= t.parking_min_fill
        if open_area and st.busy_frac[i] >= t.parking_busy_fraction:
            parking[sl] |= sub  # rows of cars and markings
            continue
        if building_like:
            ring_tree = _ring_tree_share(seg, grid.tree, sl, lab, ring_r, ring_fp)
            if ring_tree < t.building_max_tree_ring:
                building[sl] |= sub
                continue
        if open_area and st.mean_b[i] < t.parking_relative_brightness * ref_b:
            parking[sl] |= sub  # large open asphalt
    return road, building, parking


def _full_resolution(
    road: np.ndarray, building: np.ndarray, parking: np.ndarray, f: int, cover: np.ndarray,
    valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object masks at the image's size, inside its paved surface, without overlaps
    (road over building over parking)."""
    if f > 1:
        road = _upsample(road, f, cover.shape)
        building = _upsample(building, f, cover.shape)
        parking = _upsample(parking, f, cover.shape)
    imp_full = cover == IMPERVIOUS
    # Object masks stay inside the (full-resolution) paved surface.
    road &= imp_full & valid
    building &= imp_full & valid & ~road
    parking &= imp_full & valid & ~road & ~building
    return road, building, parking


def _objects_note(wgsd: float, t: SpectralThresholds) -> str:
    """The note that states the shape rules."""
    return (
        f"shape rules at {wgsd:.2f} m on colour segments of the paved surface: road = "
        f"centre line >= {t.road_min_length_m:g} m, width <= {t.road_max_width_m:g} m, "
        f"length/width >= {t.road_min_elongation:g} (or straight paved runs); building = "
        f"compact uniform segment {t.building_min_m2:g}-{t.building_max_m2:g} m2 not "
        f"enclosed by tree canopy; parking = open paved area >= {t.parking_min_m2:g} m2, "
        "darker or busier than roofs"
    )


def _objects(
    cover: np.ndarray, bands: list[np.ndarray], valid: np.ndarray, t: SpectralThresholds,
    gsd: float, notes: list[str], rec: _Recorder | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Roads, buildings and parking lots from the paved surface by segment shape rules,
    and the paved segments they were classified from (labels on the working grid, and
    the image pixels per working pixel)."""
    rec = _Recorder() if rec is None else rec
    grid = _working_grid(cover, bands, t, gsd)
    ref_b = rec.get("paved_median_brightness", lambda: _paved_median(grid))
    # Run evidence: straight paved runs that are long in one direction and narrow across
    # (measured on a grid of at least 1 m: roads are tens of metres long).
    run_road = _run_evidence(grid.imp, grid.wgsd, t)
    seg = _segment_paved(grid.imp, grid.bands, grid.wgsd, t)
    busy = _busy_share(grid.bright, grid.wgsd, t)
    stats = _segment_stats(seg, run_road, grid.bright, busy)
    road, building, parking = _classify_segments(seg, stats, grid, t, ref_b)
    road = _clean(road, _min_pixels(t.road_min_m2, grid.wgsd))
    road, building, parking = _full_resolution(road, building, parking, grid.f, cover, valid)
    notes.append(_objects_note(grid.wgsd, t))
    return road, building, parking, seg, grid.f

