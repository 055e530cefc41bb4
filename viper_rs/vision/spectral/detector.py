"""SpectralDetector: answers concept queries from the cached class maps of each image."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from viper_rs.core.classes import BY_NAME, METRIC_CLASSES, OBJECT_CLASSES
from viper_rs.core.config import Settings
from viper_rs.core.detector import DetectorBase
from viper_rs.core.errors import NoGroundSize
from viper_rs.core.geo import GeoImage
from viper_rs.core.georef import no_ground_size_message
from viper_rs.core.regions import Region
from viper_rs.core.timing import ms_since
from viper_rs.vision.base import ScoreMap, Stages
from viper_rs.vision.components import regions_from_score_map
from viper_rs.vision.concepts import concept_class, resolve_concept
from viper_rs.vision.spectral.landcover import NODATA
from viper_rs.vision.spectral.maps import ClassMaps, band_problem, compute_class_maps
from viper_rs.vision.spectral.scene import context_m, scene_stats
from viper_rs.vision.spectral.stats import DEFAULT_MAX_PIXELS, SceneStats
from viper_rs.vision.spectral.thresholds import DEFAULT_THRESHOLDS, SpectralThresholds

#: The package's logger (as before the split into modules).
log = logging.getLogger(__package__)


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
#: The spectral chip halo of a region in units of the windowed rules' reach
#: (:func:`context_m`). Rules over whole paved segments (the building / road / parking
#: shape rules) read as far as their segment, which a halo of one reach still cuts:
#: measured on real NAIP cut 2 x 2, one reach left building areas 4-8% off the uncut tile
#: at small chips, two reaches 0-0.8% (North Dakota 5 m: 320 m chips -8.4% -> -0.8%;
#: Napa 1 m: 48 m chips -4.4% -> 0%).
OBJECT_REACH = 2.0


class SpectralDetector(DetectorBase):
    """Closed-vocabulary detector from band indices and shape rules; needs no weights.

    Example: ``SpectralDetector().find(GeoImage.open("naip.tif"), "buildings")``.

    ``stats`` (optional) are the image-wide statistics every image is measured with (a
    region's, see :meth:`for_scene` and :meth:`with_stats_of`); by default each image
    uses its own.
    """

    name = "spectral"

    def __init__(
        self,
        settings: Settings | None = None,
        thresholds: SpectralThresholds | None = None,
        cache_size: int = 8,
        stats: SceneStats | None = None,
    ) -> None:
        super().__init__(settings, cache_size)
        self.thresholds = thresholds or DEFAULT_THRESHOLDS
        self.stats: SceneStats | None = stats

    @classmethod
    def for_scene(
        cls,
        images: Sequence[GeoImage],
        settings: Settings | None = None,
        thresholds: SpectralThresholds | None = None,
        cache_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> SpectralDetector:
        """A detector that measures every image (chip) with the statistics of ``images``
        taken together (the chips or tiles of one region)."""
        t = thresholds or DEFAULT_THRESHOLDS
        stats = scene_stats(images, t, max_pixels)
        return cls(settings, t, cache_size=cache_size, stats=stats)

    def region_halo(self, pixel_size: float, default: float) -> float:
        """:data:`OBJECT_REACH` times what the windowed rules read around a pixel
        (:func:`context_m` at ``pixel_size``), whatever ``default``."""
        return OBJECT_REACH * context_m(pixel_size, self.thresholds)

    def stats_halo(self, pixel_size: float) -> float | None:
        """What the windowed rules read around a pixel (:func:`context_m`); None when the
        detector already measures with statistics of its own."""
        return None if self.stats is not None else context_m(pixel_size, self.thresholds)

    def with_stats_of(self, images: Sequence[GeoImage], cache_items: int) -> SpectralDetector:
        """A detector measuring every image with the statistics of ``images`` taken
        together (:func:`scene_stats`), keeping ``cache_items`` images' class maps; itself
        when it has statistics already or ``images`` is empty."""
        if self.stats is not None or not images:
            return self
        out = SpectralDetector(self.settings, self.thresholds, cache_size=cache_items,
                               stats=scene_stats(images, self.thresholds))
        out.choice_note = self.choice_note
        return out

    def class_maps(self, image: GeoImage) -> ClassMaps:
        """The cached class maps of ``image`` (computed on first use)."""
        key = image.content_hash if self.stats is None else f"{image.content_hash}|{self.stats!r}"
        return self.cached(key, lambda: self._compute_maps(image))

    def _compute_maps(self, image: GeoImage) -> ClassMaps:
        maps = compute_class_maps(image, self.thresholds, self.stats)
        log.debug("spectral class maps computed for %s", image.name)
        return maps

    def open_objects(self, image: GeoImage, core: tuple[int, int, int, int],
                     cut: tuple[bool, bool, bool, bool], queries: Sequence[str]) -> int:
        """How many paved segments small enough to be buildings reach from ``core`` (r0, c0,
        r1, c1 image pixels) to an edge of ``image`` that ``cut`` marks as a cut (top,
        bottom, left, right): their class may change with more context (a region's chip
        then reads a wider window). 0 unless a query names a class the segment rules
        decide (building, road, parking); land cover reads bounded windows only."""
        if not any(concept_class(q) in OBJECT_CLASSES for q in queries):
            return 0
        maps = self.class_maps(image)
        gsd = image.ground_sampling_distance or 1.0
        cell = gsd * maps.segment_scale
        max_px = int(self.thresholds.building_max_m2 / (cell * cell))
        return maps.open_segments(core, cut, max_px)

    def prepare(self, image: GeoImage, queries: Sequence[str] = ()) -> dict[str, Any]:
        """Compute (or fetch) the per-image class maps every query shares (``queries`` is
        ignored: the maps serve every concept)."""
        t0 = time.perf_counter()
        self.class_maps(image)
        return {"ms": ms_since(t0)}

    @staticmethod
    def ground_size_problem(image: GeoImage, query: str) -> str | None:
        """Why ``query`` cannot be answered on ``image``: its class is told by rules in
        metres (:data:`~viper_rs.vision.concepts.METRIC_CLASSES`) and the image has no
        ground size; None when it can (or when its bands are what cannot be read: that
        refusal comes first, a ground size would not help)."""
        if image.ground_sampling_distance is not None or band_problem(image) is not None:
            return None
        cls = concept_class(query)
        if cls not in METRIC_CLASSES:
            return None
        return no_ground_size_message(image.name, f"{query!r}: {METRIC_CLASSES[cls]}")

    def _check(self, image: GeoImage, query: str) -> None:
        problem = self.ground_size_problem(image, query)
        if problem is not None:
            raise NoGroundSize(problem)

    def notes(self, image: GeoImage, query: str) -> list[str]:
        """Approximation notes for ``query`` and how its class was measured on ``image``;
        NoGroundSize for a class told in metres on an image without a ground size."""
        cls, notes = resolve_concept(query)
        self._check(image, query)
        return [*notes, *self.class_maps(image).notes_for(cls)]

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """Per-pixel score of the concept ``query``; unknown concepts raise, and so do
        classes told in metres on an image without a ground size (NoGroundSize)."""
        cls, _ = resolve_concept(query)
        self._check(image, query)
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
        if cls in BY_NAME["vegetation"].parts:  # tree / grass: told apart by texture
            t = conf["tree"]
            return (t if cls == "tree" else 1.0 - t) * 0.5 + conf["vegetation"] * 0.5
        if cls in conf:
            return conf[cls]
        if cls in OBJECT_CLASSES:
            return conf["impervious"]
        return np.full(maps.cover.shape, 0.5, dtype=np.float32)

    def find_with_stages(self, image: GeoImage, query: str) -> tuple[list[Region], Stages]:
        """Instances of ``query``, with no stages (one cached step per class): connected
        components of the class mask, at least ``settings.min_region_m2`` large, with
        polygons in the image CRS and true area.

        Regions of a class are built once per image and settings; later queries that
        resolve to the same class get copies labelled with their own query text.
        NoGroundSize for a class told in metres on an image without a ground size."""
        cls, _ = resolve_concept(query)
        self._check(image, query)
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
        return [replace(r, query=query, extra=dict(r.extra)) for r in cached], []
