"""Scanning chips for concepts: the chip task, its compact result, and where it runs.

A chip task is (chip, queries): the chip is read once (with its halo) and scored for every
query; the result keeps, per query, the chip core's foreground (bit-packed), the scores and
instance ids of the foreground pixels, the detector's label and notes. The driver
(:class:`viper_rs.region.detector.RegionDetector`) stitches results in chip order, so every
backend gives the same answer:

* :class:`InProcessRunner` - this process (the default);
* :class:`ProcessRunner` - local spawn processes, one detector per process;
* :class:`RayRunner` - Ray actors (``local``, ``auto`` or ``HOST:PORT``), one detector each.

A chip whose read fails is retried once inside the task; a chip whose worker dies is given
to a fresh worker once; after that it is ``failed`` (missing coverage, never empty).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from viper_rs.core import budget
from viper_rs.core.config import Settings
from viper_rs.core.detector import ContextSensitive, Detector
from viper_rs.core.errors import ImageError, ToolError
from viper_rs.core.geo import GeoImage
from viper_rs.core.timing import ms_since
from viper_rs.region.chips import read_chip
from viper_rs.region.image import RegionImage
from viper_rs.tiling.chips import Chip, box, core_slice, windows

log = logging.getLogger(__name__)

#: Reads one chip: (region, chip) -> chip image, or None when it holds no valid pixel.
ChipReader = Callable[[RegionImage, Chip], GeoImage | None]

#: What a worker builds its detector from: a detector name (built with the settings) or a
#: picklable detector object.
DetectorSpec = str | Detector

#: Times a chip is given to a worker before a worker death marks it failed.
MAX_WORKER_TRIES = 2

#: Most times a chip's halo is doubled while objects decided as a whole are cut by its
#: read window (:class:`~viper_rs.core.detector.ContextSensitive` detectors).
MAX_HALO_GROWTH = 2


@dataclass
class QueryResult:
    """One query on one chip core: packed foreground, and scores/instances of its pixels."""

    label: str
    notes: list[str]
    shape: tuple[int, int]
    packed: np.ndarray
    scores: np.ndarray
    instances: np.ndarray | None = None
    #: The detector that answered (a routing detector's part), "" when not known.
    detector: str = ""

    @classmethod
    def of(cls, label: str, notes: list[str], fg: np.ndarray, scores: np.ndarray,
           instances: np.ndarray | None, detector: str = "") -> QueryResult:
        """Compact form of a core's foreground ``fg`` with full-size ``scores``/``instances``."""
        return cls(label=label, notes=list(notes), shape=(int(fg.shape[0]), int(fg.shape[1])),
                   packed=np.packbits(fg, axis=None), scores=np.ascontiguousarray(scores[fg]),
                   instances=None if instances is None else np.ascontiguousarray(instances[fg]),
                   detector=detector)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(foreground, float64 scores, instance ids or None), core-sized."""
        h, w = self.shape
        fg = np.unpackbits(self.packed, count=h * w).astype(bool).reshape(h, w)
        scores = np.zeros((h, w), dtype=np.float64)
        scores[fg] = self.scores
        inst = None
        if self.instances is not None:
            inst = np.zeros((h, w), dtype=self.instances.dtype)
            inst[fg] = self.instances
        return fg, scores, inst


@dataclass
class ChipResult:
    """The outcome of one chip task: status (ok | skipped | failed), per-query results, and
    the queries the detector does not know (with the ToolError message)."""

    chip_id: str
    status: str
    error: str | None = None
    valid_m2: float = 0.0
    queries: dict[str, QueryResult] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    ms: float = 0.0
    resumed: bool = False
    #: Objects cut by the read window that reach the core (ContextSensitive detectors).
    extra_open: int = 0
    #: Times the read window's halo was doubled for such objects.
    grown: int = 0


def run_chip(inner: Detector, image: RegionImage, chip: Chip, keys: Sequence[str],
             reader: ChipReader | None = None) -> ChipResult:
    """Read ``chip`` once (retried once) and score it for every query of ``keys``.

    A detector whose rules read whole objects (:class:`ContextSensitive`) may see objects
    cut by the read window's edge inside the grid; the window then grows (the halo doubled,
    at most :data:`MAX_HALO_GROWTH` times) until none reaches the core.

    A chip whose memory runs out is ``failed`` (missing coverage), never empty."""
    t0 = time.perf_counter()
    try:
        res = _grown_result(inner, image, chip, keys, reader)
    except MemoryError:
        res = _failed(chip, "out of memory analysing the chip", 1)
    res.ms = ms_since(t0)
    return res


def _grown_result(inner: Detector, image: RegionImage, chip: Chip, keys: Sequence[str],
                  reader: ChipReader | None) -> ChipResult:
    """:func:`run_chip` without its timing and its out-of-memory guard."""
    res = _score_chip(inner, image, chip, keys, reader)
    grown = 0
    while (res.status == "ok" and grown < MAX_HALO_GROWTH
           and isinstance(inner, ContextSensitive)):
        if not res.extra_open:
            break
        wider = _grown(chip, image.shape, 2 ** (grown + 1))
        if wider is None:
            break
        grown += 1
        log.debug("chip %s: %d objects cut by the read window; halo x%d", chip.id,
                  res.extra_open, 2 ** grown)
        attempts = res.attempts
        res = _score_chip(inner, image, wider, keys, reader)
        res.attempts += attempts
    res.grown = grown
    return res


def _grown(chip: Chip, shape: tuple[int, int], factor: int) -> Chip | None:
    """``chip`` with its halo ``factor`` times as wide (inside the grid), or None when the
    read window cannot grow (it already reaches the grid's edge on every side)."""
    from dataclasses import replace

    r0, c0, r1, c1 = chip.core
    q0, p0, q1, p1 = chip.read
    halo = max(r0 - q0, c0 - p0, q1 - r1, p1 - c1, 1)
    _, reads = windows(np.array([r0]), np.array([c0]), (r1 - r0, c1 - c0), factor * halo, shape)
    read = box(reads[0])
    if read == chip.read:
        return None
    return replace(chip, read=read, extra=dict(chip.extra))


def _score_chip(inner: Detector, image: RegionImage, chip: Chip, keys: Sequence[str],
                reader: ChipReader | None) -> ChipResult:
    """One read of ``chip``'s window and its scores for ``keys`` (``extra_open``: objects
    cut by the window's edge that reach the core, for :class:`ContextSensitive` detectors)."""
    reader = reader or read_chip
    res = ChipResult(chip_id=chip.id, status="ok")
    img = None
    last: Exception | None = None
    for _ in range(2):
        res.attempts += 1
        try:
            img = reader(image, chip)
            last = None
            break
        except Exception as exc:  # noqa: BLE001 - GDAL and readers raise many types
            last = exc
            log.info("chip %s: read failed (%s)", chip.id, exc)
    if last is not None:
        res.status, res.error = "failed", f"{type(last).__name__}: {last}"
    elif img is None:
        res.status, res.error = "skipped", "no valid pixel"
    else:
        rs, cs = core_slice(chip)
        res.valid_m2 = image.window_area(img.valid[rs, cs], chip.core[0], chip.core[1])
        for key in keys:
            try:
                smap = inner.score_map(img, key)
            except ToolError as exc:  # an unknown concept is the program's fault
                res.unknown[key] = str(exc)
                continue
            except ImageError as exc:
                res.status, res.error = "failed", f"analysis: {exc}"
                res.queries.clear()
                break
            fg = (smap.mask & img.answer_mask)[rs, cs]
            inst = smap.instances[rs, cs] if smap.instances is not None else None
            res.queries[key] = QueryResult.of(smap.label, smap.notes, fg,
                                              np.asarray(smap.scores)[rs, cs], inst,
                                              smap.detector)
        if res.status == "ok" and res.queries and isinstance(inner, ContextSensitive):
            h, w = image.shape
            q0, p0, q1, p1 = chip.read
            cut = (q0 > 0, q1 < h, p0 > 0, p1 < w)
            core = (rs.start, cs.start, rs.stop, cs.stop)
            res.extra_open = inner.open_objects(img, core, cut, list(res.queries))
    return res


def _failed(chip: Chip, why: str, tries: int) -> ChipResult:
    return ChipResult(chip_id=chip.id, status="failed", error=why, attempts=tries)


class ChipRunner(Protocol):
    """Runs chip tasks somewhere and yields their results (in any order)."""

    name: str

    def run(self, tasks: Sequence[tuple[Chip, list[str]]]) -> Iterator[ChipResult]:
        """Results of ``tasks``; stops (abandoning the rest) at the program's deadline."""
        ...

    def close(self) -> None:
        """Release the workers."""
        ...


class InProcessRunner:
    """Chip tasks in this process, one after the other."""

    name = "in-process"

    def __init__(self, inner: Detector, image: RegionImage, reader: ChipReader | None = None) -> None:
        self.inner, self.image, self.reader = inner, image, reader

    def run(self, tasks: Sequence[tuple[Chip, list[str]]]) -> Iterator[ChipResult]:
        """Results of ``tasks`` in order."""
        for chip, keys in tasks:
            budget.check()
            yield run_chip(self.inner, self.image, chip, keys, self.reader)

    def close(self) -> None:
        """Nothing to release."""


def build_inner(spec: DetectorSpec, settings: Settings) -> Detector:
    """The per-chip detector a worker uses."""
    if isinstance(spec, str):
        from viper_rs.vision.factory import build_detector

        return build_detector(spec, settings)
    return spec


def _process_main(conn: Any, spec: DetectorSpec, settings: Settings, image: RegionImage,
                  reader: ChipReader | None) -> None:
    """A worker process: build the detector once, then answer chip tasks until told to stop."""
    inner = build_inner(spec, settings)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        chip, keys = task
        conn.send(run_chip(inner, image, chip, keys, reader))


class _Slots:
    """Scheduling shared by the worker backends: one task per worker at a time; a chip whose
    worker dies goes to a fresh worker once, then fails."""

    name = "workers"

    def __init__(self, workers: int) -> None:
        self.n = max(1, int(workers))

    def _start(self, i: int) -> None:
        raise NotImplementedError

    def _submit(self, i: int, chip: Chip, keys: list[str]) -> None:
        raise NotImplementedError

    def _wait(self, busy: list[int]) -> list[tuple[int, ChipResult | BaseException]]:
        raise NotImplementedError

    def _kill(self, i: int) -> None:
        raise NotImplementedError

    def run(self, tasks: Sequence[tuple[Chip, list[str]]]) -> Iterator[ChipResult]:
        """Results of ``tasks`` as they finish."""
        queue: deque[tuple[Chip, list[str], int]] = deque((c, k, 0) for c, k in tasks)
        held: dict[int, tuple[Chip, list[str], int]] = {}
        try:
            while queue or held:
                budget.check()
                for i in range(self.n):
                    if i not in held and queue:
                        chip, keys, tries = queue.popleft()
                        self._submit(i, chip, keys)
                        held[i] = (chip, keys, tries + 1)
                for i, out in self._wait(sorted(held)):
                    chip, keys, tries = held.pop(i)
                    if isinstance(out, ChipResult):
                        out.attempts = max(out.attempts, tries)
                        yield out
                        continue
                    why = f"worker died ({type(out).__name__}: {out})"
                    log.info("chip %s: %s", chip.id, why)
                    self._kill(i)  # a fresh worker starts with the next task
                    if tries >= MAX_WORKER_TRIES:
                        yield _failed(chip, why, tries)
                    else:
                        queue.appendleft((chip, keys, tries))
        finally:
            for i in list(held):  # abandoned (deadline, error): their results would be stale
                self._kill(i)


class WorkerDied(RuntimeError):
    """A worker process ended while it held a chip."""


class ProcessRunner(_Slots):
    """Chip tasks on local spawn processes, each with its own detector."""

    def __init__(self, spec: DetectorSpec, settings: Settings, image: RegionImage,
                 workers: int, reader: ChipReader | None = None) -> None:
        super().__init__(workers)
        import multiprocessing as mp

        self.name = f"{self.n} processes"
        self._ctx = mp.get_context("spawn")
        self._args = (spec, settings, image, reader)
        self._procs: list[Any] = [None] * self.n
        self._conns: list[Any] = [None] * self.n

    def _start(self, i: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_process_main, args=(child, *self._args), daemon=True)
        proc.start()
        child.close()
        self._procs[i], self._conns[i] = proc, parent

    def _submit(self, i: int, chip: Chip, keys: list[str]) -> None:
        if self._procs[i] is None:
            self._start(i)
        try:
            self._conns[i].send((chip, keys))
        except OSError:  # died idle: the next wait sees it
            pass

    def _wait(self, busy: list[int]) -> list[tuple[int, ChipResult | BaseException]]:
        from multiprocessing.connection import wait

        index = {}
        for i in busy:
            index[id(self._conns[i])] = i
            index[self._procs[i].sentinel] = i
        ready = wait([self._conns[i] for i in busy] + [self._procs[i].sentinel for i in busy],
                     timeout=0.5)
        out: dict[int, ChipResult | BaseException] = {}
        for r in ready:
            i = index[r if isinstance(r, int) else id(r)]
            if i in out:
                continue
            conn = self._conns[i]
            try:
                if conn.poll():
                    out[i] = conn.recv()
                    continue
            except (EOFError, OSError):
                pass
            if not self._procs[i].is_alive():
                out[i] = WorkerDied(f"exit code {self._procs[i].exitcode}")
        return list(out.items())

    def _kill(self, i: int) -> None:
        proc, conn = self._procs[i], self._conns[i]
        if proc is not None:
            proc.kill()
            proc.join(5)
            conn.close()
        self._procs[i] = self._conns[i] = None

    def close(self) -> None:
        """Stop the worker processes."""
        for i, proc in enumerate(self._procs):
            if proc is None:
                continue
            try:
                self._conns[i].send(None)
            except OSError:
                pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()
            self._conns[i].close()
            self._procs[i] = self._conns[i] = None


class RegionChipActor:
    """A Ray actor body: builds the detector once, then runs chip tasks."""

    def __init__(self, spec: DetectorSpec, settings: Settings, image: RegionImage,
                 reader: ChipReader | None) -> None:
        self.inner = build_inner(spec, settings)
        self.image, self.reader = image, reader

    def run(self, chip: Chip, keys: list[str]) -> ChipResult:
        """One chip task."""
        return run_chip(self.inner, self.image, chip, keys, self.reader)


class RayRunner(_Slots):
    """Chip tasks on Ray actors (one per CPU of the cluster unless ``workers``), on the
    cluster :func:`viper_rs.index.build.connect_ray` joined."""

    def __init__(self, spec: DetectorSpec, settings: Settings, image: RegionImage,
                 workers: int | None, reader: ChipReader | None = None,
                 address: str = "local") -> None:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 1))
        super().__init__(workers or cpus)
        self.name = f"ray({address})"
        self._actor = ray.remote(num_cpus=1, max_restarts=0)(RegionChipActor)
        self._args = (spec, settings, image, reader)
        self._actors: list[Any] = [None] * self.n
        self._refs: dict[int, Any] = {}

    def _start(self, i: int) -> None:
        self._actors[i] = self._actor.remote(*self._args)

    def _submit(self, i: int, chip: Chip, keys: list[str]) -> None:
        if self._actors[i] is None:
            self._start(i)
        self._refs[i] = self._actors[i].run.remote(chip, keys)

    def _wait(self, busy: list[int]) -> list[tuple[int, ChipResult | BaseException]]:
        import ray

        refs = [self._refs[i] for i in busy]
        done, _ = ray.wait(refs, num_returns=1, timeout=0.5)
        out: list[tuple[int, ChipResult | BaseException]] = []
        for i in busy:
            if self._refs[i] in done:
                ref = self._refs.pop(i)
                try:
                    out.append((i, ray.get(ref)))
                except Exception as exc:  # noqa: BLE001 - actor died, task error
                    out.append((i, exc))
        return out

    def _kill(self, i: int) -> None:
        import ray

        if self._actors[i] is not None:
            ray.kill(self._actors[i])
        self._actors[i] = None
        self._refs.pop(i, None)

    def close(self) -> None:
        """Stop the actors."""
        for i in range(self.n):
            self._kill(i)
