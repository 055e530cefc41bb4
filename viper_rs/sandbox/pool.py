"""Sandbox front end: limits, results, the warm worker pool and in-process execution.

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
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from viper_rs.core import budget
from viper_rs.core.config import Settings
from viper_rs.core.errors import (
    ConfigError,
    SandboxError,
    SandboxTimeout,
    ToolError,
    ValidationError,
    ViperError,
)
from viper_rs.sandbox import worker as _runtime
from viper_rs.sandbox.validate import validate_program

__all__ = ["Handler", "Limits", "Sandbox", "SandboxResult", "run_inprocess"]

log = logging.getLogger(__name__)

Handler = Callable[[str, list, dict], Any]

WORKER_PATH = Path(__file__).with_name("worker.py")
#: The whole environment a worker gets: no credentials, no PYTHON* variables.
WORKER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
#: How long a worker may take to start (and how long ``run`` waits for a free one).
STARTUP_TIMEOUT_S = 15.0
#: A worker is recycled after this many programs even if they all ended normally.
MAX_RUNS_PER_WORKER = 1000
#: Longest error message the parent keeps from a tool or a worker (characters).
MAX_ERROR_CHARS = 500
#: Largest tool result (JSON bytes) the parent sends back to a program.
MAX_REPLY_BYTES = 8 * 2**20


def _setting(name: str) -> Any:
    """The default of a ``Settings`` field (the sandbox limits' defaults live there)."""
    return Settings.model_fields[name].default


@dataclass
class Limits:
    """Resource limits for one program; the defaults are those of ``Settings.sandbox_*``."""

    wall_s: float = _setting("sandbox_wall_s")  # wall clock per program; worker killed after
    cpu_s: float = _setting("sandbox_cpu_s")  # CPU seconds per program (RLIMIT_CPU in worker)
    memory_mb: int = _setting("sandbox_memory_mb")  # address-space limit (RLIMIT_AS)
    # captured print() output; exceeding -> SandboxError
    max_output_chars: int = _setting("sandbox_max_output_chars")
    max_tool_calls: int = _setting("sandbox_max_tool_calls")  # exceeding -> SandboxError
    max_source_chars: int = 20_000  # longer program -> ValidationError
    max_result_chars: int = 1_000_000  # serialized return value larger -> SandboxError

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Limits.{name} must be a positive number, got {value!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits ``settings`` sets (its ``sandbox_*`` fields; the others default)."""
        return cls(
            wall_s=settings.sandbox_wall_s,
            cpu_s=settings.sandbox_cpu_s,
            memory_mb=settings.sandbox_memory_mb,
            max_output_chars=settings.sandbox_max_output_chars,
            max_tool_calls=settings.sandbox_max_tool_calls,
        )

    @property
    def max_message_bytes(self) -> int:
        """Largest message the parent accepts from a worker."""
        return self.max_result_chars + 12 * self.max_output_chars + 65_536

    def worker_limits(self) -> dict[str, Any]:
        """The per-program limits sent to a worker."""
        return {
            "cpu_s": self.cpu_s,
            "max_output_chars": self.max_output_chars,
            "max_tool_calls": self.max_tool_calls,
            "max_result_chars": self.max_result_chars,
            "max_message_bytes": self.max_message_bytes,
        }


@dataclass
class SandboxResult:
    """What a program returned (or why it failed), its output and its cost."""

    value: Any
    stdout: str
    error: ViperError | None
    wall_s: float
    cpu_s: float
    tool_calls: int

    @property
    def ok(self) -> bool:
        """True when the program returned a value."""
        return self.error is None


# ---------------------------------------------------------------------------------------
# Shared between the pool and in-process execution
# ---------------------------------------------------------------------------------------
def _plain_default(obj: Any) -> Any:
    """json ``default`` for handler results: numpy scalars/arrays, mappings, sets."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(obj).__name__} is not plain data")


class _Dispatcher:
    """Serves a program's tool calls with the handler; remembers the first failure.

    The handler runs under the program's deadline (``deadline`` is a ``time.monotonic``
    value, None = no wall-clock limit, as in-process).
    """

    def __init__(
        self, handler: Handler, tool_names: Sequence[str], limits: Limits,
        deadline: float | None = None,
    ) -> None:
        self.handler = handler
        self.tools = frozenset(tool_names)
        self.limits = limits
        self.deadline = deadline
        self.calls = 0
        self.error: ViperError | None = None
        self.handler_s = 0.0

    def _abort_reply(self) -> str:
        assert self.error is not None
        return json.dumps({"ok": False, "error": self.error.to_dict()})

    def _call(self, name: str, args: list, kwargs: dict) -> Any:
        if self.deadline is None:
            return self.handler(name, args, kwargs)
        with budget.deadline(self.deadline, self.limits.wall_s):
            budget.check()
            return self.handler(name, args, kwargs)

    def dispatch(self, name: Any, args: Any, kwargs: Any) -> str:
        """Call the handler; returns the JSON reply for the worker."""
        if self.error is not None:
            return self._abort_reply()
        self.calls += 1
        if self.calls > self.limits.max_tool_calls:
            self.error = SandboxError(f"tool call limit of {self.limits.max_tool_calls} exceeded")
            return self._abort_reply()
        if not isinstance(name, str) or name not in self.tools:
            self.error = ToolError(f"unknown tool {short_text(repr(name), 80)}")
            return self._abort_reply()
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            self.error = ToolError(f"malformed call of tool {name}")
            return self._abort_reply()
        started = time.monotonic()
        try:
            value = self._call(name, args, kwargs)
        except ViperError as exc:
            self.error = shorten_error(exc)
        except Exception as exc:  # noqa: BLE001 - a broken tool must not crash the parent
            log.debug("tool %s raised an unexpected exception", name, exc_info=True)
            self.error = ToolError(
                f"internal error in tool {name}: {type(exc).__name__}: "
                f"{short_text(str(exc), 200)}"
            )
        finally:
            self.handler_s += time.monotonic() - started
        if self.error is not None:
            return self._abort_reply()
        try:
            reply = json.dumps({"ok": True, "value": value}, default=_plain_default)
        except (TypeError, ValueError, RecursionError, OverflowError) as exc:
            self.error = ToolError(
                f"tool {name} returned a value that is not plain data: {short_text(str(exc), 200)}"
            )
            return self._abort_reply()
        if len(reply) > MAX_REPLY_BYTES:
            self.error = ToolError(
                f"tool {name} returned {len(reply)} bytes, more than the "
                f"{MAX_REPLY_BYTES // 2**20} MB a program may receive from one call"
            )
            return self._abort_reply()
        return reply


def short_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters (with a marker when cut)."""
    return text if len(text) <= limit else text[: max(limit - 14, 0)] + " ... (cut)"


def shorten_error(exc: ViperError) -> ViperError:
    """The same error with its message cut to MAX_ERROR_CHARS."""
    message = str(exc)
    if len(message) <= MAX_ERROR_CHARS:
        return exc
    try:
        return type(exc)(short_text(message))
    except Exception:  # noqa: BLE001 - an error class with another signature
        short = ViperError(short_text(message))
        short.type = exc.type
        return short


def _error_from_outcome(outcome: Mapping[str, Any], limits: Limits) -> ViperError:
    error = outcome.get("error") or {}
    kind = str(error.get("kind", "internal"))
    message = short_text(str(error.get("message", "program failed")))
    if kind == "memory":
        return SandboxError(f"memory limit of {limits.memory_mb} MB exceeded")
    if kind == "recursion":
        return SandboxError(f"recursion too deep: {message}")
    if kind in ("tool_arg", "aborted"):
        return ToolError(message)
    if kind == "forbidden":
        return SandboxError(f"forbidden operation: {message}")
    return SandboxError(message)


def run_inprocess(
    source: str,
    handler: Handler,
    tool_names: Sequence[str],
    image_info: dict | None = None,
    limits: Limits | None = None,
) -> SandboxResult:
    """Validate and run a program in this process, without isolation.

    Same validation, namespace, builtins and data conventions as :class:`Sandbox`, and
    the same output/tool-call/result limits, but no wall-clock, CPU or memory limits:
    for benchmarks and debugging only, never for untrusted programs.
    """
    limits = limits or Limits()
    started = time.perf_counter()
    tool_names = list(tool_names)
    try:
        validate_program(source, tool_names, max_source_chars=limits.max_source_chars)
        image = json.loads(json.dumps(image_info or {}, default=_plain_default))
    except ValidationError as exc:
        return SandboxResult(None, "", exc, time.perf_counter() - started, 0.0, 0)
    except (TypeError, ValueError) as exc:
        err = SandboxError(f"image_info is not plain data: {exc}")
        return SandboxResult(None, "", err, time.perf_counter() - started, 0.0, 0)
    dispatcher = _Dispatcher(handler, tool_names, limits)

    def call_tool(name: str, args: list, kwargs: dict) -> Any:
        plain = json.loads(json.dumps({"a": args, "k": kwargs}))
        reply = json.loads(dispatcher.dispatch(name, plain["a"], plain["k"]))
        if reply["ok"]:
            return reply["value"]
        raise _runtime.Abort("aborted", reply["error"]["message"])

    runtime = _runtime.Runtime(
        call_tool,
        max_output_chars=limits.max_output_chars,
        max_tool_calls=limits.max_tool_calls,
        max_result_chars=limits.max_result_chars,
    )
    outcome = runtime.run(source, tool_names, image)
    value, error = None, None
    if dispatcher.error is not None:
        error = dispatcher.error
    elif outcome["ok"]:
        value = json.loads(outcome["value_json"])
    else:
        error = _error_from_outcome(outcome, limits)
    return SandboxResult(
        value=value,
        stdout=outcome.get("stdout", ""),
        error=error,
        wall_s=time.perf_counter() - started,
        cpu_s=float(outcome.get("cpu_s", 0.0)),
        tool_calls=max(dispatcher.calls, int(outcome.get("tool_calls", 0))),
    )


# ---------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------
class _Gone(Exception):
    """The worker closed its pipe (exited or was killed)."""


class _Deadline(Exception):
    """The deadline passed while waiting for the worker."""


class _Protocol(Exception):
    """The worker sent something the parent does not accept."""


class _Worker:
    """One worker process and its framed pipe (used by one thread at a time)."""

    def __init__(self, memory_mb: int) -> None:
        config = json.dumps({"memory_mb": memory_mb})
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(WORKER_PATH), config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(WORKER_ENV),
            cwd="/",
            close_fds=True,
            start_new_session=True,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.pid = self.proc.pid
        self.rfd = self.proc.stdout.fileno()
        self.wfd = self.proc.stdin.fileno()
        os.set_blocking(self.wfd, False)
        self._rpoll = select.poll()
        self._rpoll.register(self.rfd, select.POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(self.wfd, select.POLLOUT)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.ready = False
        self.busy = True  # owned by a thread (starting, running); False while idle
        self.closed_by_pool = False
        self.cpu_total = 0.0
        self.runs = 0
        self.rusage: Any = None

    # -- framing ------------------------------------------------------------------------
    def send(self, text: str, deadline: float) -> None:
        data = text.encode("utf-8")
        view = memoryview(_runtime.HEADER.pack(len(data)) + data)
        while view:
            try:
                written = os.write(self.wfd, view)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # BrokenPipeError, closed fd
                raise _Gone(str(exc)) from None
            view = view[written:]
            if view:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Deadline()
                self._wpoll.poll(min(remaining, 1.0) * 1000)

    def recv(self, deadline: float, max_bytes: int) -> dict:
        header = _runtime.HEADER
        while True:
            need = header.size - len(self._buf)
            if need <= 0:
                (size,) = header.unpack_from(self._buf)
                if size > max_bytes:
                    raise _Protocol(f"worker message of {size} bytes exceeds {max_bytes}")
                need = header.size + size - len(self._buf)
                if need <= 0:
                    data = bytes(self._buf[header.size : header.size + size])
                    del self._buf[: header.size + size]
                    try:
                        message = json.loads(data)
                    except (ValueError, RecursionError) as exc:
                        raise _Protocol(f"undecodable worker message: {exc}") from None
                    if not isinstance(message, dict):
                        raise _Protocol("worker message is not an object")
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline()
            if not self._rpoll.poll(min(remaining, 1.0) * 1000):
                continue
            try:
                chunk = os.read(self.rfd, min(max(need, 4096), 1 << 20))
            except OSError as exc:
                raise _Gone(str(exc)) from None
            if not chunk:
                raise _Gone("end of output")
            self._buf += chunk

    def wait_ready(self, deadline: float) -> None:
        if self.ready:
            return
        message = self.recv(deadline, 4096)
        if message.get("op") != "ready":
            raise _Protocol(f"expected ready, got {message.get('op')!r}")
        self.cpu_total = float(message.get("cpu", 0.0))
        self.ready = True

    # -- life cycle ---------------------------------------------------------------------
    def _reap(self, block: bool) -> bool:
        """Collect the exit status; True once the process is gone."""
        if self.proc.returncode is not None:
            return True
        try:
            pid, status, rusage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.proc.returncode = -signal.SIGKILL
            return True
        if pid == 0:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.rusage = rusage
        return True

    def alive(self) -> bool:
        with self._lock:
            return not self._reap(block=False)

    def kill(self, close_pipes: bool = True) -> None:
        """SIGKILL the worker's process group, reap it and (optionally) close the pipes.

        The pipes of a worker another thread is using are left to that thread, which
        sees end of output and closes them itself (no fd is closed under its feet).
        """
        with self._lock:
            if self.proc.returncode is None:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._reap(block=True)
            if not close_pipes:
                return
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass

    def collect_exit(self, grace_s: float = 1.0) -> None:
        """After end of output: wait briefly for the exit status, then kill."""
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            with self._lock:
                if self._reap(block=False):
                    break
            time.sleep(0.002)
        self.kill()

    def cpu_since_last_run(self) -> float:
        if self.rusage is None:
            return 0.0
        return max(self.rusage.ru_utime + self.rusage.ru_stime - self.cpu_total, 0.0)


def _death_error(worker: _Worker, limits: Limits, reason: str) -> ViperError:
    code = worker.proc.returncode
    cpu = worker.cpu_since_last_run()
    if worker.closed_by_pool:
        return SandboxError("the sandbox was closed while the program was running")
    if code in (-signal.SIGPROF, -signal.SIGXCPU) or (
        code == -signal.SIGKILL and cpu >= limits.cpu_s * 0.9
    ):
        return SandboxTimeout(f"program exceeded the CPU limit of {limits.cpu_s:g} s")
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        if code == -signal.SIGKILL:
            return SandboxError("sandbox worker was killed (out of memory?)")
        return SandboxError(f"sandbox worker crashed ({name})")
    return SandboxError(f"sandbox worker exited unexpectedly (code {code}): {reason}")


class _Pool:
    """Worker bookkeeping; holds no reference to its Sandbox (so finalizers work)."""

    def __init__(self, limits: Limits, size: int) -> None:
        self.limits = limits
        self.size = size
        self.lock = threading.Lock()
        self.idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self.workers: set[_Worker] = set()
        self.pending = 0
        self.closed = False

    def _spawn(self) -> _Worker | None:
        worker = _Worker(self.limits.memory_mb)
        with self.lock:
            if not self.closed:
                self.workers.add(worker)
                return worker
        worker.kill()
        return None

    def _put_idle(self, worker: _Worker) -> None:
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
        except (OSError, _Gone, _Deadline, _Protocol) as exc:
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

    def discard(self, worker: _Worker) -> None:
        worker.kill()
        with self.lock:
            self.workers.discard(worker)

    def acquire(self) -> _Worker:
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
                    raise _Gone("worker exited while idle")
                worker.wait_ready(time.monotonic() + STARTUP_TIMEOUT_S)
            except (_Gone, _Deadline, _Protocol) as exc:
                failures += 1
                log.warning("discarding sandbox worker %d: %s", worker.pid, exc)
                self.discard(worker)
                if failures >= 3:
                    raise SandboxError(f"sandbox workers fail to start: {exc}") from None
                self.replace_async()
                continue
            return worker

    def release(self, worker: _Worker, reusable: bool) -> None:
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
                default=_plain_default,
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
        worker: _Worker,
        request: str,
        handler: Handler,
        tool_names: list[str],
        started: float,
    ) -> tuple[SandboxResult, bool]:
        limits = self.limits
        deadline = time.monotonic() + limits.wall_s
        dispatcher = _Dispatcher(handler, tool_names, limits, deadline)
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
                        raise _Deadline()
                    worker.send(reply, deadline)
                elif op == "done":
                    outcome = message
                    break
                else:
                    raise _Protocol(f"unexpected message {op!r}")
        except _Deadline:
            worker.kill()
            error = SandboxTimeout(
                f"program exceeded the wall-clock limit of {limits.wall_s:g} s"
                + (" (tool calls included)" if dispatcher.calls else "")
            )
        except _Gone as exc:
            worker.collect_exit()
            error = _death_error(worker, limits, str(exc))
        except _Protocol as exc:
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
            error = _error_from_outcome(outcome, limits)
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
