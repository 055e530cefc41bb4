"""RegionDetector: the Detector protocol for a RegionImage, answered chip by chip."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from viper_rs import budget
from viper_rs.config import Settings
from viper_rs.detector import Detector, ScoreMap, Stages
from viper_rs.errors import ImageError, ToolError
from viper_rs.geo import GeoImage
from viper_rs.region.chips import Chip, core_slice, read_chip
from viper_rs.region.image import RegionImage
from viper_rs.region.stitch import Stitcher, build_regions
from viper_rs.regions import Region
from viper_rs.timing import ms_since

log = logging.getLogger(__name__)

#: Most distinct per-chip detector notes kept for one query.
MAX_CHIP_NOTES = 4

#: Reads one chip: (region, chip) -> chip image, or None when it holds no valid pixel.
ChipReader = Callable[[RegionImage, Chip], GeoImage | None]


class RegionDetector:
    """Wraps a per-chip detector: ``find`` on a RegionImage reads every chip (with its halo),
    keeps each chip's core, stitches components across core borders and returns whole
    objects on the working grid. Results are cached per query.

    A chip that cannot be read is retried once, then marked ``failed`` for the rest of the
    run and reported as missing coverage in :meth:`notes`; it never counts as empty.
    """

    def __init__(
        self,
        inner: Detector,
        image: RegionImage,
        chips: list[Chip],
        settings: Settings | None = None,
        reader: ChipReader | None = None,
        min_area_m2: float | None = None,
    ) -> None:
        self.inner = inner
        self.image = image
        self.chips = chips
        self.settings = settings or Settings()
        self.reader: ChipReader = reader or read_chip
        inner_min = getattr(inner, "min_area_m2", None)
        self.min_area_m2 = (min_area_m2 if min_area_m2 is not None
                            else inner_min if inner_min is not None else self.settings.min_region_m2)
        self.name = inner.name
        self.choice_note = getattr(inner, "choice_note", None)
        self._cache: dict[str, tuple[list[Region], Stages, list[str]]] = {}

    # ------------------------------------------------------------------ protocol
    def prepare(self, image: Any) -> dict[str, Any]:
        """Nothing is shared by all queries of a region (chips are read per query)."""
        return {}

    def score_map(self, image: Any, query: str) -> ScoreMap:
        """A region has no whole-image score map (it would be full-size); use :meth:`find`."""
        raise ImageError("a region is scored chip by chip; it has no whole score map")

    def notes(self, image: Any, query: str) -> list[str]:
        """Notes of the chips' detections for ``query``, and missing coverage."""
        return list(self._detect(query)[2]) + self.coverage_notes()

    def find(self, image: Any, query: str) -> list[Region]:
        """Whole objects of ``query`` over the region."""
        return self._detect(query)[0]

    def find_with_stages(self, image: Any, query: str) -> tuple[list[Region], Stages]:
        """The regions of :meth:`find` and the timed chip stage."""
        regions, stages, _ = self._detect(query)
        return regions, stages

    # ------------------------------------------------------------------ work
    def coverage_notes(self) -> list[str]:
        """A note naming the failed chips, when any."""
        failed = [c for c in self.chips if c.status == "failed"]
        if not failed:
            return []
        ids = ", ".join(c.id for c in failed[:10]) + (" ..." if len(failed) > 10 else "")
        return [f"missing coverage: {len(failed)} of {len(self.chips)} chips could not be read "
                f"({ids}); counts and areas cover only the rest of the region"]

    def _read(self, chip: Chip) -> GeoImage | None:
        """The chip's image, retried once; None (chip marked failed) after two failures."""
        last = None
        for _ in range(2):
            chip.attempts += 1
            try:
                return self.reader(self.image, chip)
            except Exception as exc:  # noqa: BLE001 - GDAL and readers raise many types
                last = exc
                log.info("chip %s: read failed (%s)", chip.id, exc)
        chip.status = "failed"
        chip.error = f"{type(last).__name__}: {last}"
        return None

    def _detect(self, query: str) -> tuple[list[Region], Stages, list[str]]:
        key = " ".join(query.lower().split())
        if key in self._cache:
            return self._cache[key]
        t0 = time.perf_counter()
        global_ids = bool(getattr(self.inner, "instance_ids_global", False))
        stitcher = Stitcher(self.settings.connectivity, global_instances=global_ids)
        notes: list[str] = []
        label = key
        n_read = 0
        for chip in self.chips:
            if chip.status in ("failed", "skipped"):
                continue
            budget.check()
            t1 = time.perf_counter()
            img = self._read(chip)
            if img is None:
                if chip.status != "failed":
                    chip.status, chip.error = "skipped", "no valid pixel"
                chip.ms += ms_since(t1)
                continue
            n_read += 1
            try:
                smap = self.inner.score_map(img, key)
            except ToolError:
                raise  # an unknown concept is the program's fault, not the chip's
            except ImageError as exc:
                chip.status, chip.error = "failed", f"analysis: {exc}"
                chip.ms += ms_since(t1)
                continue
            label = smap.label
            for n in smap.notes:
                if n not in notes:
                    notes.append(n)
            rs, cs = core_slice(chip)
            fg = (smap.mask & img.answer_mask)[rs, cs]
            inst = smap.instances[rs, cs] if smap.instances is not None else None
            scores = np.asarray(smap.scores, dtype=np.float64)[rs, cs]
            if chip.status == "pending":
                chip.valid_m2 = self.image.window_area(img.valid[rs, cs], chip.core[0], chip.core[1])
            stitcher.add(chip.index, chip.id, chip.core, fg, scores, inst)
            chip.status = "ok"
            chip.ms += ms_since(t1)
        if len(notes) > MAX_CHIP_NOTES:  # chip-adaptive detectors word each chip's note apart
            notes = notes[:MAX_CHIP_NOTES] + [
                f"... and {len(notes) - MAX_CHIP_NOTES} more distinct chip notes for {key!r}"]
        objects = stitcher.objects()
        regions = build_regions(objects, self.image, label, key, self.inner.name,
                                min_area_m2=self.min_area_m2)
        stages = [{"stage": "chips", "ms": ms_since(t0), "chips": n_read,
                   "parts": len(stitcher.parts) - 1, "objects": len(regions)}]
        self._cache[key] = (regions, stages, notes)
        return self._cache[key]
