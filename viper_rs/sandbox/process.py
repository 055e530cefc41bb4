"""One sandbox worker process seen from the parent: start-up, the framed pipe, kill, reap
and the error its death means.

The worker is ``worker.py`` run as a script with ``python -I -S`` in a scrubbed environment.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from viper_rs.core.errors import SandboxError, SandboxTimeout, ViperError
from viper_rs.sandbox import worker as _runtime
from viper_rs.sandbox.limits import Limits

__all__ = ["WorkerDeadline", "WorkerGone", "WorkerProcess", "WorkerProtocolError", "death_error"]

WORKER_PATH = Path(__file__).with_name("worker.py")
#: The whole environment a worker gets: no credentials, no PYTHON* variables.
WORKER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


class WorkerGone(Exception):
    """The worker closed its pipe (exited or was killed)."""


class WorkerDeadline(Exception):
    """The deadline passed while waiting for the worker."""


class WorkerProtocolError(Exception):
    """The worker sent something the parent does not accept."""


class WorkerProcess:
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
                raise WorkerGone(str(exc)) from None
            view = view[written:]
            if view:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WorkerDeadline()
                self._wpoll.poll(min(remaining, 1.0) * 1000)

    def recv(self, deadline: float, max_bytes: int) -> dict:
        header = _runtime.HEADER
        while True:
            need = header.size - len(self._buf)
            if need <= 0:
                (size,) = header.unpack_from(self._buf)
                if size > max_bytes:
                    raise WorkerProtocolError(f"worker message of {size} bytes exceeds {max_bytes}")
                need = header.size + size - len(self._buf)
                if need <= 0:
                    data = bytes(self._buf[header.size : header.size + size])
                    del self._buf[: header.size + size]
                    try:
                        message = json.loads(data)
                    except (ValueError, RecursionError) as exc:
                        raise WorkerProtocolError(f"undecodable worker message: {exc}") from None
                    if not isinstance(message, dict):
                        raise WorkerProtocolError("worker message is not an object")
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDeadline()
            if not self._rpoll.poll(min(remaining, 1.0) * 1000):
                continue
            try:
                chunk = os.read(self.rfd, min(max(need, 4096), 1 << 20))
            except OSError as exc:
                raise WorkerGone(str(exc)) from None
            if not chunk:
                raise WorkerGone("end of output")
            self._buf += chunk

    def wait_ready(self, deadline: float) -> None:
        if self.ready:
            return
        message = self.recv(deadline, 4096)
        if message.get("op") != "ready":
            raise WorkerProtocolError(f"expected ready, got {message.get('op')!r}")
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


def death_error(worker: WorkerProcess, limits: Limits, reason: str) -> ViperError:
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
