"""Land cover from band indices: water, tree canopy, low vegetation, bare soil and
impervious surface per pixel, with soft evidence per class.

With a NIR band the evidence is NDVI (vegetation) and McFeeters NDWI (water); without one
it is excess green and smooth blue-green pixels (weaker, and said so in the notes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology

from viper_rs.core.geo import GeoImage
from viper_rs.vision.spectral.pixels import (
    _EPS,
    _block_reduce_mean,
    _clean,
    _fill_nodata,
    _local_stats,
    _min_pixels,
    _odd,
    _px,
    _soft,
    _upsample,
)
from viper_rs.vision.spectral.stats import BAND_MEDIANS, _Recorder, _valid_median
from viper_rs.vision.spectral.thresholds import SpectralThresholds

#: Pixel class codes of the land-cover map (``ClassMaps.cover``).
NODATA, WATER, TREE, LOW_VEG, BARE, IMPERVIOUS = 0, 1, 2, 3, 4, 5
COVER_NAMES = {
    NODATA: "nodata", WATER: "water", TREE: "tree", LOW_VEG: "low_vegetation",
    BARE: "bare_soil", IMPERVIOUS: "impervious",
}


# ----------------------------------------------------------------------------- measures
def _roughness(
    x: np.ndarray, gsd: float, t: SpectralThresholds, within: np.ndarray | None = None
) -> np.ndarray:
    """Local coefficient of variation over ``texture_window_m``, measured on a grid of
    about ``texture_gsd_m`` so that it means the same at every resolution. With
    ``within``, only those pixels count (a lawn's edge against a road is not rough)."""
    f = max(1, int(np.floor(t.texture_gsd_m / gsd + 1e-9)))
    w = np.ones(x.shape, np.float32) if within is None else within.astype(np.float32)
    xs, ws = _block_reduce_mean(x * w, f), _block_reduce_mean(w, f)
    xs = np.where(ws > 0, xs / np.maximum(ws, _EPS), 0).astype(np.float32)
    size = _odd(_px(t.texture_window_m, gsd * f, 3))
    n = ndi.uniform_filter(ws, size) + _EPS
    mean = ndi.uniform_filter(xs * ws, size) / n
    var = ndi.uniform_filter(xs * xs * ws, size) / n - mean * mean
    cv = np.sqrt(np.maximum(var, 0)) / (mean + 0.02)
    return _upsample(cv, f, x.shape) if f > 1 else cv


def _ndvi_threshold(
    ndvi: np.ndarray, exg: np.ndarray, mask: np.ndarray, t: SpectralThresholds
) -> tuple[float, float, bool]:
    """(NDVI threshold, excess-green support margin, whether it is the image's own split)."""
    from skimage.filters import threshold_otsu

    vals = ndvi[mask]
    if vals.size >= 64 and np.ptp(vals) > 1e-3:
        split = float(threshold_otsu(vals))
        lower = mask & (ndvi < split)
        upper = mask & (ndvi >= split)
        if (
            lower.any() and upper.any()
            and float(exg[lower].mean()) < t.ndvi_split_max_lower_exg
            and float(exg[upper].mean() - exg[lower].mean()) >= t.ndvi_split_min_exg_gain
        ):
            lo, hi = t.ndvi_split_range
            thr = float(np.clip(split, lo, hi))
            return thr, t.ndvi_support_margin_split, True
    return t.ndvi_vegetation, t.ndvi_support_margin, False


def _water_bodies(
    cand: np.ndarray, ndwi: np.ndarray, bright: np.ndarray, valid: np.ndarray,
    t: SpectralThresholds, gsd: float, ref: float | None = None,
) -> np.ndarray:
    """Keep candidate water components that look like water bodies, not pavement or shadow
    (``ref``: the scene's median brightness; default: the image's)."""
    labels, n = ndi.label(cand)
    idx = np.arange(1, n + 1)
    mean_ndwi = np.asarray(ndi.mean(ndwi, labels, idx))
    mean_b = np.asarray(ndi.mean(bright, labels, idx))
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:] * gsd * gsd
    if ref is None:
        ref = _median_brightness(bright, valid)
    dark = mean_b < t.water_shadow_relative_brightness * ref
    keep = (mean_ndwi >= t.ndwi_water_body) & (~dark | (area >= t.water_dark_min_m2))
    lut = np.concatenate([[False], keep])
    return lut[labels]


def _median_brightness(bright: np.ndarray, valid: np.ndarray) -> float:
    """Median brightness of the valid pixels (0.5 when none is valid)."""
    return float(np.median(bright[valid])) if valid.any() else 0.5


def _band(image: GeoImage, role: str, valid: np.ndarray, rec: _Recorder) -> np.ndarray:
    """A scaled band with nodata filled by the scene's median of that band."""
    x = image.band(role)
    fill = rec.get(BAND_MEDIANS[role], lambda: _valid_median(x, valid))
    return _fill_nodata(x, valid, fill)


# ----------------------------------------------------------------------------- steps
@dataclass
class _Visible:
    """The visible bands (nodata filled) and the indices computed from them."""

    R: np.ndarray
    G: np.ndarray
    B: np.ndarray
    bright: np.ndarray  # mean of R, G, B
    exg_s: np.ndarray  # excess green, lightly smoothed
    redness: np.ndarray  # (R - B) / (R + B)


@dataclass
class _Evidence:
    """First water and vegetation candidates, and how far their evidence can be trusted."""

    water: np.ndarray  # candidate water pixels
    veg: np.ndarray  # candidate vegetation pixels
    leaf_off_guard: np.ndarray | None  # where leaf-off canopy may be; None: no such rule
    weak_evidence: bool  # True when NDVI cannot separate vegetation from pavement
    tex_band: np.ndarray  # band whose texture tells canopy from low vegetation
    water_conf: np.ndarray  # soft water evidence
    veg_ev: np.ndarray  # vegetation evidence, 0 at the decision boundary
    ndwi: np.ndarray | None  # McFeeters NDWI (None without NIR)


def _visible_indices(
    image: GeoImage, valid: np.ndarray, gsd: float, rec: _Recorder | None = None
) -> _Visible:
    """R, G, B with nodata filled, their brightness, smoothed excess green and redness."""
    rec = _Recorder() if rec is None else rec
    R = _band(image, "R", valid, rec)
    G = _band(image, "G", valid, rec)
    B = _band(image, "B", valid, rec)
    bright = (R + G + B) / 3.0
    chroma_sum = R + G + B + _EPS
    exg = (2.0 * G - R - B) / chroma_sum
    exg_s = ndi.gaussian_filter(exg, sigma=_px(0.5, gsd, 0.5))
    redness = (R - B) / (R + B + _EPS)
    return _Visible(R=R, G=G, B=B, bright=bright, exg_s=exg_s, redness=redness)


def _nir_indices(
    image: GeoImage, valid: np.ndarray, v: _Visible, t: SpectralThresholds, gsd: float,
    rec: _Recorder,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(NIR with nodata filled, NDVI, McFeeters NDWI, candidate water pixels)."""
    R, G = v.R, v.G
    N = _band(image, "NIR", valid, rec)
    ndvi = (N - R) / (N + R + _EPS)
    ndwi = (G - N) / (G + N + _EPS)
    _, nir_std = _local_stats(N, _odd(_px(3.0, gsd, 3)))
    water = (ndwi >= t.ndwi_water) & (nir_std <= t.water_max_nir_std)
    return N, ndvi, ndwi, water


def _nir_evidence(
    image: GeoImage, valid: np.ndarray, v: _Visible, t: SpectralThresholds, gsd: float,
    notes: list[str], rec: _Recorder | None = None,
) -> _Evidence:
    """Water and vegetation candidates from NDWI and NDVI (images with a NIR band)."""
    rec = _Recorder() if rec is None else rec
    exg_s, redness = v.exg_s, v.redness
    N, ndvi, ndwi, water = _nir_indices(image, valid, v, t, gsd, rec)
    t_veg, margin, split = rec.get(
        "ndvi_split", lambda: _ndvi_threshold(ndvi, exg_s, valid & ~water, t)
    )
    how = "the image's own NDVI split" if split else "fixed: no clear non-green NDVI mode"
    veg = ((ndvi >= t_veg) & (exg_s >= t.exg_min_vegetation)) | (
        (exg_s >= t.exg_support) & (ndvi >= t_veg - margin)
    )
    leaf_off_guard = (
        None if split else (ndvi >= t_veg - margin) & (redness >= t.leaf_off_min_redness)
    )
    water_conf = _soft(ndwi, t.ndwi_water, 0.05)
    veg_ev = np.maximum(ndvi - t_veg, exg_s - t.exg_support)
    notes.append(
        f"NIR present: vegetation by NDVI >= {t_veg:.2f} ({how}) or excess green >= "
        f"{t.exg_support} with NDVI >= {t_veg - margin:.2f}; water by McFeeters NDWI "
        f">= {t.ndwi_water} (water bodies >= {t.ndwi_water_body} mean) with smooth NIR"
    )
    return _Evidence(
        water=water, veg=veg, leaf_off_guard=leaf_off_guard, weak_evidence=not split,
        tex_band=N, water_conf=water_conf, veg_ev=veg_ev, ndwi=ndwi,
    )


def _rgb_evidence(v: _Visible, t: SpectralThresholds, gsd: float, notes: list[str]) -> _Evidence:
    """Water and vegetation candidates from the visible bands only (no NIR band)."""
    R, G, B, bright, exg_s = v.R, v.G, v.B, v.bright, v.exg_s
    lo, hi = t.water_rgb_brightness
    _, b_std = _local_stats(bright, _odd(_px(3.0, gsd, 3)))
    b_cv = b_std / (ndi.uniform_filter(bright, _odd(_px(3.0, gsd, 3))) + 0.02)
    bright_avg = ndi.uniform_filter(bright, size=_odd(_px(1.0, gsd, 1)))
    water = (
        (bright_avg >= lo) & (bright_avg <= hi)
        & (G >= t.water_rgb_bluegreen * R) & (B >= t.water_rgb_bluegreen * R)
        & (b_cv <= t.water_rgb_max_cv)
    )
    veg = (exg_s >= t.exg_vegetation_rgb) & (bright >= t.dark_brightness)
    notes.append(
        "RGB-only fallback (no NIR band): vegetation by excess green >= "
        f"{t.exg_vegetation_rgb}; water by smooth blue-green pixels of medium brightness "
        f"in areas >= {t.water_rgb_min_m2:g} m2 (unreliable: dark roofs and shadows can "
        "look like water)"
    )
    # No leaf-off rule without NIR: bare crowns, roads and parking lots all look like
    # rough grey surfaces in visible bands.
    return _Evidence(
        water=water, veg=veg, leaf_off_guard=None, weak_evidence=True, tex_band=bright,
        water_conf=water.astype(np.float32) * 0.6 + 0.2, veg_ev=exg_s - t.exg_vegetation_rgb,
        ndwi=None,
    )


def _water_mask(
    image: GeoImage, ev: _Evidence, bright: np.ndarray, valid: np.ndarray,
    t: SpectralThresholds, gsd: float, rec: _Recorder | None = None,
) -> np.ndarray:
    """Water: candidates opened and cleaned by size, then (with NIR) kept as water bodies
    with their shore rim."""
    water = ev.water & valid
    wmin = t.water_min_m2 if image.has("NIR") else t.water_rgb_min_m2
    water = ndi.binary_opening(water, morphology.disk(max(1, int(_px(1.0, gsd)))))
    water = _clean(water, _min_pixels(wmin, gsd), _min_pixels(wmin, gsd))
    if image.has("NIR") and water.any():
        rec = _Recorder() if rec is None else rec
        ref = rec.get("median_brightness", lambda: _median_brightness(bright, valid))
        water = _water_bodies(water, ev.ndwi, bright, valid, t, gsd, ref)
        # The shore rim is rough (land next to water) but still water by NDWI.
        rim = ndi.binary_dilation(water, morphology.disk(max(1, int(round(_px(1.5, gsd))))))
        water |= rim & valid & (ev.ndwi >= t.ndwi_water)
    return water


def _vegetation_mask(
    ev: _Evidence, water: np.ndarray, valid: np.ndarray, t: SpectralThresholds, gsd: float
) -> np.ndarray:
    """Vegetation outside water, with unvegetated holes it encloses filled as noise."""
    veg = ev.veg & (valid & ~water)
    # Small unvegetated specks enclosed by vegetation are noise; where NDVI cannot
    # separate vegetation from pavement (fixed threshold, RGB) larger enclosed blobs
    # (bright crowns, pale grass) are too.
    hole_m2 = t.veg_hole_m2 if ev.weak_evidence else t.veg_speck_m2
    return _clean(veg, 1, _min_pixels(hole_m2, gsd)) & valid & ~water


def _leaf_off_canopy(
    image: GeoImage, guard: np.ndarray, veg: np.ndarray, water: np.ndarray,
    valid: np.ndarray, rough_frac: np.ndarray, t: SpectralThresholds, gsd: float,
    notes: list[str],
) -> np.ndarray:
    """Rough, brownish unvegetated pixels with NDVI near the threshold (bare crowns)."""
    # Leaf-off or senescent canopy has little NDVI or greenness left but keeps the
    # crown texture; only used when the image shows no separate non-green NDVI mode
    # (NDVI then cannot tell it from pavement, which is smooth at this scale).
    leaf_off = (
        guard & ~veg & ~water & valid
        & (rough_frac >= t.leaf_off_rough_fraction)
    )
    leaf_off = _clean(leaf_off, _min_pixels(t.tree_min_m2, gsd))
    if leaf_off.any():
        notes.append(
            f"{image.mask_area(leaf_off):.0f} {image.area_unit} of rough, brownish "
            "surface with weak NDVI taken as leaf-off tree canopy"
        )
    return leaf_off


def _tree_and_low_vegetation(
    image: GeoImage, ev: _Evidence, veg: np.ndarray, water: np.ndarray, valid: np.ndarray,
    t: SpectralThresholds, gsd: float, notes: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(vegetation with leaf-off canopy added, tree canopy, low vegetation, rough share
    among vegetation): canopy is rough (crowns and their shadows), grass smooth."""
    tex_band = ev.tex_band
    rough = _roughness(tex_band, gsd, t) >= t.tree_texture_cv
    smooth_win = _odd(_px(t.tree_smooth_m, gsd, 3))
    rough_frac = ndi.uniform_filter(rough.astype(np.float32), smooth_win)
    if ev.leaf_off_guard is not None:
        leaf_off = _leaf_off_canopy(
            image, ev.leaf_off_guard, veg, water, valid, rough_frac, t, gsd, notes
        )
        veg = veg | leaf_off
    else:
        leaf_off = np.zeros_like(veg)
    veg_frac = ndi.uniform_filter(veg.astype(np.float32), smooth_win) + _EPS
    # Canopy texture is measured among vegetation only (a lawn's edge against a road
    # is not rough); it needs leaf-off canopy in ``veg`` first.
    rough_in_veg = _roughness(tex_band, gsd, t, within=veg) >= t.tree_texture_cv
    rough_veg = ndi.uniform_filter((rough_in_veg & veg).astype(np.float32), smooth_win)
    rough_veg /= veg_frac
    tree = veg & ((rough_veg >= 0.5) | leaf_off)
    tmin = _min_pixels(t.tree_min_m2, gsd)
    tree = _clean(tree, tmin, tmin) & veg
    low = _clean(veg & ~tree, tmin)
    tree |= veg & ~low  # tiny grass specks inside canopy stay canopy
    return veg, tree, low, rough_veg


def _bare_soil(
    rest: np.ndarray, v: _Visible, t: SpectralThresholds, gsd: float
) -> np.ndarray:
    """Bare soil: unvegetated, not water, brown/yellow and lit."""
    bare = rest & (v.redness >= t.bare_redness) & (v.bright >= t.bare_min_brightness)
    return _clean(bare, _min_pixels(t.bare_min_m2, gsd))


def _cover_codes(
    shape: tuple[int, int], impervious: np.ndarray, bare: np.ndarray, low: np.ndarray,
    tree: np.ndarray, water: np.ndarray, valid: np.ndarray,
) -> np.ndarray:
    """The land-cover code map, later classes painted over earlier ones."""
    cover = np.zeros(shape, dtype=np.uint8)
    cover[impervious] = IMPERVIOUS
    cover[bare] = BARE
    cover[low] = LOW_VEG
    cover[tree] = TREE
    cover[water] = WATER
    cover[~valid] = NODATA
    return cover


def _fill_shadow(
    image: GeoImage, cover: np.ndarray, rest: np.ndarray, bright: np.ndarray,
    valid: np.ndarray, t: SpectralThresholds, gsd: float, notes: list[str],
    rec: _Recorder | None = None,
) -> None:
    """Give deep shadow in ``cover`` the class of the nearest lit pixel (in place)."""
    # Deep shadow hides what it falls on: unvegetated dark pixels take the class of the
    # nearest lit pixel (a tree's shadow on grass is grass, a building's on a road road).
    rec = _Recorder() if rec is None else rec
    ref_b = rec.get("median_brightness", lambda: _median_brightness(bright, valid))
    shadow = rest & (bright < t.shadow_relative_brightness * ref_b)
    shadow = _clean(shadow, _min_pixels(1.0, gsd))
    lit = valid & ~shadow
    if shadow.any() and lit.any():
        idx = ndi.distance_transform_edt(~lit, return_distances=False, return_indices=True)
        cover[shadow] = cover[idx[0][shadow], idx[1][shadow]]
        notes.append(
            f"{image.mask_area(shadow):.0f} {image.area_unit} of deep shadow given the class "
            "of the nearest lit pixel"
        )


def _scaled_bands(
    v: _Visible, valid: np.ndarray, rec: _Recorder | None = None
) -> list[np.ndarray]:
    """R, G, B divided by the scene's 99th brightness percentile (about 0..1)."""
    rec = _Recorder() if rec is None else rec
    scale = rec.get(
        "bright_p99",
        lambda: float(np.percentile(v.bright[valid], 99)) if valid.any() else 1.0,
    )
    scale = max(scale, _EPS)
    return [v.R / scale, v.G / scale, v.B / scale]


def _land_cover(
    image: GeoImage, valid: np.ndarray, t: SpectralThresholds, gsd: float, notes: list[str],
    rec: _Recorder | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[np.ndarray]]:
    """Land-cover codes, soft evidence per class and the R,G,B bands scaled to ~0..1
    (scene statistics from ``rec``: given ones, else measured on the image)."""
    rec = _Recorder() if rec is None else rec
    v = _visible_indices(image, valid, gsd, rec)
    conf: dict[str, np.ndarray] = {}
    if image.has("NIR"):
        ev = _nir_evidence(image, valid, v, t, gsd, notes, rec)
    else:
        ev = _rgb_evidence(v, t, gsd, notes)
    conf["water"] = ev.water_conf
    water = _water_mask(image, ev, v.bright, valid, t, gsd, rec)
    veg = _vegetation_mask(ev, water, valid, t, gsd)
    veg, tree, low, rough_veg = _tree_and_low_vegetation(
        image, ev, veg, water, valid, t, gsd, notes
    )
    conf["tree"] = _soft(rough_veg, 0.5, 0.15)
    rest = valid & ~water & ~veg
    bare = _bare_soil(rest, v, t, gsd)
    conf["bare_soil"] = _soft(v.redness, t.bare_redness, 0.04)
    cover = _cover_codes(image.shape, rest & ~bare, bare, low, tree, water, valid)
    _fill_shadow(image, cover, rest, v.bright, valid, t, gsd, notes, rec)
    conf["vegetation"] = _soft(ev.veg_ev, 0.0, 0.05)
    conf["impervious"] = 1.0 - np.maximum(conf["vegetation"], conf["water"])
    return cover, conf, _scaled_bands(v, valid, rec)
