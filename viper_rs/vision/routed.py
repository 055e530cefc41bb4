"""RoutedDetector: one detector that answers building concepts with the learned building
model and everything else with a primary detector (spectral, or GRAFT/CLIP).

A query goes to the building detector when it resolves to the canonical ``building``
concept (building, house, roof, residential / commercial building...) and the building
model covers the image (R, G, B bands, a ground resolution in its validated range);
otherwise to the primary, and a building query that fell back carries the reason in its
notes. On an image without a ground size both refuse building concepts (the spectral
primary raises NoGroundSize, which passes through unchanged); a primary that answers
without one (GRAFT/CLIP) answers with its note. Every region names the detector that found it (``Region.detector``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from viper_rs.core.detector import ContextSensitive, Detector, DetectorBase
from viper_rs.core.errors import ImageError, NoGroundSize
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.core.timing import ms_since
from viper_rs.vision.base import ScoreMap, Stages
from viper_rs.vision.buildings.detector import BuildingDetector, is_building_query


class RoutedDetector(DetectorBase):
    """Building concepts -> ``buildings`` where it covers the image; the rest -> ``primary``.

    ``name`` defaults to ``"<buildings>+<primary>"`` (e.g. ``buildingnet+spectral``); the
    settings are the primary's (the caches are its detectors').
    Example: ``RoutedDetector(SpectralDetector(), BuildingDetector()).find(img, "houses")``.
    """

    def __init__(self, primary: Detector, buildings: BuildingDetector,
                 name: str | None = None) -> None:
        super().__init__(primary.settings, cache_size=0)
        self.primary = primary
        self.buildings = buildings
        self.name = name or f"{buildings.name}+{primary.name}"

    @property
    def stats(self) -> object | None:
        """The primary's image-wide statistics."""
        return self.primary.stats

    def region_halo(self, pixel_size: float, default: float) -> float:
        """The primary's halo, at least ``default`` (the building model reads its window)."""
        return max(self.primary.region_halo(pixel_size, default), default)

    def stats_halo(self, pixel_size: float) -> float | None:
        """The primary's (the building model measures with no image-wide statistics)."""
        return self.primary.stats_halo(pixel_size)

    def with_stats_of(self, images: Sequence[GeoImage], cache_items: int) -> Detector:
        """The routing with the primary measuring with the statistics of ``images`` and
        both parts keeping ``cache_items`` images; itself when the primary is unchanged."""
        primary = self.primary.with_stats_of(images, cache_items)
        if primary is self.primary:
            return self
        out = RoutedDetector(primary, self.buildings.with_cache(cache_items), self.name)
        out.choice_note = self.choice_note
        return out

    def cost_parts(self, pixel_m: float, concepts: Sequence[str] | None = None) -> list[str]:
        """The building model where it covers ``pixel_m`` (for building concepts), the
        primary's parts for the rest (and for buildings it does not cover)."""
        lo, hi = self._gsd_range()
        covered = lo <= pixel_m <= hi
        ask_b = concepts is None or any(is_building_query(c) for c in concepts)
        ask_rest = concepts is None or any(not is_building_query(c) for c in concepts)
        out = [self.buildings.name] if ask_b and covered else []
        if ask_rest or not out:
            out = self.primary.cost_parts(pixel_m, None) + out
        return out

    def loaded_parts(self) -> list[str]:
        """The primary's parts and the building model (held even where it does not answer)."""
        return [*self.primary.loaded_parts(), self.buildings.name]

    def _gsd_range(self) -> tuple[float, float]:
        """The learned building model's validated pixel sizes (m)."""
        try:
            lo, hi = self.buildings.config.gsd_range_m
            return float(lo), float(hi)
        except Exception:  # noqa: BLE001 - weights that do not load: assume it answers
            return 0.0, math.inf

    def route(self, image: GeoImage, query: str) -> tuple[Detector, str | None]:
        """The detector that answers ``query`` on ``image``, and why a building query
        fell back to the primary (None when it did not)."""
        if not is_building_query(query):
            return self.primary, None
        reason = self.buildings.covers(image)
        if reason is None:
            return self.buildings, None
        return self.primary, f"buildings answered by the {self.primary.name} detector: {reason}"

    def uncovered(self, image: GeoImage, query: str) -> str | None:
        """Why the specialist for ``query`` (the building model for building concepts)
        cannot answer ``image``; None when it can or when ``query`` has no specialist."""
        return self.buildings.covers(image) if is_building_query(query) else None

    def prepare(self, image: GeoImage, queries: Sequence[str] = ()) -> dict[str, Any]:
        """Prepare each sub-detector for the queries it answers. The primary is prepared
        when it answers one of ``queries`` or when they are not known (empty)."""
        t0 = time.perf_counter()
        mine = [q for q in queries if self.route(image, q)[0] is self.buildings]
        rest = [q for q in queries if q not in mine]
        stats: dict[str, Any] = {}
        if rest or not queries:
            stats[self.primary.name] = self.primary.prepare(image, rest)
        if mine:
            stats[self.buildings.name] = self.buildings.prepare(image, mine)
        return {"ms": ms_since(t0), **stats}

    def notes(self, image: GeoImage, query: str) -> list[str]:
        """The answering detector's notes, after the fallback reason when there is one."""
        det, why = self.route(image, query)
        with _saying(why):
            notes = det.notes(image, query)
        return [why, *notes] if why else notes

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """The answering detector's score map (with the fallback reason in its notes)."""
        det, why = self.route(image, query)
        with _saying(why):
            smap = det.score_map(image, query)
        if why and why not in smap.notes:
            smap.notes = [why, *smap.notes]
        return smap

    def open_objects(self, image: GeoImage, core: tuple[int, int, int, int],
                     cut: tuple[bool, bool, bool, bool], queries: Sequence[str]) -> int:
        """The primary's objects cut by ``image``'s edge for the queries it answers (0 when
        it has no whole-object rules): see :class:`~viper_rs.core.detector.ContextSensitive`."""
        theirs = [q for q in queries if self.route(image, q)[0] is self.primary]
        if theirs and isinstance(self.primary, ContextSensitive):
            return self.primary.open_objects(image, core, cut, theirs)
        return 0

    def find_with_stages(self, image: GeoImage, query: str) -> tuple[list[Region], Stages]:
        """The answering detector's regions (each names its detector) and stages."""
        det, why = self.route(image, query)
        with _saying(why):
            return det.find_with_stages(image, query)


@contextmanager
def _saying(why: str | None) -> Iterator[None]:
    """When a building query fell back and the fallback cannot read the image either (a
    single-band raster for the spectral detector), its ImageError also says why the
    building model did not answer."""
    try:
        yield
    except NoGroundSize:
        raise  # the same fact the building model fell back on, with the way out
    except ImageError as exc:
        if why is None:
            raise
        raise ImageError(f"{exc} ({why})") from exc
