"""*Ask about this area* in a worker process: the budget check before it starts, the worker
(its own agent and detector, a memory limit, a wall-clock limit), its progress, Cancel, and
what the app says when the worker dies.

An area question can read many chips at a fine resolution; run in the app's process it once
grew to 14 GB and was killed by the kernel with the app. Here it never runs in the app's
process:

1. :func:`plan_area` (in the app's process, instant): open the area's working grid, estimate
   its cost and refuse past the app's budget (:class:`AreaBudget`) with the estimate and the
   way out. The plan carries the worker's limits, taken from the same budget.
2. :func:`run_area_job` spawns a worker process (``spawn``: a fresh interpreter, no state
   shared with the app) that builds its own agent, answers, writes the files and sends the
   :class:`~viper_rs.ui.area.AreaView` back. Its memory is bounded twice: ``RLIMIT_DATA``
   in the worker (an allocation past it fails with MemoryError, which the worker reports;
   unlike ``RLIMIT_AS`` it does not count the address space torch maps and never touches:
   with the BuildingNet agent loaded a process maps 3.5 GB for 0.9 GB of data, and under
   ``RLIMIT_AS`` = 3 GB ``import torch`` fails) and a watchdog in the app's process that adds up the resident memory of the
   worker and its children (the sandbox worker) and kills them all past the limit. The same
   loop kills them at the wall-clock limit and on Cancel.
3. :class:`AreaJobs` knows the running workers (one per browser session), so that Cancel and
   the app's shutdown can stop them.

Nothing here imports gradio.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.ui.area import (
    AreaView,
    area_geojson,
    area_map_data,
    chip_estimate,
    chip_table,
    chip_values,
    region_lonlats,
)

if TYPE_CHECKING:  # the region package loads shapely and rasterio: imported in the worker
    from viper_rs.core.detector import Detector
    from viper_rs.core.geo import GeoImage
    from viper_rs.region.image import RegionImage
    from viper_rs.tiling.chips import Chip

log = logging.getLogger(__name__)

GIB = 1024 ** 3
#: Resident memory (bytes) one area question may use (the worker and its sandbox). The
#: machine has 24 GiB shared by the app (about 1.5 GiB with its models and sandbox), the
#: system and other work; one area question runs at a time, so a quarter of the machine.
AREA_MEMORY_BYTES = 6 * GIB
#: Wall-clock limit of one area question (seconds), worker start-up included.
AREA_TIME_S = 600.0
#: The resolutions (m/px) an area question may be read at.
MIN_PIXEL_M, MAX_PIXEL_M = 0.01, 1000.0
#: How often the app's process looks at a running worker (seconds).
POLL_S = 0.2
#: Seconds a worker is given to exit after its result arrived, before it is killed.
EXIT_GRACE_S = 5.0

#: Progress callback: (fraction 0-1, what is happening).
Progress = Callable[[float, str], None]


class AreaBudgetError(InputError):
    """An area question refused before it starts: its estimated cost is past the app's
    budget. The message gives the estimate and the way out."""


@dataclass(frozen=True)
class AreaBudget:
    """What one area question in the app may cost: at most ``max_chips`` chips (the chips
    table and map stay readable), an estimated peak of ``memory_bytes`` for every process
    of the run and ``time_s`` seconds (:mod:`viper_rs.region.cost`); the worker runs under
    the same memory and time as hard limits."""

    max_chips: int
    memory_bytes: int = AREA_MEMORY_BYTES
    time_s: float = AREA_TIME_S


@dataclass
class AreaPlan:
    """An area question that fits the budget: its region (working grid and sources), its
    size, and the limits its worker runs under."""

    image: RegionImage
    chips: int
    pixels: int
    memory_bytes: int
    time_s: float
    estimate: str  # one line for the progress display and the logs


def plan_area(folders: Sequence[Path], bbox: Sequence[float], settings: Settings,
              chip_m: float, budget: AreaBudget, pixel_m: float | None = None,
              detector: str | Detector | None = None) -> AreaPlan:
    """The one call that decides whether an area question may start (instant, nothing is
    read): the area's region over ``folders`` inside ``bbox`` (W,S,E,N; its own sources set
    the working grid) at ``pixel_m`` metres per pixel (None: the sources'), its estimated
    cost with ``detector`` (a name or a built detector; None: ``settings.detector``) from
    :func:`viper_rs.region.estimate_region`, and the worker's limits. AreaBudgetError (an
    InputError) with the estimate and the way out when it is past ``budget``; InputError
    when the box meets no source."""
    from viper_rs.core.cost import Budget
    from viper_rs.region import RegionTooLarge, check_budget, estimate_region, open_region

    det = detector if detector is not None else settings.detector
    image = open_region(list(folders), list(bbox), pixel_m=pixel_m)
    cost = estimate_region(image, det, chip_m=chip_m, settings=settings)
    estimate = cost.describe()
    if cost.chips > budget.max_chips:
        raise AreaBudgetError(
            f"that area is {estimate}; the app asks about at most {budget.max_chips:,} chips "
            f"at a time. {_WAYS_OUT}")
    try:
        check_budget(cost, Budget(memory_bytes=budget.memory_bytes, seconds=budget.time_s),
                     image=image, detector=det, chip_m=chip_m, settings=settings)
    except RegionTooLarge as exc:
        coarser = (f"set Resolution (m/px) to {exc.fit_text} or coarser (now "
                   f"{cost.pixel_m:.3g})" if exc.fit_text else "set a coarser Resolution (m/px)")
        raise AreaBudgetError(
            f"that area is over the app's budget for one question ({'; '.join(exc.over)}): "
            f"{estimate}. Zoom the map in or type a smaller box, {coarser}, or search the "
            "index for the places worth asking about (on the command line: viper-rs region "
            "--index PATH --top K reads only those)") from None
    return AreaPlan(image=image, chips=cost.chips, pixels=cost.pixels,
                    memory_bytes=budget.memory_bytes, time_s=budget.time_s, estimate=estimate)


#: The ways out of an area past the app's chip limit.
_WAYS_OUT = ("Zoom the map in or type a smaller box, set a coarser Resolution (m/px), or search "
             "the index for the places worth asking about (on the command line: viper-rs "
             "region --index PATH --top K reads only those)")


# ---------------------------------------------------------------------------- the worker
@dataclass
class AreaRequest:
    """What the worker is sent: the question, the planned region, the settings (the app's
    with the panel's on top), where to write the files, its memory limit, and how the app
    words library texts (a module-level function: it travels by name)."""

    question: str
    image: RegionImage
    bbox: list[float]
    settings: Settings
    chip_m: float
    folder: Path
    memory_bytes: int
    app_text: Callable[[str], str] = str


@dataclass
class AreaOutcome:
    """How a worker ended: ``status`` is ``done`` (``view`` holds the answer), ``error``
    (``error`` holds what the question raised), ``cancelled``, ``memory`` (past its memory
    limit), ``timeout`` (past its wall-clock limit) or ``crashed`` (it died)."""

    status: str
    view: AreaView | None = None
    error: BaseException | None = None
    chips_done: int = 0
    chips_total: int = 0
    seconds: float = 0.0
    peak_bytes: int = 0
    exitcode: int | None = None


def area_view(image: RegionImage, answer: Any, report: Any, bbox: list[float], folder: Path,
              app_text: Callable[[str], str] = str) -> AreaView:
    """The AreaView of an answered area question: message, chips table, GeoJSON and GPKG
    (written in ``folder``) and what the area map draws (``map_data``; the app adds the
    pictures and makes the map)."""
    from viper_rs.ui.evidence import (
        answer_markdown,
        escape_markdown,
        evidence_geojson,
        write_evidence,
    )

    chips = list(report)
    message = answer_markdown(answer, app_text)
    cov = report.coverage
    ok = sum(1 for c in chips if c["status"] == "ok")
    message += (f"\n\n*{ok} of {len(chips)} chips of the area read; "
                f"{100 * float(cov.get('share', 0)):.0f} % of it scanned.*")
    if answer.error is not None:
        return AreaView(message, answer=answer, report=report, bbox=bbox,
                        rows=chip_table(chips, [{"objects": 0, "area_m2": 0.0}] * len(chips)))
    values = chip_values(chips, answer.regions, region_lonlats(image, answer.regions))
    regions_fc = evidence_geojson(image, answer)
    geojson = area_geojson(chips, values, regions_fc, answer.question or "",
                           answer.answer or "")
    files: list[str] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "area.geojson"
        path.write_text(json.dumps(geojson), encoding="utf-8")
        files = [str(path)] + [str(p) for p in write_evidence(image, answer, folder)
                               if p.suffix == ".gpkg"]
    except Exception as exc:  # noqa: BLE001 - the files are extra; the answer stands
        log.exception("could not write the area's files")
        message += f"\n- The files could not be written: {escape_markdown(str(exc))}"
    by = "objects" if answer.regions and not isinstance(answer.value, float) else "area_m2"
    return AreaView(message, answer=answer, report=report, rows=chip_table(chips, values),
                    geojson=geojson, files=files, bbox=bbox,
                    map_data=area_map_data(chips, values, regions_fc, bbox, by=by))


def _limit_memory(limit: int) -> None:
    """RLIMIT_DATA of this process (its heap and private writable mappings) to ``limit``."""
    import resource

    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    except (ValueError, OSError, AttributeError):
        log.warning("could not limit the area worker's memory with RLIMIT_DATA")


def _watch_parent(parent: int) -> None:
    """Exit at once when the app's process is gone (the worker is never left running)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def _worker_main(conn: Any, request: AreaRequest) -> None:
    """The worker: answer ``request`` and send ``("done", AreaView)``, or ``("error", exc)``;
    ``("progress", done, total)`` and ``("stage", text)`` on the way."""
    lock = threading.Lock()

    def send(*message: Any) -> None:
        with lock:
            conn.send(message)

    try:
        from viper_rs.agent import Agent
        from viper_rs.region import RegionOptions, ask_region
        from viper_rs.region.chips import read_chip

        settings = request.settings
        total = chip_estimate(request.image, request.chip_m)
        send("stage", "Loading the detector and planner")
        agent = Agent(settings, detector=settings.detector)
        seen: set[str] = set()  # chips read in this pass over the area
        state = {"pass": 1, "last": None}

        def reader(image: RegionImage, chip: Chip) -> GeoImage | None:
            # A pass (the area's statistics, each query's detection) reads the chips in
            # order, a chip maybe twice (a wider context): an earlier chip starts a pass.
            with lock:
                if state["last"] is not None and tuple(chip.index) < state["last"]:
                    seen.clear()
                    state["pass"] += 1
                state["last"] = tuple(chip.index)
                fresh = chip.id not in seen
                seen.add(chip.id)
                done, number = len(seen), state["pass"]
            if fresh:
                send("progress", done, total, number)
            return read_chip(image, chip)

        try:
            send("stage", "Planning the question")
            answer, report = ask_region(
                request.image, request.question,
                RegionOptions(chip_m=request.chip_m, detector=agent.detector, settings=settings,
                              reader=reader), agent=agent)
            send("stage", "Drawing the map and writing the files")
            view = area_view(request.image, answer, report, request.bbox, request.folder,
                             request.app_text)
        finally:
            agent.close()
        send("done", view)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the app
        try:
            send("error", exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            send("error", RuntimeError(f"{type(exc).__name__}: {exc}"))


def worker(argv: Sequence[str]) -> int:
    """Entry point of the worker process (``python -m viper_rs.ui.area_jobs IN OUT``): read
    one :class:`AreaRequest` from pipe ``IN``, answer it on pipe ``OUT``."""
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal: the app stops us
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                     name="viper-area-parent").start()
    source = Connection(int(argv[0]), writable=False)
    try:
        request = source.recv()
    finally:
        source.close()
    _limit_memory(request.memory_bytes)
    conn = Connection(int(argv[1]), readable=False)
    try:
        _worker_main(conn, request)
    finally:
        conn.close()
    return 0


def _start_worker(request: AreaRequest) -> tuple[subprocess.Popen, Any]:
    """The worker process, sent ``request``; and the end of the pipe its messages come on."""
    from multiprocessing.connection import Connection

    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "viper_rs.ui.area_jobs", str(req_r), str(res_w)],
            pass_fds=(req_r, res_w), stdin=subprocess.DEVNULL)
    except BaseException:
        for fd in (req_r, req_w, res_r, res_w):
            os.close(fd)
        raise
    os.close(req_r)
    os.close(res_w)
    receive = Connection(res_r, writable=False)
    to_worker = Connection(req_w, readable=False)
    try:
        to_worker.send(request)
    except OSError:
        pass  # the worker died at once: seen as a crash below
    finally:
        to_worker.close()
    return proc, receive


def process_tree(pid: int) -> list[Any]:
    """The psutil Processes of ``pid`` and all its descendants (those still alive)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(procs: Sequence[Any]) -> int:
    """Resident memory (bytes) of ``procs`` added up."""
    import psutil

    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def kill_procs(procs: Sequence[Any]) -> None:
    """SIGKILL ``procs`` (psutil Processes: a process that is gone, or whose pid was reused,
    is left alone) and wait for those that are not this process's children to go (children
    are reaped by whoever started them)."""
    import psutil

    me = os.getpid()
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    others = []
    for p in procs:
        try:
            if p.ppid() != me:
                others.append(p)
        except psutil.Error:
            pass
    psutil.wait_procs(others, timeout=3)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (the sandbox workers run in sessions of their
    own, so a process group would miss them)."""
    kill_procs(process_tree(pid))


class _Job:
    """One running worker, as :class:`AreaJobs` knows it."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.pid: int | None = None


class AreaJobs:
    """The running area questions by key (the browser session): start one, cancel one, stop
    them all (the app's shutdown)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._closed = False

    def running(self, key: str) -> bool:
        """Whether session ``key`` has an area question running."""
        with self._lock:
            return key in self._jobs

    def cancel(self, key: str) -> bool:
        """Stop session ``key``'s area question (its worker is killed); False when it has
        none running."""
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            return False
        job.cancel.set()
        return True

    def stop_all(self) -> None:
        """Kill every worker now and refuse new ones (the app is stopping). Takes no lock a
        running question may hold, so it is safe in a signal handler."""
        self._closed = True
        for job in list(self._jobs.values()):
            job.cancel.set()
            if job.pid is not None:
                try:
                    kill_tree(job.pid)
                except Exception:  # noqa: BLE001 - stopping goes on with the others
                    log.exception("could not kill area worker %s", job.pid)

    def pids(self) -> list[int]:
        """Process ids of the running workers (for monitoring and tests)."""
        with self._lock:
            return [j.pid for j in self._jobs.values() if j.pid is not None]

    def run(self, key: str, request: AreaRequest, time_s: float,
            progress: Progress | None = None) -> AreaOutcome:
        """Answer ``request`` in a worker for session ``key`` (one at a time per session)
        within ``time_s`` seconds and ``request.memory_bytes`` of memory."""
        job = _Job()
        with self._lock:
            if self._closed:
                return AreaOutcome("cancelled")
            if key in self._jobs:
                raise InputError("an area question is already running in this session; "
                                 "wait for it or cancel it")
            self._jobs[key] = job
        try:
            return run_area_job(request, time_s, progress, job)
        finally:
            with self._lock:
                self._jobs.pop(key, None)


def run_area_job(request: AreaRequest, time_s: float, progress: Progress | None = None,
                 job: _Job | None = None, poll_s: float = POLL_S) -> AreaOutcome:
    """Run ``request`` in a spawned worker and wait for it, reporting progress (chips done
    of the total, the time left) to ``progress``. The worker (and its children) is killed
    past ``request.memory_bytes`` of resident memory, past ``time_s`` seconds, or when
    ``job.cancel`` is set."""
    step = progress or (lambda fraction, what: None)
    job = job or _Job()
    t0 = time.monotonic()
    step(0.05, "Starting the area worker")
    proc, receive = _start_worker(request)
    job.pid = proc.pid
    log.info("area worker %d started: %r (limits %.1f GiB, %g s)", proc.pid,
             request.question[:80], request.memory_bytes / GIB, time_s)
    outcome: AreaOutcome | None = None
    done = total = 0
    peak = 0
    first_chip: float | None = None  # when the current pass over the chips began
    current_pass = 0
    tree: list[Any] = []  # the worker and its children, as last seen
    try:
        while outcome is None:
            if job.cancel.is_set():
                outcome = AreaOutcome("cancelled")
                break
            if time.monotonic() - t0 > time_s:
                outcome = AreaOutcome("timeout")
                break
            tree = process_tree(proc.pid) or tree
            rss = tree_rss(tree)
            peak = max(peak, rss)
            if rss > request.memory_bytes:
                outcome = AreaOutcome("memory")
                break
            try:
                ready = receive.poll(poll_s)
                message = receive.recv() if ready else None
            except (EOFError, OSError):
                _wait(proc, EXIT_GRACE_S)
                outcome = AreaOutcome("cancelled" if job.cancel.is_set() else "crashed")
                break
            if message is None:
                if proc.poll() is not None:
                    outcome = AreaOutcome("cancelled" if job.cancel.is_set() else "crashed")
                continue
            kind = message[0]
            if kind == "progress":
                done, total, number = (int(v) for v in message[1:4])
                now = time.monotonic()
                if number != current_pass or first_chip is None:
                    current_pass, first_chip = number, now
                which = f", pass {number}" if number > 1 else ""
                step(0.1 + 0.85 * min((done - 1) / max(total, 1), 1.0),
                     f"Reading chips ({done}/{total}{which})"
                     f"{_eta(now - first_chip, done, total)}")
            elif kind == "stage":
                step(0.95 if "map" in message[1] else 0.08, str(message[1]))
            elif kind == "done":
                outcome = AreaOutcome("done", view=message[1])
            elif kind == "error":
                error = message[1]
                outcome = AreaOutcome("memory" if is_memory_error(error) else "error",
                                      error=error)
    finally:
        if outcome is not None and outcome.status in ("done", "error"):
            _wait(proc, EXIT_GRACE_S)  # it exits by itself once it has sent its result
        # Whatever is left of the worker and its children (a sandbox whose worker died is
        # no longer its child: it was seen in the tree before) is killed.
        kill_procs([*process_tree(proc.pid), *tree])
        _wait(proc, EXIT_GRACE_S)
        receive.close()
    outcome.chips_done, outcome.chips_total = done, total
    outcome.seconds = time.monotonic() - t0
    outcome.peak_bytes = peak
    outcome.exitcode = proc.returncode
    log.info("area worker %d: %s in %.1f s (%d/%d chips, peak %.2f GiB, exit %s)", proc.pid,
             outcome.status, outcome.seconds, done, total, peak / GIB, proc.returncode)
    return outcome


def _wait(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def is_memory_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` says an allocation failed (Python's MemoryError, or a library's own
    words for it, e.g. torch's "can't allocate memory", or the dynamic loader's when a
    compiled module cannot be mapped under the memory limit)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    if isinstance(exc, ImportError):
        return "failed to map segment" in text or "cannot allocate memory" in text
    return isinstance(exc, (RuntimeError, OSError)) and (
        "allocate memory" in text or "out of memory" in text or "bad_alloc" in text)


def _eta(elapsed: float, started: int, total: int) -> str:
    """", about N s left" of a pass over ``total`` chips whose ``started``-th chip began
    ``elapsed`` seconds after its first ("" until one chip is done)."""
    finished = started - 1
    if finished <= 0 or started > total or elapsed <= 0:
        return ""
    left = elapsed / finished * (total - finished)
    if left < 90:
        return f", about {max(1, math.ceil(left))} s left"
    return f", about {math.ceil(left / 60)} min left"


def outcome_problem(outcome: AreaOutcome, request: AreaRequest, time_s: float) -> str | None:
    """What the app says, in plain words, when a worker did not answer (None when it did or
    raised an error of its own, which the caller words)."""
    chips = (f" while reading chip {outcome.chips_done} of {outcome.chips_total}"
             if outcome.chips_total else "")
    if outcome.status == "cancelled":
        return (f"Cancelled: the area question was stopped{chips} and its worker ended. "
                "Nothing was kept; ask again, or about a smaller area.")
    if outcome.status == "memory":
        return (f"Stopped: the area question needed more than its memory limit of "
                f"{request.memory_bytes / GIB:.1f} GB{chips}, so its worker was ended. The app "
                "is still running: ask about a smaller area, or search the index for the "
                "places worth asking about.")
    if outcome.status == "timeout":
        return (f"Stopped: the area question took longer than its limit of "
                f"{_duration(time_s)}{chips}, so its worker was ended. The app is still "
                "running: ask about a smaller area, or search the index for the places "
                "worth asking about.")
    if outcome.status == "crashed":
        how = _exit_words(outcome.exitcode)
        return (f"The area question's worker stopped unexpectedly ({how}){chips}; no answer "
                "came back. The app is still running and can answer the next question; "
                "the details are in its log.")
    return None


def _duration(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def _exit_words(code: int | None) -> str:
    if code is None:
        return "it did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return f"killed by {name}, perhaps by the system for lack of memory"
        return f"killed by {name}"
    return f"exit code {code}"


if __name__ == "__main__":
    # Run the imported module's worker: the request's classes are that module's.
    from viper_rs.ui.area_jobs import worker as _worker

    sys.exit(_worker(sys.argv[1:]))
