"""The warm pool of worker processes and :class:`Sandbox`, which runs programs in them.

A :class:`Sandbox` keeps ``workers`` pre-started worker processes (``worker.py`` run with
``python -I -S`` in a scrubbed environment). ``run`` validates the program, takes an idle
worker, sends it the program and serves its tool calls with the caller's handler until
the program finishes, the wall clock runs out (worker killed) or the worker dies. A
worker is reused only after a program that ended normally (a value or an ordinary
exception); after any limit, crash or kill it is discarded and replaced in the
background.

``Limits.wall_s`` covers everything a program causes, its tool calls included: the
handler runs inside a :func:`viper_rs.core.budget.deadline`, so tools that call
:func:`viper_rs.core.budget.check` between steps stop at the limit, and a program whose
deadline passes during a tool call is killed as on any other timeout.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from viper_rs.core.errors import (
    ConfigError,
    SandboxError,
    SandboxTimeout,
    ValidationError,
    ViperError,
)
from viper_rs.sandbox.dispatch import Dispatcher, Handler, error_from_outcome, plain_default
from viper_rs.sandbox.limits import Limits, SandboxResult
from viper_rs.sandbox.process import (
    WorkerDeadline,
    WorkerGone,
    WorkerProcess,
    WorkerProtocolError,
    death_error,
)
from viper_rs.sandbox.validate import validate_program

__all__ = ["Sandbox"]

log = logging.getLogger(__name__)

#: How long a worker may take to start (and how long ``run`` waits for a free one).
STARTUP_TIMEOUT_S = 15.0
#: A worker is recycled after this many programs even if they all ended normally.
MAX_RUNS_PER_WORKER = 1000


class _Pool:
    """Worker bookkeeping; holds no reference to its Sandbox (so finalizers work)."""

    def __init__(self, limits: Limits, size: int) -> None:
        self.limits = limits
        self.size = size
        self.lock = threading.Lock()
        self.idle: queue.SimpleQueue[WorkerProcess] = queue.SimpleQueue()
        self.workers: set[WorkerProcess] = set()
        self.pending = 0
        self.closed = False

    def _spawn(self) -> WorkerProcess | None:
        worker = WorkerProcess(self.limits.memory_mb)
        with self.lock:
            if not self.closed:
                self.workers.add(worker)
                return worker
        worker.kill()
        return None

    def _put_idle(self, worker: WorkerProcess) -> None:
        with self.lock:
            if self.closed:
                closed = True
            else:
                closed = False
                worker.busy = False
                self.idle.put(worker)
        if closed:
            self.discard(worker)

    def fill(self) -> None:
        for _ in range(self.size):
            worker = self._spawn()
            if worker is not None:
                self._put_idle(worker)

    def _replace(self) -> None:
        worker = None
        try:
            worker = self._spawn()
            if worker is not None:
                worker.wait_ready(time.monotonic() + STARTUP_TIMEOUT_S)
                self._put_idle(worker)
                worker = None
        except (OSError, WorkerGone, WorkerDeadline, WorkerProtocolError) as exc:
            log.warning("could not start a sandbox worker: %s", exc)
        finally:
            with self.lock:
                self.pending -= 1
            if worker is not None:
                self.discard(worker)

    def replace_async(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.pending += 1
        threading.Thread(target=self._replace, name="viper-sandbox-spawn", daemon=True).start()

    def discard(self, worker: WorkerProcess) -> None:
        worker.kill()
        with self.lock:
            self.workers.discard(worker)

    def acquire(self) -> WorkerProcess:
        """Take an idle, ready worker (waiting while all workers are busy)."""
        failures = 0
        while True:
            if self.closed:
                raise SandboxError("sandbox is closed")
            try:
                worker = self.idle.get(timeout=0.05)
            except queue.Empty:
                with self.lock:
                    short = len(self.workers) + self.pending < self.size
                if not short:
                    continue  # every worker is busy: wait for one to come back
                try:
                    worker = self._spawn()
                except OSError as exc:
                    failures += 1
                    log.warning("could not start a sandbox worker: %s", exc)
                    if failures >= 3:
                        raise SandboxError(f"cannot start a sandbox worker: {exc}") from None
                    continue
                if worker is None:
                    continue
            with self.lock:
                worker.busy = True
            try:
                if not worker.alive():
                    raise WorkerGone("worker exited while idle")
                worker.wait_ready(time.monotonic() + STARTUP_TIMEOUT_S)
            except (WorkerGone, WorkerDeadline, WorkerProtocolError) as exc:
                failures += 1
                log.warning("discarding sandbox worker %d: %s", worker.pid, exc)
                self.discard(worker)
                if failures >= 3:
                    raise SandboxError(f"sandbox workers fail to start: {exc}") from None
                self.replace_async()
                continue
            return worker

    def release(self, worker: WorkerProcess, reusable: bool) -> None:
        """Return a worker after a run: back to the pool, or killed and replaced."""
        worker.runs += 1
        if reusable and worker.runs < MAX_RUNS_PER_WORKER and not self.closed:
            self._put_idle(worker)
            return
        self.discard(worker)
        self.replace_async()

    def pids(self) -> list[int]:
        with self.lock:
            return sorted(w.pid for w in self.workers)

    def shutdown(self) -> None:
        with self.lock:
            self.closed = True
            workers = [(w, w.busy) for w in self.workers]
            self.workers.clear()
        for worker, busy in workers:
            worker.closed_by_pool = True
            worker.kill(close_pipes=not busy)
        while True:
            try:
                self.idle.get_nowait()
            except queue.Empty:
                break


class Sandbox:
    """Runs untrusted programs in a pool of isolated worker processes.

    Thread-safe: several threads may call :meth:`run` at once (each run holds one
    worker). Use as a context manager or call :meth:`close`; remaining workers are also
    killed when the Sandbox is garbage-collected or the interpreter exits.
    """

    def __init__(self, limits: Limits | None = None, workers: int = 2) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        self.limits = limits or Limits()
        self._pool = _Pool(self.limits, workers)
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self._pool.fill()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill and reap every worker; later runs raise SandboxError."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._pool.closed

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and tests)."""
        return self._pool.pids()

    def run(
        self,
        source: str,
        handler: Handler,
        tool_names: Sequence[str],
        image_info: dict | None = None,
    ) -> SandboxResult:
        """Validate and run ``execute_command(image)`` of ``source`` in a worker.

        Never raises for faults of the program or the handler: they are returned in
        ``result.error`` (ValidationError, SandboxError, SandboxTimeout, ToolError or the
        handler's own ViperError). Raises SandboxError only when the sandbox is closed.
        """
        if self._pool.closed:
            raise SandboxError("sandbox is closed")
        limits = self.limits
        started = time.perf_counter()
        tool_names = list(tool_names)

        def failed(error: ViperError) -> SandboxResult:
            return SandboxResult(None, "", error, time.perf_counter() - started, 0.0, 0)

        try:
            validate_program(source, tool_names, max_source_chars=limits.max_source_chars)
        except ValidationError as exc:
            return failed(exc)
        try:
            request = json.dumps(
                {
                    "op": "run",
                    "source": source,
                    "tools": tool_names,
                    "image": image_info or {},
                    "limits": limits.worker_limits(),
                },
                default=plain_default,
            )
        except (TypeError, ValueError) as exc:
            return failed(SandboxError(f"image_info is not plain data: {exc}"))
        try:
            worker = self._pool.acquire()
        except SandboxError as exc:
            if self._pool.closed:
                raise
            return failed(exc)

        reusable = False
        try:
            result, reusable = self._execute(worker, request, handler, tool_names, started)
        finally:
            self._pool.release(worker, reusable)
        return result

    def _execute(
        self,
        worker: WorkerProcess,
        request: str,
        handler: Handler,
        tool_names: list[str],
        started: float,
    ) -> tuple[SandboxResult, bool]:
        limits = self.limits
        deadline = time.monotonic() + limits.wall_s
        dispatcher = Dispatcher(handler, tool_names, limits, deadline)
        error: ViperError | None = None
        outcome: dict[str, Any] = {}
        try:
            worker.send(request, deadline)
            while True:
                message = worker.recv(deadline, limits.max_message_bytes)
                op = message.get("op")
                if op == "call":
                    reply = dispatcher.dispatch(
                        message.get("name"), message.get("args"), message.get("kwargs")
                    )
                    if isinstance(dispatcher.error, SandboxTimeout) or (
                        time.monotonic() > deadline
                    ):
                        raise WorkerDeadline()
                    worker.send(reply, deadline)
                elif op == "done":
                    outcome = message
                    break
                else:
                    raise WorkerProtocolError(f"unexpected message {op!r}")
        except WorkerDeadline:
            worker.kill()
            error = SandboxTimeout(
                f"program exceeded the wall-clock limit of {limits.wall_s:g} s"
                + (" (tool calls included)" if dispatcher.calls else "")
            )
        except WorkerGone as exc:
            worker.collect_exit()
            error = death_error(worker, limits, str(exc))
        except WorkerProtocolError as exc:
            worker.kill()
            log.warning("sandbox worker %d: %s", worker.pid, exc)
            error = SandboxError(f"sandbox protocol error: {exc}")

        wall = time.perf_counter() - started
        if error is not None:
            return (
                SandboxResult(None, "", error, wall, worker.cpu_since_last_run(),
                              dispatcher.calls),
                False,
            )  # fmt: skip

        worker.cpu_total = float(outcome.get("cpu_total", worker.cpu_total))
        stdout = outcome.get("stdout", "")
        stdout = stdout[: limits.max_output_chars] if isinstance(stdout, str) else ""
        value = None
        if dispatcher.error is not None:
            error = dispatcher.error
        elif outcome.get("ok"):
            value = outcome.get("value")
        else:
            error = error_from_outcome(outcome, limits)
        reusable = not outcome.get("fatal", True)
        result = SandboxResult(
            value=value,
            stdout=stdout,
            error=error,
            wall_s=wall,
            cpu_s=float(outcome.get("cpu_s", 0.0)),
            tool_calls=dispatcher.calls,
        )
        return result, reusable
