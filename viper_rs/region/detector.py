"""RegionDetector: the Detector protocol for a RegionImage, answered chip by chip."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from viper_rs.core.config import Settings
from viper_rs.core.detector import Detector, DetectorBase, ScoreMap, Stages
from viper_rs.core.errors import ImageError, ToolError
from viper_rs.core.image import Image
from viper_rs.core.regions import Region
from viper_rs.core.timing import ms_since
from viper_rs.core.vocabulary import query_key
from viper_rs.region.image import RegionImage
from viper_rs.region.resume import ResumeStore
from viper_rs.region.scan import ChipReader, ChipResult, ChipRunner, InProcessRunner
from viper_rs.region.stitch import Stitcher, build_regions
from viper_rs.tiling.chips import Chip

log = logging.getLogger(__name__)

__all__ = ["MAX_CHIP_NOTES", "ChipReader", "RegionDetector"]

#: Most distinct per-chip detector notes kept for one query.
MAX_CHIP_NOTES = 4


class RegionDetector(DetectorBase):
    """Wraps a per-chip detector: ``find`` on a RegionImage reads every chip (with its halo),
    keeps each chip's core, stitches components across core borders and returns whole
    objects on the working grid. Results are cached per query.

    :meth:`prepare` scans the chips for the program's literal concepts before the program
    runs (each chip read once for all of them); a concept first asked inside the program is
    scanned then, under the program's time limit. Chip tasks run on ``runner`` (this
    process by default; see :mod:`viper_rs.region.scan`); with ``store`` finished chips are
    kept and not computed again.

    A chip that cannot be read is retried once, then marked ``failed`` for the rest of the
    run and reported as missing coverage in :meth:`notes`; it never counts as empty. Past
    ``deadline`` (``time.monotonic()``) no further chip is started: the chips not read are
    ``failed`` (missing coverage, with the reason).
    """

    def __init__(
        self,
        inner: Detector,
        image: RegionImage,
        chips: list[Chip],
        settings: Settings | None = None,
        reader: ChipReader | None = None,
        min_area_m2: float | None = None,
        runner: ChipRunner | None = None,
        store: ResumeStore | None = None,
        progress: bool = False,
        deadline: float | None = None,
    ) -> None:
        super().__init__(settings)
        self.inner = inner
        self.image = image
        self.chips = chips
        self.reader = reader
        self.runner: ChipRunner = runner or InProcessRunner(inner, image, reader)
        self.store = store
        self.progress = progress
        self.deadline = deadline
        self._limit_s = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        self.min_area_m2: float = next(a for a in (min_area_m2, inner.min_area_m2,
                                                   self.settings.min_region_m2) if a is not None)
        self.name = inner.name
        self.choice_note = inner.choice_note
        #: Each query's stitched regions, stages and notes (one region: never evicted).
        self._found: dict[str, tuple[list[Region], Stages, list[str]]] = {}
        #: Chip tasks computed (not resumed) and seconds spent scanning, over the run.
        self.computed = 0
        self.scan_s = 0.0

    # ------------------------------------------------------------------ protocol
    def prepare(self, image: Image, queries: Sequence[str] = ()) -> dict[str, Any]:
        """Scan the chips for ``queries`` not scanned yet (each chip read once for all);
        unknown concepts are left for the program to meet."""
        t0 = time.perf_counter()
        keys = [k for k in dict.fromkeys(query_key(q) for q in queries)
                if k and k not in self._found]
        if keys:
            self._scan(keys, strict=False)
        return {"ms": ms_since(t0), "queries": keys}

    def score_map(self, image: Image, query: str) -> ScoreMap:
        """A region has no whole-image score map (it would be full-size); use :meth:`find`."""
        raise ImageError("a region is scored chip by chip; it has no whole score map")

    def notes(self, image: Image, query: str) -> list[str]:
        """Notes of the chips' detections for ``query``, and missing coverage."""
        return list(self._detect(query)[2]) + self.coverage_notes()

    def find_with_stages(self, image: Image, query: str) -> tuple[list[Region], Stages]:
        """Whole objects of ``query`` over the region, and the timed chip stage."""
        regions, stages, _ = self._detect(query)
        return regions, stages

    # ------------------------------------------------------------------ work
    def coverage_notes(self) -> list[str]:
        """A note naming the failed chips, when any."""
        late = [c for c in self.chips if c.status == "failed" and c.error == self._late_reason()]
        failed = [c for c in self.chips if c.status == "failed" and c not in late]
        notes = []
        if failed:
            ids = ", ".join(c.id for c in failed[:10]) + (" ..." if len(failed) > 10 else "")
            notes.append(f"missing coverage: {len(failed)} of {len(self.chips)} chips could not "
                         f"be read ({ids}); counts and areas cover only the rest of the region")
        if late:
            notes.append(f"missing coverage: the scan stopped at its time limit "
                         f"({self._limit_s:.0f} s); {len(late)} of {len(self.chips)} chips were "
                         "not read; counts and areas cover only the rest of the region")
        return notes

    def _late_reason(self) -> str:
        """Why a chip the time limit stopped was not read."""
        return f"not read: the scan passed its time limit ({self._limit_s or 0:.0f} s)"

    def _late(self) -> bool:
        """Whether the scan's deadline has passed."""
        return self.deadline is not None and time.monotonic() > self.deadline

    def _detect(self, query: str) -> tuple[list[Region], Stages, list[str]]:
        key = query_key(query)
        if key not in self._found:
            self._scan([key], strict=True)
        return self._found[key]

    def _scan(self, keys: list[str], strict: bool) -> None:
        """Scan every live chip for ``keys`` and cache each key's stitched regions. An
        unknown concept raises its ToolError when ``strict``, else is left uncached."""
        t0 = time.perf_counter()
        live = [c for c in self.chips if c.status not in ("failed", "skipped")]
        results: dict[str, ChipResult] = {}
        tasks: list[tuple[Chip, list[str]]] = []
        for chip in live:
            r0, c0, r1, c1 = chip.core
            stored = (self.store.load(chip.id, keys, shape=(r1 - r0, c1 - c0))
                      if self.store is not None else None)
            missing = keys if stored is None or stored.status != "ok" else \
                [k for k in keys if k not in stored.queries]
            if stored is not None and (stored.status == "skipped" or not missing):
                results[chip.id] = stored
                chip.extra["resumed"] = True
                continue
            if stored is not None:
                results[chip.id] = stored
            tasks.append((chip, list(missing)))
        unknown: dict[str, str] = {}
        bar = self._bar(len(tasks))
        pending = {chip.id for chip, _ in tasks}
        gen = self.runner.run(tasks) if tasks and not self._late() else iter(())
        try:
            for res in gen:
                pending.discard(res.chip_id)
                self.computed += 1
                if res.unknown and strict:
                    raise ToolError(next(iter(res.unknown.values())))
                unknown.update(res.unknown)
                if self.store is not None:
                    self.store.save(res)
                prev = results.get(res.chip_id)
                if prev is not None and res.status == "ok":
                    res.queries = {**prev.queries, **res.queries}
                results[res.chip_id] = res
                if bar is not None:
                    bar.update(1)
                if pending and self._late():
                    break
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()  # workers holding abandoned chips are stopped
            if bar is not None:
                bar.close()
            self.scan_s += time.perf_counter() - t0
        if pending:
            log.warning("region scan: time limit passed, %d chips not read", len(pending))
            for chip in live:
                if chip.id in pending:  # a resumed part without the keys asked is dropped too
                    results.pop(chip.id, None)
                    chip.status, chip.error = "failed", self._late_reason()
        keys = [k for k in keys if k not in unknown]
        stitchers = {k: Stitcher(self.settings.connectivity,
                                 global_instances=self.inner.instance_ids_global) for k in keys}
        notes: dict[str, list[str]] = {k: [] for k in keys}
        labels = {k: k for k in keys}
        names = dict.fromkeys(keys, self.inner.name)  # who answered (a routing detector's part)
        n_read = 0
        for chip in live:  # chip order: the same objects and ids on every backend
            res = results.get(chip.id)
            if res is None:
                continue
            chip.ms += res.ms
            chip.attempts += res.attempts
            if res.status != "ok":
                chip.status, chip.error = res.status, res.error
                continue
            n_read += 1
            chip.valid_m2 = res.valid_m2
            chip.status = "ok"
            for k in keys:
                q = res.queries[k]
                labels[k] = q.label
                names[k] = q.detector or names[k]
                for n in q.notes:
                    if n not in notes[k]:
                        notes[k].append(n)
                fg, scores, inst = q.arrays()
                stitchers[k].add(chip.index, chip.id, chip.core, fg, scores, inst)
        ms = ms_since(t0)
        for k in keys:
            if len(notes[k]) > MAX_CHIP_NOTES:  # chip-adaptive detectors word each chip's note apart
                notes[k] = notes[k][:MAX_CHIP_NOTES] + [
                    f"... and {len(notes[k]) - MAX_CHIP_NOTES} more distinct chip notes for {k!r}"]
            objects = stitchers[k].objects()
            regions = build_regions(objects, self.image, labels[k], k, names[k],
                                    min_area_m2=self.min_area_m2)
            stages = [{"stage": "chips", "ms": ms, "chips": n_read, "queries": len(keys),
                       "computed": len(tasks), "parts": len(stitchers[k].parts) - 1,
                       "objects": len(regions)}]
            self._found[k] = (regions, stages, notes[k])

    def _bar(self, total: int) -> Any:
        """A tqdm bar on stderr (chips done/total, chips/s), when progress is on."""
        if not self.progress or total == 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="chip", desc=f"chips ({self.runner.name})", smoothing=0.1)
