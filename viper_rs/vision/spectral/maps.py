"""Every class map of one image (land cover, roads, buildings, parking lots, built-up
land) and how queries read them: :func:`compute_class_maps` and :class:`ClassMaps`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from viper_rs.core.classes import CONCEPT_CLASSES, OBJECT_CLASSES, SUPPORTED_CLASSES
from viper_rs.core.errors import ImageError
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.vision.spectral.landcover import (
    COVER_NAMES,
    IMPERVIOUS,
    NODATA,
    _land_cover,
)
from viper_rs.vision.spectral.objects import _objects
from viper_rs.vision.spectral.pixels import (
    _EPS,
    _block_reduce_mean,
    _clean,
    _min_pixels,
    _odd,
    _px,
    _smooth,
    _upsample,
)
from viper_rs.vision.spectral.stats import SceneStats, _Recorder
from viper_rs.vision.spectral.thresholds import DEFAULT_THRESHOLDS, SpectralThresholds

#: The finest ground pixel (m) the rules work at: their windows are sized in metres, so
#: finer imagery (drone, 1-5 cm) would make them hundreds of pixels wide. Such images are
#: block-averaged to this size and the class maps upsampled back.
FINEST_GSD_M = 0.1


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
    #: The scene statistics the maps were computed with (given, or the image's own).
    stats: SceneStats | None = None
    #: The paved segments the object classes were decided on (int labels on a grid of
    #: ``segment_scale`` x ``segment_scale`` image pixels), for :meth:`open_segments`.
    segments: np.ndarray | None = None
    segment_scale: int = 1

    def open_segments(self, core: tuple[int, int, int, int],
                      cut: tuple[bool, bool, bool, bool], max_px: int) -> int:
        """How many paved segments of at most ``max_px`` working pixels (those the object
        rules could call a building) meet both the ``core`` window (r0, c0, r1, c1 in image
        pixels) and an image edge that ``cut`` marks as a cut (top, bottom, left, right):
        segments the image sees only in part, whose class may change with more context."""
        seg = self.segments
        if seg is None or not any(cut) or seg.size == 0:
            return 0
        k = self.segment_scale
        r0, c0, r1, c1 = core
        inner = seg[r0 // k:-(-r1 // k), c0 // k:-(-c1 // k)]
        edges = [e for e, on in zip((seg[0], seg[-1], seg[:, 0], seg[:, -1]), cut, strict=True)
                 if on]
        both = np.intersect1d(np.unique(inner), np.unique(np.concatenate(edges)))
        both = both[both > 0]
        if both.size == 0:
            return 0
        sizes = np.bincount(seg.ravel(), minlength=int(both.max()) + 1)[both]
        return int((sizes <= max_px).sum())

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


#: Land-cover classes as sets of cover codes (a union class: its parts' codes); the other
#: classes of the concept table are ClassMaps layers of the same name.
_COVER_CODES: dict[str, tuple[int, ...]] = {
    name: (code,) for code, name in COVER_NAMES.items() if code != NODATA
}
_COVER_CODES |= {
    c.name: tuple(code for part in c.parts for code in _COVER_CODES[part])
    for c in CONCEPT_CLASSES if c.parts
}
_OBJECT_LAYERS: dict[str, str] = {c: c for c in SUPPORTED_CLASSES if c not in _COVER_CODES}



# ----------------------------------------------------------------------------- steps
def _working_gsd(image: GeoImage, general: list[str], rec: _Recorder | None = None) -> float:
    """The ground sampling distance the rules use (the scene's, else the image's; 1 m
    when unknown), noting when it is unknown or coarse."""
    rec = _Recorder() if rec is None else rec
    gsd = rec.get("gsd", lambda: image.ground_sampling_distance)
    if gsd is None:
        gsd = 1.0
        general.append(
            "no ground size: vegetation and impervious surface are told pixel by pixel; "
            "their hole filling and smallest regions are taken in pixels (1 px as 1 m) "
            "and areas are in pixels"
        )
    elif gsd > 2.5:
        general.append(
            f"coarse pixels ({gsd:.1f} m): texture and shape rules are approximate "
            "(single trees, narrow roads and small buildings are below the resolution)"
        )
    return gsd


def band_problem(image: GeoImage) -> str | None:
    """Why the spectral detector cannot read ``image``, None when it can: it needs R,G,B
    bands, so a raster of fewer than 3 bands (a DSM, a label mask, a grey picture) is
    refused whatever its band is called."""
    n = len(image.band_names)
    if n < 3:
        return (f"{image.name} has {n} band{'' if n == 1 else 's'}; the spectral detector "
                "needs red, green and blue bands (R,G,B[,NIR])")
    if not all(image.has(b) for b in ("R", "G", "B")):
        return (f"{image.name}: the spectral detector needs R,G,B bands "
                f"(image bands: {','.join(image.band_names)}; set them with --bands)")
    return None


def _check_bands(image: GeoImage, general: list[str]) -> None:
    """Raise ImageError unless the image has R,G,B bands (:func:`band_problem`)."""
    problem = band_problem(image)
    if problem:
        raise ImageError(problem)


def _valid_pixels(image: GeoImage, general: list[str]) -> np.ndarray:
    """The image's valid pixels without frame padding (every band exactly 0)."""
    # Pixels with every band exactly 0 are frame padding that was not flagged as nodata.
    blank = ~np.any(image.data, axis=0)
    valid = image.valid & ~blank
    if (blank & image.valid).any():
        general.append(
            f"{int((blank & image.valid).sum())} px with every band 0 treated as nodata"
        )
    return valid


def _built_up(
    cover: np.ndarray, valid: np.ndarray, t: SpectralThresholds, gsd: float
) -> tuple[np.ndarray, np.ndarray]:
    """(impervious density around each pixel, built-up land mask)."""
    imp = (cover == IMPERVIOUS).astype(np.float32)
    size = _odd(2.0 * _px(t.built_up_sigma_m, gsd, 1.0))
    num = _smooth(imp, size)
    den = _smooth(valid.astype(np.float32), size)
    density = np.where(valid, num / np.maximum(den, _EPS), 0).astype(np.float32)
    built_up = (density >= t.built_up_density) & valid
    built_up = _clean(built_up, _min_pixels(t.built_up_min_m2, gsd))
    return density, built_up


def _built_up_note(t: SpectralThresholds) -> str:
    """The note that states the built-up rule."""
    return (
        f"built-up land = impervious fraction >= {t.built_up_density:g} within about "
        f"{2 * t.built_up_sigma_m:g} m, patches >= {t.built_up_min_m2:g} m2"
    )


# ----------------------------------------------------------------------------- maps
def compute_class_maps(
    image: GeoImage,
    thresholds: SpectralThresholds = DEFAULT_THRESHOLDS,
    stats: SceneStats | None = None,
) -> ClassMaps:
    """All class maps of one image (land cover, objects, built-up density).

    ``stats``: the image-wide statistics to use (e.g. a region's, from
    :func:`~viper_rs.vision.spectral.stats.scene_stats`); ``None`` measures them on the
    image. ``ClassMaps.stats`` holds the ones used.

    Images with pixels finer than :data:`FINEST_GSD_M` are measured on blocks of pixels
    of about that size; the maps come back at the image's own size.
    """
    gsd = image.ground_sampling_distance
    if gsd is not None and gsd < FINEST_GSD_M:
        f = max(1, min(int(FINEST_GSD_M / gsd + 1e-9), *image.shape))
        if f > 1:
            return _fine_image_maps(image, f, thresholds, stats)
    if stats is not None and stats.white_point != image.white_point:
        image = replace(image, white_point=stats.white_point)
    rec = _Recorder(stats)
    t = thresholds
    general: list[str] = []
    cover_notes: list[str] = []
    object_notes: list[str] = []
    gsd = _working_gsd(image, general, rec)
    _check_bands(image, general)
    valid = _valid_pixels(image, general)
    cover, conf, bands = _land_cover(image, valid, t, gsd, cover_notes, rec)
    road, building, parking, segments, seg_scale = _objects(cover, bands, valid, t, gsd,
                                                            object_notes, rec)
    density, built_up = _built_up(cover, valid, t, gsd)
    conf["built_up"] = density
    return ClassMaps(
        cover=cover, road=road, building=building, parking=parking,
        built_up_density=density, built_up=built_up, confidence=conf,
        notes={
            "general": general, "cover": cover_notes, "objects": object_notes,
            "built_up": [_built_up_note(t)],
        },
        stats=rec.stats(float(image.white_point or 1.0)),
        segments=segments, segment_scale=seg_scale,
    )


def _coarse_image(image: GeoImage, f: int) -> GeoImage:
    """``image`` averaged over ``f`` x ``f`` pixel blocks (same white point)."""
    from affine import Affine

    data = np.stack([_block_reduce_mean(band, f) for band in image.data])
    valid = _block_reduce_mean(image.valid, f) >= 0.5
    roi = None if image.roi is None else _block_reduce_mean(image.roi, f) >= 0.5
    if roi is not None and not (roi & valid).any():
        roi = None
    return GeoImage(
        data=data, band_names=list(image.band_names),
        transform=image.transform @ Affine.scale(f), crs=image.crs,
        valid=valid if valid.any() else None, path=image.path,
        gsd=image.gsd * f if image.gsd else None, white_point=image.white_point, roi=roi,
    )


def _fine_image_maps(
    image: GeoImage, f: int, thresholds: SpectralThresholds, stats: SceneStats | None = None
) -> ClassMaps:
    """Class maps of ``image`` measured on ``f`` x ``f`` pixel blocks, upsampled back
    (``stats``: those of the block-averaged scene)."""
    coarse = _coarse_image(image, f)
    maps = compute_class_maps(coarse, thresholds, stats)
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
        stats=maps.stats, segments=maps.segments, segment_scale=maps.segment_scale * f,
    )
