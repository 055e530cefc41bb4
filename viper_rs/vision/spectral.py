"""Weight-free spectral detector: land cover and simple objects from R,G,B(,NIR) pixels.

Per image it computes one set of class maps (water, tree, low vegetation, bare soil,
impervious; then roads, buildings and parking lots by shape rules on the impervious
surface; built-up land as impervious density), caches them by the image's content hash,
and answers every query for that image from the cache.

With a NIR band the spectral evidence is NDVI (vegetation) and McFeeters NDWI (water);
without one it falls back to visible-band indices (excess green, blue-green darkness),
which is clearly weaker and said so in the notes. Every window size and minimum area is
defined in metres and converted with the image's ground sampling distance.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import morphology
from skimage.filters import sobel
from skimage.morphology import skeletonize
from skimage.segmentation import watershed

from viper_rs.config import Settings
from viper_rs.errors import ImageError
from viper_rs.geo import GeoImage
from viper_rs.regions import Region
from viper_rs.vision.base import ScoreMap
from viper_rs.vision.components import regions_from_score_map
from viper_rs.vision.concepts import OBJECT_CLASSES, resolve_concept

log = logging.getLogger(__name__)

_EPS = 1e-6
#: The finest ground pixel (m) the rules work at: their windows are sized in metres, so
#: finer imagery (drone, 1-5 cm) would make them hundreds of pixels wide. Such images are
#: block-averaged to this size and the class maps upsampled back.
FINEST_GSD_M = 0.1


@dataclass(frozen=True)
class SpectralThresholds:
    """Every threshold of the spectral rules, in index units, metres or square metres."""

    # --- vegetation -----------------------------------------------------------------
    #: NDVI above which a pixel is vegetation in ordinarily calibrated NAIP/aerial imagery
    #: (leaves reflect NIR strongly: canopy and grass are > 0.2, pavement and roofs < 0.1).
    ndvi_vegetation: float = 0.15
    #: NIR gain differs between acquisitions, so the image's own NDVI split (Otsu) is used
    #: when the pixels below it are demonstrably not green (mean excess green below this):
    #: then the split separates vegetation from pavement, not sunlit from shaded foliage.
    ndvi_split_max_lower_exg: float = 0.045
    #: ...and when the pixels above it are greener than those below by at least this
    #: (otherwise the split divides non-green surfaces, e.g. a harbour with no plants).
    ndvi_split_min_exg_gain: float = 0.02
    #: Range the image's own NDVI split is clipped to.
    ndvi_split_range: tuple[float, float] = (-0.2, 0.6)
    #: Excess-green (2g-r-b on chromaticities) that supports vegetation when NDVI is weak
    #: (leaf-off or poorly balanced NIR): foliage is green or yellow, pavement is grey.
    exg_support: float = 0.045
    #: How far below the NDVI threshold NDVI may be when excess green supports vegetation
    #: (fixed threshold: pavement in calibrated imagery sits below -0.15) ...
    ndvi_support_margin: float = 0.30
    #: ... and when the threshold is the image's own split (NDVI is then informative).
    ndvi_support_margin_split: float = 0.10
    #: Vegetation absorbs red and blue more than green: even with high NDVI a pixel with
    #: less excess green than this is not vegetation (grey or blue-tinted roofs, haze).
    exg_min_vegetation: float = 0.0
    #: Unvegetated holes (m2) inside vegetation filled as noise when NDVI is informative...
    veg_speck_m2: float = 2.0
    #: ...and when it is not (fixed threshold or RGB only): bright crowns, pale grass.
    veg_hole_m2: float = 50.0
    #: Excess green above which a pixel is vegetation in RGB-only imagery.
    exg_vegetation_rgb: float = 0.06
    #: Excess green of dark pixels is noise: below this brightness RGB-only greenness is
    #: not trusted (deep shadow).
    dark_brightness: float = 0.08
    # --- tree canopy vs low vegetation ------------------------------------------------
    #: Side of the square window (m) for local texture: a few tree crowns...
    texture_window_m: float = 5.0
    #: ...measured on pixels of about this size (finer images are block-averaged first:
    #: at 15 cm, grass blades and mowing stripes would look like canopy).
    texture_gsd_m: float = 1.0
    #: Coefficient of variation (local std / local mean) above which vegetation is rough
    #: canopy; lawns and fields are smooth (CV ~ 0.02-0.04), crowns cast shadow (~0.1).
    tree_texture_cv: float = 0.05
    #: Smoothing window (m) for the tree/low-vegetation decision: canopy patches are whole.
    tree_smooth_m: float = 9.0
    #: Minimum area (m2) of a tree-canopy patch (a small crown) and of a grass patch.
    tree_min_m2: float = 12.0
    #: Leaf-off canopy (NIR imagery whose NDVI shows no non-green mode): unvegetated
    #: pixels with NDVI near the threshold where at least this fraction of the
    #: surroundings is rough (bare crowns keep the canopy's texture; pavement is smooth).
    leaf_off_rough_fraction: float = 0.5
    #: ...and whose redness (R-B)/(R+B) is at least this (bark and dead leaves are brown
    #: to grey; glass, metal roofs and haze are bluish).
    leaf_off_min_redness: float = -0.05
    # --- water ------------------------------------------------------------------------
    #: McFeeters NDWI above which a pixel may be water (water absorbs NIR; G >> NIR).
    ndwi_water: float = 0.30
    #: Mean NDWI a water body must reach: open water is ~0.5-0.9, while pavement with a
    #: weak NIR response stays below ~0.42 (NIR/G > 0.4).
    ndwi_water_body: float = 0.45
    #: Components darker than this fraction of the image's median brightness are shadow
    #: unless they are large (``water_dark_min_m2``): shadows have high NDWI too.
    water_shadow_relative_brightness: float = 0.5
    #: Minimum area (m2) of a very dark water body (deep shadows are rarely this large).
    water_dark_min_m2: float = 300.0
    #: Largest local std of NIR (0..1) of open water: water is smooth, shadows in canopy
    #: are not.
    water_max_nir_std: float = 0.06
    #: Minimum area (m2) of a water body (smaller blobs are shadows or dark roofs).
    water_min_m2: float = 20.0
    #: RGB-only water: brightness range of open water (shadows are darker, roofs brighter).
    water_rgb_brightness: tuple[float, float] = (0.22, 0.60)
    #: RGB-only water: green and blue both exceed red by this factor (blue-green water).
    water_rgb_bluegreen: float = 1.04
    #: RGB-only water: largest local coefficient of variation of brightness (smooth).
    water_rgb_max_cv: float = 0.10
    #: RGB-only water: minimum area (m2); only sizeable smooth blue-green areas count.
    water_rgb_min_m2: float = 150.0
    #: Unvegetated pixels darker than this fraction of the image's median brightness are
    #: deep shadow (the surface under them is unknown).
    shadow_relative_brightness: float = 0.45
    # --- bare soil ----------------------------------------------------------------------
    #: Redness (R-B)/(R+B) above which unvegetated ground is soil or sand (brown/yellow);
    #: asphalt and concrete are grey (|redness| < 0.08).
    bare_redness: float = 0.16
    #: Minimum brightness of bare soil (darker red-brown is shadowed roof or wet ground).
    bare_min_brightness: float = 0.18
    #: Minimum area (m2) of a bare-soil patch; smaller brown blobs are roofs or cars.
    bare_min_m2: float = 30.0
    # --- impervious objects -------------------------------------------------------------
    #: Resolution (m) at which shape rules run (finer images are block-averaged to it).
    object_gsd_m: float = 0.5
    #: Holes smaller than this (m2) in paved surface are cars, crowns, markings: filled.
    impervious_hole_m2: float = 20.0
    #: Segmentation of the paved surface: seeds are pixels whose colour gradient (bands
    #: scaled to the image's 99th percentile) is below this (flat roof or road surface)...
    segment_seed_gradient: float = 0.02
    #: ...and neighbouring segments merge when at least ``segment_merge_weak_share`` of
    #: their shared boundary has a gradient below ``segment_merge_gradient`` and their
    #: mean colours differ by less than ``segment_merge_color`` (per band).
    segment_merge_gradient: float = 0.08
    segment_merge_weak_share: float = 0.4
    segment_merge_color: float = 0.08
    #: A road segment's centre line is at least this long (m)...
    road_min_length_m: float = 40.0
    #: ...its mean width (area / centre-line length) at most this (m; avenues ~30 m)...
    road_max_width_m: float = 28.0
    #: ...and at least this (m): thinner strips are mixed pixels along field and water
    #: edges, not a carriageway (a footpath narrower than this is not resolved).
    road_min_width_m: float = 2.5
    #: ...and it is at least this many times longer than wide.
    road_min_elongation: float = 4.0
    #: Pixels on a straight paved run this long (m) in some direction and at most
    #: ``road_max_width_m`` across are road evidence even when shadows cut the segment.
    road_run_length_m: float = 40.0
    #: Fraction of a segment's pixels with run evidence that makes it road.
    road_run_fraction: float = 0.6
    #: Directions sampled for paved runs (22.5 degrees apart).
    road_angles: int = 8
    #: Minimum area (m2) of a road component (shorter strips are driveways or paths).
    road_min_m2: float = 40.0
    #: Building footprint area range (m2): a garage to a large warehouse.
    building_min_m2: float = 20.0
    building_max_m2: float = 40_000.0
    #: Minimum compactness of a building (area / area of the ellipse with the same second
    #: moments: 0.95 for a rectangle, ~0.75 for an L-shaped house, lower for networks).
    building_min_fill: float = 0.7
    #: Largest length/width ratio of a building footprint (longer strips are paths).
    building_max_aspect: float = 4.0
    #: Largest fraction of busy pixels (see ``parking_texture_cv``) on a roof: roofs are
    #: uniform planes, clumps of bare crowns and car-filled lots are not.
    building_max_busy: float = 0.5
    #: Roof candidates whose 2 m surroundings are nearly all tree canopy are bright
    #: crowns or gaps in a forest, not buildings (suburban houses among trees measured
    #: 0.1-0.55 canopy around them).
    building_max_tree_ring: float = 0.7
    #: Open paved areas at least this large (m2) that are darker than roofs or busy with
    #: cars are parking lots...
    parking_min_m2: float = 150.0
    #: ...and are not ragged networks (compactness as for buildings).
    parking_min_fill: float = 0.5
    #: Local coefficient of variation (2 m window) above which paved surface is busy
    #: (cars, markings) rather than a uniform roof...
    parking_texture_cv: float = 0.12
    #: ...measured as the share of busy pixels within this window (m)...
    parking_context_m: float = 6.0
    #: ...and the mean share that marks a parking lot.
    parking_busy_fraction: float = 0.35
    #: Brightness, relative to the image's median paved brightness, below which a large
    #: open paved area is asphalt (parking) rather than a roof.
    parking_relative_brightness: float = 0.9
    # --- built-up land ------------------------------------------------------------------
    #: Scale (m) over which impervious density is measured (a city block; box filter of
    #: twice this size applied twice).
    built_up_sigma_m: float = 15.0
    #: Impervious density above which land is built up (suburbs ~0.35-0.5, towns more).
    built_up_density: float = 0.35
    #: Minimum area (m2) of a built-up patch.
    built_up_min_m2: float = 400.0


DEFAULT_THRESHOLDS = SpectralThresholds()

#: Pixel class codes of the land-cover map (``ClassMaps.cover``).
NODATA, WATER, TREE, LOW_VEG, BARE, IMPERVIOUS = 0, 1, 2, 3, 4, 5
COVER_NAMES = {
    NODATA: "nodata", WATER: "water", TREE: "tree", LOW_VEG: "low_vegetation",
    BARE: "bare_soil", IMPERVIOUS: "impervious",
}


@dataclass
class ClassMaps:
    """Every per-image result the detector answers queries from."""

    cover: np.ndarray  # uint8 land-cover codes (see COVER_NAMES)
    road: np.ndarray  # bool
    building: np.ndarray  # bool
    parking: np.ndarray  # bool
    built_up_density: np.ndarray  # float32 0..1
    built_up: np.ndarray  # bool
    confidence: dict[str, np.ndarray]  # class -> float32 0..1 soft evidence
    notes: dict[str, list[str]] = field(default_factory=dict)  # topic -> notes
    #: Regions already built per (class, min area, connectivity), filled by ``find``.
    regions: dict[tuple, list[Region]] = field(default_factory=dict)

    def notes_for(self, cls: str) -> list[str]:
        """Notes that explain how ``cls`` was measured (general, land cover, shapes)."""
        topics = ["general", "cover"]
        if cls in OBJECT_CLASSES:
            topics.append("objects")
        if cls == "built_up":
            topics.append("built_up")
        return [n for topic in topics for n in self.notes.get(topic, [])]

    def mask(self, cls: str) -> np.ndarray:
        """Boolean mask of a canonical class."""
        if cls in _COVER_CODES:
            return np.isin(self.cover, _COVER_CODES[cls])
        if cls in _OBJECT_LAYERS:
            return getattr(self, _OBJECT_LAYERS[cls])
        raise KeyError(cls)


#: Land-cover classes as sets of cover codes; object classes as ClassMaps layers.
_COVER_CODES: dict[str, tuple[int, ...]] = {
    "water": (WATER,), "tree": (TREE,), "low_vegetation": (LOW_VEG,),
    "vegetation": (TREE, LOW_VEG), "bare_soil": (BARE,), "impervious": (IMPERVIOUS,),
}
_OBJECT_LAYERS: dict[str, str] = {
    "road": "road", "building": "building", "parking": "parking", "built_up": "built_up",
}


# ----------------------------------------------------------------------------- helpers
def _px(metres: float, gsd: float, minimum: float = 1.0) -> float:
    """A length in metres as (fractional) pixels, at least ``minimum``."""
    return max(minimum, metres / gsd)


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def _min_pixels(area_m2: float, gsd: float) -> int:
    return max(1, int(round(area_m2 / (gsd * gsd))))


def _local_stats(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and standard deviation over a ``size`` x ``size`` window."""
    m = ndi.uniform_filter(x, size, mode="reflect")
    m2 = ndi.uniform_filter(x * x, size, mode="reflect")
    return m, np.sqrt(np.maximum(m2 - m * m, 0.0))


def _smooth(x: np.ndarray, size: int) -> np.ndarray:
    """Near-Gaussian smoothing in O(pixels): two passes of a ``size`` box filter."""
    return ndi.uniform_filter(ndi.uniform_filter(x, size, mode="nearest"), size, mode="nearest")


def _drop_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its 4-connected components smaller than ``min_px`` pixels."""
    labels, n = ndi.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _clean(mask: np.ndarray, min_px: int, hole_px: int = 0) -> np.ndarray:
    """Drop components smaller than ``min_px`` and fill holes smaller than ``hole_px``."""
    if min_px > 1:
        mask = _drop_small(mask, min_px)
    if hole_px > 1:
        mask = ~_drop_small(~mask, hole_px)
    return mask


def _soft(x: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """Logistic evidence in 0..1, 0.5 at ``threshold``."""
    return (1.0 / (1.0 + np.exp(-(x - threshold) / scale))).astype(np.float32)


def _fill_nodata(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace nodata by the valid median so windows at the frame edge are not skewed."""
    if valid.all():
        return x
    out = x.copy()
    out[~valid] = np.median(x[valid]) if valid.any() else 0.0
    return out


# ----------------------------------------------------------------------------- land cover
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
    t: SpectralThresholds, gsd: float,
) -> np.ndarray:
    """Keep candidate water components that look like water bodies, not pavement or shadow."""
    labels, n = ndi.label(cand)
    idx = np.arange(1, n + 1)
    mean_ndwi = np.asarray(ndi.mean(ndwi, labels, idx))
    mean_b = np.asarray(ndi.mean(bright, labels, idx))
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:] * gsd * gsd
    ref = float(np.median(bright[valid])) if valid.any() else 0.5
    dark = mean_b < t.water_shadow_relative_brightness * ref
    keep = (mean_ndwi >= t.ndwi_water_body) & (~dark | (area >= t.water_dark_min_m2))
    lut = np.concatenate([[False], keep])
    return lut[labels]


def _land_cover(
    image: GeoImage, valid: np.ndarray, t: SpectralThresholds, gsd: float, notes: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], list[np.ndarray]]:
    """Land-cover codes, soft evidence per class and the R,G,B bands scaled to ~0..1."""
    R = _fill_nodata(image.band("R"), valid)
    G = _fill_nodata(image.band("G"), valid)
    B = _fill_nodata(image.band("B"), valid)
    bright = (R + G + B) / 3.0
    chroma_sum = R + G + B + _EPS
    exg = (2.0 * G - R - B) / chroma_sum
    exg_s = ndi.gaussian_filter(exg, sigma=_px(0.5, gsd, 0.5))
    redness = (R - B) / (R + B + _EPS)
    conf: dict[str, np.ndarray] = {}

    if image.has("NIR"):
        N = _fill_nodata(image.band("NIR"), valid)
        ndvi = (N - R) / (N + R + _EPS)
        ndwi = (G - N) / (G + N + _EPS)
        _, nir_std = _local_stats(N, _odd(_px(3.0, gsd, 3)))
        water = (ndwi >= t.ndwi_water) & (nir_std <= t.water_max_nir_std)
        t_veg, margin, split = _ndvi_threshold(ndvi, exg_s, valid & ~water, t)
        how = "the image's own NDVI split" if split else "fixed: no clear non-green NDVI mode"
        veg = ((ndvi >= t_veg) & (exg_s >= t.exg_min_vegetation)) | (
            (exg_s >= t.exg_support) & (ndvi >= t_veg - margin)
        )
        leaf_off_guard = (
            None if split else (ndvi >= t_veg - margin) & (redness >= t.leaf_off_min_redness)
        )
        weak_evidence = not split
        tex_band = N
        conf["water"] = _soft(ndwi, t.ndwi_water, 0.05)
        veg_ev = np.maximum(ndvi - t_veg, exg_s - t.exg_support)
        notes.append(
            f"NIR present: vegetation by NDVI >= {t_veg:.2f} ({how}) or excess green >= "
            f"{t.exg_support} with NDVI >= {t_veg - margin:.2f}; water by McFeeters NDWI "
            f">= {t.ndwi_water} (water bodies >= {t.ndwi_water_body} mean) with smooth NIR"
        )
    else:
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
        # No leaf-off rule without NIR: bare crowns, roads and parking lots all look like
        # rough grey surfaces in visible bands.
        leaf_off_guard = None
        weak_evidence = True
        tex_band = bright
        conf["water"] = water.astype(np.float32) * 0.6 + 0.2
        veg_ev = exg_s - t.exg_vegetation_rgb
        notes.append(
            "RGB-only fallback (no NIR band): vegetation by excess green >= "
            f"{t.exg_vegetation_rgb}; water by smooth blue-green pixels of medium brightness "
            f"in areas >= {t.water_rgb_min_m2:g} m2 (unreliable: dark roofs and shadows can "
            "look like water)"
        )

    water &= valid
    wmin = t.water_min_m2 if image.has("NIR") else t.water_rgb_min_m2
    water = ndi.binary_opening(water, morphology.disk(max(1, int(_px(1.0, gsd)))))
    water = _clean(water, _min_pixels(wmin, gsd), _min_pixels(wmin, gsd))
    if image.has("NIR") and water.any():
        water = _water_bodies(water, ndwi, bright, valid, t, gsd)
        # The shore rim is rough (land next to water) but still water by NDWI.
        rim = ndi.binary_dilation(water, morphology.disk(max(1, int(round(_px(1.5, gsd))))))
        water |= rim & valid & (ndwi >= t.ndwi_water)
    veg &= valid & ~water
    # Small unvegetated specks enclosed by vegetation are noise; where NDVI cannot
    # separate vegetation from pavement (fixed threshold, RGB) larger enclosed blobs
    # (bright crowns, pale grass) are too.
    hole_m2 = t.veg_hole_m2 if weak_evidence else t.veg_speck_m2
    veg = _clean(veg, 1, _min_pixels(hole_m2, gsd)) & valid & ~water

    # Tree canopy vs low vegetation: canopy is rough (crowns and their shadows).
    rough = _roughness(tex_band, gsd, t) >= t.tree_texture_cv
    smooth_win = _odd(_px(t.tree_smooth_m, gsd, 3))
    rough_frac = ndi.uniform_filter(rough.astype(np.float32), smooth_win)
    if leaf_off_guard is not None:
        # Leaf-off or senescent canopy has little NDVI or greenness left but keeps the
        # crown texture; only used when the image shows no separate non-green NDVI mode
        # (NDVI then cannot tell it from pavement, which is smooth at this scale).
        leaf_off = (
            leaf_off_guard & ~veg & ~water & valid
            & (rough_frac >= t.leaf_off_rough_fraction)
        )
        leaf_off = _clean(leaf_off, _min_pixels(t.tree_min_m2, gsd))
        if leaf_off.any():
            notes.append(
                f"{image.mask_area(leaf_off):.0f} {image.area_unit} of rough, brownish "
                "surface with weak NDVI taken as leaf-off tree canopy"
            )
        veg |= leaf_off
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
    conf["tree"] = _soft(rough_veg, 0.5, 0.15)

    # Bare soil: unvegetated, not water, brown/yellow and lit.
    rest = valid & ~water & ~veg
    bare = rest & (redness >= t.bare_redness) & (bright >= t.bare_min_brightness)
    bare = _clean(bare, _min_pixels(t.bare_min_m2, gsd))
    conf["bare_soil"] = _soft(redness, t.bare_redness, 0.04)

    impervious = rest & ~bare
    cover = np.zeros(image.shape, dtype=np.uint8)
    cover[impervious] = IMPERVIOUS
    cover[bare] = BARE
    cover[low] = LOW_VEG
    cover[tree] = TREE
    cover[water] = WATER
    cover[~valid] = NODATA

    # Deep shadow hides what it falls on: unvegetated dark pixels take the class of the
    # nearest lit pixel (a tree's shadow on grass is grass, a building's on a road road).
    ref_b = float(np.median(bright[valid])) if valid.any() else 0.5
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
    conf["vegetation"] = _soft(veg_ev, 0.0, 0.05)
    conf["impervious"] = 1.0 - np.maximum(conf["vegetation"], conf["water"])
    scale = float(np.percentile(bright[valid], 99)) if valid.any() else 1.0
    scale = max(scale, _EPS)
    return cover, conf, [R / scale, G / scale, B / scale]


# ----------------------------------------------------------------------------- shapes
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


def _block_reduce_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f`` x ``f`` blocks (partial edge blocks padded by edge replication)."""
    if f == 1:
        return x.astype(np.float32)
    h, w = x.shape
    pad = np.pad(x.astype(np.float32), ((0, (-h) % f), (0, (-w) % f)), mode="edge")
    return pad.reshape(pad.shape[0] // f, f, pad.shape[1] // f, f).mean(axis=(1, 3))


def _upsample(x: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by ``f`` cropped to ``shape``."""
    if f == 1:
        return x
    return np.repeat(np.repeat(x, f, axis=0), f, axis=1)[: shape[0], : shape[1]]


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


def _merge_similar(
    seg: np.ndarray, grad: np.ndarray, bands: list[np.ndarray], max_grad: float,
    min_weak_share: float, max_color: float,
) -> np.ndarray:
    """Merge neighbouring segments of similar colour whose shared boundary is largely weak
    (a car or a marking between two stretches of asphalt does not separate them)."""
    n = int(seg.max())
    if n < 2:
        return seg
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel()])
    g = np.concatenate([
        np.maximum(grad[:, :-1], grad[:, 1:]).ravel(),
        np.maximum(grad[:-1, :], grad[1:, :]).ravel(),
    ])
    keep = (a != b) & (a > 0) & (b > 0)
    if not keep.any():
        return seg
    a, b, g = a[keep], b[keep], g[keep]
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
    _, merged = np.unique(np.where(seg > 0, comp[seg] + 1, 0), return_inverse=True)
    return merged.reshape(seg.shape).astype(np.int32)


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


def _objects(
    cover: np.ndarray, bands: list[np.ndarray], valid: np.ndarray, t: SpectralThresholds,
    gsd: float, notes: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roads, buildings and parking lots from the paved surface by segment shape rules."""
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
    px_area = wgsd * wgsd

    # Run evidence: straight paved runs that are long in one direction and narrow across
    # (measured on a grid of at least 1 m: roads are tens of metres long).
    run_road = _run_evidence(imp, wgsd, t)

    seg = _segment_paved(imp, bands, wgsd, t)
    n = int(seg.max())
    lmean, lstd = _local_stats(bright, _odd(_px(2.0, wgsd, 3)))
    busy = (lstd / (lmean + 0.02) >= t.parking_texture_cv).astype(np.float32)
    # Share of busy pixels around each pixel: the asphalt between rows of cars is calm
    # itself but sits in a busy neighbourhood.
    busy = ndi.uniform_filter(busy, _odd(_px(t.parking_context_m, wgsd, 3)))
    ref_b = float(np.median(bright[imp])) if imp.any() else 0.5
    ring_r = max(1, int(round(_px(2.0, wgsd))))
    ring_fp = morphology.disk(ring_r)
    bmin_px = max(4, _min_pixels(t.building_min_m2, wgsd))

    # Per-segment statistics in one pass (areas, second moments, evidence fractions).
    flat = seg.ravel()
    rr, cc = np.indices(seg.shape, dtype=np.float64)

    def per_segment(values: np.ndarray | None = None) -> np.ndarray:
        w = None if values is None else values.ravel().astype(np.float64)
        return np.bincount(flat, weights=w, minlength=n + 1)[1:]

    count = np.maximum(per_segment(), 1)
    mr, mc = per_segment(rr) / count, per_segment(cc) / count
    vrr = per_segment(rr * rr) / count - mr * mr
    vcc = per_segment(cc * cc) / count - mc * mc
    vrc = per_segment(rr * cc) / count - mr * mc
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

    road = np.zeros_like(imp)
    building = np.zeros_like(imp)
    parking = np.zeros_like(imp)
    h, w = imp.shape
    for i, sl in enumerate(ndi.find_objects(seg)):
        if sl is None or count[i] < bmin_px:
            continue  # stays plain paved surface
        lab = i + 1
        sub = seg[sl] == lab
        area = count[i] * px_area
        bbox_fill = count[i] / sub.size
        road_shape = False
        if area >= t.road_min_m2 and (aspect[i] >= 2.0 or bbox_fill < 0.5):
            length = max(float(skeletonize(sub).sum()) * wgsd, wgsd)
            width = area / length
            road_shape = (
                length >= t.road_min_length_m
                and t.road_min_width_m <= width <= t.road_max_width_m
                and length >= t.road_min_elongation * width
            )
        building_like = (
            aspect[i] <= t.building_max_aspect and area <= t.building_max_m2
            and fill[i] >= t.building_min_fill and busy_frac[i] <= t.building_max_busy
        )
        squat = building_like and aspect[i] <= 2.0
        if road_shape or (run_frac[i] >= t.road_run_fraction and not squat):
            road[sl] |= sub
            continue
        open_area = area >= t.parking_min_m2 and fill[i] >= t.parking_min_fill
        if open_area and busy_frac[i] >= t.parking_busy_fraction:
            parking[sl] |= sub  # rows of cars and markings
            continue
        if building_like:
            r0, c0 = max(sl[0].start - ring_r, 0), max(sl[1].start - ring_r, 0)
            r1, c1 = min(sl[0].stop + ring_r, h), min(sl[1].stop + ring_r, w)
            inside = seg[r0:r1, c0:c1] == lab
            ring = ndi.binary_dilation(inside, ring_fp) & ~inside
            ring_tree = float(tree[r0:r1, c0:c1][ring].mean()) if ring.any() else 0.0
            if ring_tree < t.building_max_tree_ring:
                building[sl] |= sub
                continue
        if open_area and mean_b[i] < t.parking_relative_brightness * ref_b:
            parking[sl] |= sub  # large open asphalt
    road = _clean(road, _min_pixels(t.road_min_m2, wgsd))

    if f > 1:
        road = _upsample(road, f, cover.shape)
        building = _upsample(building, f, cover.shape)
        parking = _upsample(parking, f, cover.shape)
    # Object masks stay inside the (full-resolution) paved surface.
    road &= imp_full & valid
    building &= imp_full & valid & ~road
    parking &= imp_full & valid & ~road & ~building
    notes.append(
        f"shape rules at {wgsd:.2f} m on colour segments of the paved surface: road = "
        f"centre line >= {t.road_min_length_m:g} m, width <= {t.road_max_width_m:g} m, "
        f"length/width >= {t.road_min_elongation:g} (or straight paved runs); building = "
        f"compact uniform segment {t.building_min_m2:g}-{t.building_max_m2:g} m2 not "
        f"enclosed by tree canopy; parking = open paved area >= {t.parking_min_m2:g} m2, "
        "darker or busier than roofs"
    )
    return road, building, parking


def compute_class_maps(
    image: GeoImage, thresholds: SpectralThresholds = DEFAULT_THRESHOLDS
) -> ClassMaps:
    """All class maps of one image (land cover, objects, built-up density).

    Images with pixels finer than :data:`FINEST_GSD_M` are measured on blocks of pixels
    of about that size; the maps come back at the image's own size.
    """
    gsd = image.ground_sampling_distance
    if gsd is not None and gsd < FINEST_GSD_M:
        f = max(1, min(int(FINEST_GSD_M / gsd + 1e-9), *image.shape))
        if f > 1:
            return _fine_image_maps(image, f, thresholds)
    t = thresholds
    general: list[str] = []
    cover_notes: list[str] = []
    object_notes: list[str] = []
    gsd = image.ground_sampling_distance
    if gsd is None:
        gsd = 1.0
        general.append(
            "unknown ground sampling distance: window sizes and minimum areas assume "
            "1 m pixels and areas are in pixels"
        )
    elif gsd > 2.5:
        general.append(
            f"coarse pixels ({gsd:.1f} m): texture and shape rules are approximate "
            "(single trees, narrow roads and small buildings are below the resolution)"
        )
    if not all(image.has(b) for b in ("R", "G", "B")):
        if not image.has("GRAY"):
            raise ImageError(
                f"{image.name}: the spectral detector needs R,G,B bands "
                f"(image bands: {','.join(image.band_names)}; set them with --bands)"
            )
        general.append("grey image: no colour, so vegetation and water are barely separable")
    # Pixels with every band exactly 0 are frame padding that was not flagged as nodata.
    blank = ~np.any(image.data, axis=0)
    valid = image.valid & ~blank
    if (blank & image.valid).any():
        general.append(
            f"{int((blank & image.valid).sum())} px with every band 0 treated as nodata"
        )
    cover, conf, bands = _land_cover(image, valid, t, gsd, cover_notes)
    road, building, parking = _objects(cover, bands, valid, t, gsd, object_notes)

    imp = (cover == IMPERVIOUS).astype(np.float32)
    size = _odd(2.0 * _px(t.built_up_sigma_m, gsd, 1.0))
    num = _smooth(imp, size)
    den = _smooth(valid.astype(np.float32), size)
    density = np.where(valid, num / np.maximum(den, _EPS), 0).astype(np.float32)
    built_up = (density >= t.built_up_density) & valid
    built_up = _clean(built_up, _min_pixels(t.built_up_min_m2, gsd))
    conf["built_up"] = density
    return ClassMaps(
        cover=cover, road=road, building=building, parking=parking,
        built_up_density=density, built_up=built_up, confidence=conf,
        notes={
            "general": general, "cover": cover_notes, "objects": object_notes,
            "built_up": [
                f"built-up land = impervious fraction >= {t.built_up_density:g} within about "
                f"{2 * t.built_up_sigma_m:g} m, patches >= {t.built_up_min_m2:g} m2"
            ],
        },
    )


def _fine_image_maps(image: GeoImage, f: int, thresholds: SpectralThresholds) -> ClassMaps:
    """Class maps of ``image`` measured on ``f`` x ``f`` pixel blocks, upsampled back."""
    from affine import Affine

    data = np.stack([_block_reduce_mean(band, f) for band in image.data])
    valid = _block_reduce_mean(image.valid, f) >= 0.5
    coarse = GeoImage(
        data=data, band_names=list(image.band_names),
        transform=image.transform @ Affine.scale(f), crs=image.crs,
        valid=valid if valid.any() else None, path=image.path,
        gsd=image.gsd * f if image.gsd else None, white_point=image.white_point,
    )
    maps = compute_class_maps(coarse, thresholds)
    shape, ok = image.shape, image.valid

    def up(x: np.ndarray) -> np.ndarray:
        return _upsample(x, f, shape)

    cover = up(maps.cover)
    cover[~ok] = NODATA
    notes = {k: list(v) for k, v in maps.notes.items()}
    notes.setdefault("general", []).insert(0, (
        f"pixels of {image.ground_sampling_distance:.3g} m are finer than the "
        f"{FINEST_GSD_M:g} m the spectral rules work at: measured on {f}x{f} pixel blocks"
    ))
    return ClassMaps(
        cover=cover, road=up(maps.road) & ok, building=up(maps.building) & ok,
        parking=up(maps.parking) & ok, built_up_density=up(maps.built_up_density),
        built_up=up(maps.built_up) & ok,
        confidence={k: up(v) for k, v in maps.confidence.items()}, notes=notes,
    )


def _attach_polygons(image: GeoImage, regions: list[Region]) -> None:
    """Set every region's polygon (image CRS) with one vectorisation pass for all."""
    if not regions:
        return
    from rasterio.features import shapes
    from shapely.geometry import MultiPolygon, shape

    labels = np.zeros(image.shape, dtype=np.int32)
    for i, region in enumerate(regions, start=1):
        r0, c0 = region.origin
        h, w = region.crop.shape
        labels[r0 : r0 + h, c0 : c0 + w][region.crop] = i
    parts: dict[int, list] = {}
    for geom, value in shapes(labels, mask=labels > 0, transform=image.transform):
        parts.setdefault(int(value), []).append(shape(geom))
    for i, region in enumerate(regions, start=1):
        geoms = parts.get(i, [])
        # Parts of one region touch at most at pixel corners: a valid MultiPolygon as is.
        region.polygon = geoms[0] if len(geoms) == 1 else (MultiPolygon(geoms) if geoms else None)


# ----------------------------------------------------------------------------- detector
class SpectralDetector:
    """Closed-vocabulary detector from band indices and shape rules; needs no weights.

    Example: ``SpectralDetector().find(GeoImage.open("naip.tif"), "buildings")``.
    """

    name = "spectral"

    def __init__(
        self,
        settings: Settings | None = None,
        thresholds: SpectralThresholds | None = None,
        cache_size: int = 8,
    ) -> None:
        self.settings = settings or Settings()
        self.thresholds = thresholds or DEFAULT_THRESHOLDS
        self.cache_size = cache_size
        self.computations = 0  # class-map computations (cache misses)
        self._cache: OrderedDict[str, ClassMaps] = OrderedDict()
        self._lock = threading.Lock()

    def class_maps(self, image: GeoImage) -> ClassMaps:
        """The cached class maps of ``image`` (computed on first use)."""
        key = image.content_hash
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        maps = compute_class_maps(image, self.thresholds)
        with self._lock:
            self.computations += 1
            self._cache[key] = maps
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        log.debug("spectral class maps computed for %s", image.name)
        return maps

    def notes(self, image: GeoImage, query: str) -> list[str]:
        """Approximation notes for ``query`` and how its class was measured on ``image``."""
        cls, notes = resolve_concept(query)
        return [*notes, *self.class_maps(image).notes_for(cls)]

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """Per-pixel score of the concept ``query``; unknown concepts raise."""
        cls, _ = resolve_concept(query)
        maps = self.class_maps(image)
        valid = maps.cover != NODATA
        mask = maps.mask(cls) & valid
        soft = self._soft(maps, cls)
        threshold = 0.5
        scores = np.where(mask, np.maximum(soft, threshold), np.minimum(soft, threshold - 1e-3))
        scores = np.where(valid, scores, 0.0).astype(np.float32)
        return ScoreMap(
            scores=scores, threshold=threshold, query=query, label=cls,
            detector=self.name, notes=self.notes(image, query),
        )

    @staticmethod
    def _soft(maps: ClassMaps, cls: str) -> np.ndarray:
        conf = maps.confidence
        if cls in ("tree", "low_vegetation"):
            t = conf["tree"]
            return (t if cls == "tree" else 1.0 - t) * 0.5 + conf["vegetation"] * 0.5
        if cls in conf:
            return conf[cls]
        if cls in ("road", "building", "parking"):
            return conf["impervious"]
        return np.full(maps.cover.shape, 0.5, dtype=np.float32)

    def find(self, image: GeoImage, query: str) -> list[Region]:
        """Instances of ``query``: connected components of the class mask, at least
        ``settings.min_region_m2`` large, with polygons in the image CRS and true area.

        Regions of a class are built once per image and settings; later queries that
        resolve to the same class get copies labelled with their own query text."""
        cls, _ = resolve_concept(query)
        maps = self.class_maps(image)
        key = (cls, float(self.settings.min_region_m2), int(self.settings.connectivity))
        with self._lock:
            cached = maps.regions.get(key)
        if cached is None:
            smap = self.score_map(image, query)
            cached = regions_from_score_map(
                image, smap, min_area_m2=self.settings.min_region_m2,
                connectivity=self.settings.connectivity, polygons=False,
            )
            _attach_polygons(image, cached)
            with self._lock:
                maps.regions[key] = cached
        return [replace(r, query=query, extra=dict(r.extra)) for r in cached]
