"""Sandbox worker: runs validated untrusted programs, one at a time, in its own process.

Standard library only, so that ``python -I -S worker.py`` starts in milliseconds and the
process holds no models, credentials or third-party code. Run as a script it speaks a
length-prefixed JSON protocol on stdin/stdout:

* worker -> parent ``{"op": "ready", "pid", "cpu"}`` once, after limits are in place;
* parent -> worker ``{"op": "run", "source", "tools", "image", "limits"}``;
* worker -> parent ``{"op": "call", "name", "args", "kwargs"}`` for every tool call,
  answered by ``{"ok": true, "value"}`` or ``{"ok": false, "error": {...}}`` (abort);
* worker -> parent ``{"op": "done", ...outcome}`` when the program has finished;
* parent -> worker ``{"op": "exit"}`` (or end of input) ends the worker.

A worker comes back clean after every program: the program's namespace, value and
exception are dropped and a garbage collection runs (still under the program's CPU timer
and audit hook, so nothing the program left behind runs outside them); then the worker
checks that its memory really came back (:class:`_Cleanliness`) and otherwise reports
the outcome as ``fatal``, so that the parent replaces it before the next program.

Imported as a module it provides the same runtime (namespace, builtins, region views,
data conventions) for in-process execution, garbage collection included.
"""

from __future__ import annotations

import builtins
import gc
import json
import math
import mmap
import os
import resource
import signal
import struct
import sys
import time
from types import MappingProxyType

TYPE_CHECKING = False
if TYPE_CHECKING:  # keep worker start-up free of typing imports
    from collections.abc import Callable
    from typing import Any

PROGRAM_FILENAME = "<program>"
HEADER = struct.Struct(">I")
MAX_VALUE_DEPTH = 64
MAX_ERROR_CHARS = 1000
DEFAULT_RECURSION_LIMIT = 400
_FUTURE_ANNOTATIONS = 0x1000000  # __future__.annotations.compiler_flag

# Clean-worker check, run after every program that did not already end the worker (the
# program's garbage has been collected by then). Either rule -> outcome ``fatal`` -> the
# parent replaces the worker instead of reusing it.
#: More pymalloc blocks (small objects) than the start-up baseline plus this many means
#: something the program built is still reachable: recycle. 200,000 blocks is roughly
#: 10 MB of small objects; a trivial program leaves a few dozen.
MAX_LEFTOVER_BLOCKS = 200_000
#: The worker must still be able to map the address space it had free at start-up
#: (under RLIMIT_AS) minus this fraction of it, else recycle: freed memory that stays
#: mapped (pymalloc arenas or the C heap kept by fragmentation) counts against the
#: limit and would make the next, honest program fail. 1/16 of 512 MB is ~31 MB.
ADDRESS_SPACE_SLACK_FRACTION = 1 / 16
#: ... but never less than this (bytes): glibc keeps up to a few MB of freed heap.
MIN_ADDRESS_SPACE_SLACK = 8 * 2**20
#: Run once at worker start-up, before the start-up state is frozen.
_WARM_UP_PROGRAM = "def execute_command(image):\n    return {'w': image.width, 'x': [1.5]}\n"

#: The builtins a program gets (besides a capturing ``print``); keep in sync with
#: ``validate.ALLOWED_BUILTINS``.
SAFE_BUILTIN_NAMES = (
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float",
    "frozenset", "int", "isinstance", "len", "list", "map", "max", "min", "range",
    "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
)  # fmt: skip


class Abort(BaseException):
    """Ends a program; a BaseException so no library code on the way can swallow it."""

    def __init__(self, kind: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.fatal = fatal


class PlainError(Exception):
    """A value cannot be expressed as plain (JSON-able) data."""


# ---------------------------------------------------------------------------------------
# Read-only views
# ---------------------------------------------------------------------------------------
class ReadOnlyView:
    """Read-only object whose attributes are the keys of a plain dict."""

    __slots__ = ("_raw", "_attrs")
    _kind = "view"

    def __init__(self, raw: dict) -> None:
        attrs = {k: freeze(v) for k, v in raw.items() if isinstance(k, str)}
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_attrs", attrs)

    def __getattr__(self, name: str) -> Any:
        attrs = object.__getattribute__(self, "_attrs")
        try:
            return attrs[name]
        except KeyError:
            known = ", ".join(sorted(k for k in attrs if not k.startswith("_")))
            raise AttributeError(
                f"{self._kind} has no attribute {name!r} (available: {known})"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._kind} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self._kind} is read-only")

    def __reduce__(self) -> Any:
        raise TypeError(f"{self._kind} cannot be pickled")

    def __repr__(self) -> str:
        attrs = object.__getattribute__(self, "_attrs")
        inner = ", ".join(f"{k}={v!r}" for k, v in attrs.items() if not k.startswith("_"))
        return f"{self._kind.capitalize()}({inner})"


class RegionView(ReadOnlyView):
    """A region as a program sees it: ``r.id``, ``r.area_m2``, ``r.label``, ...

    Equal, hashable and ordered by id; passed to tools or returned as its original dict.
    """

    __slots__ = ()
    _kind = "region"

    def __init__(self, raw: dict) -> None:
        super().__init__(raw)
        attrs = object.__getattribute__(self, "_attrs")
        attrs["id"] = raw["__region__"]

    def _id(self) -> Any:
        return object.__getattribute__(self, "_attrs")["id"]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RegionView):
            return self._id() == other._id()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("region", self._id()))

    def __lt__(self, other: object) -> bool:
        if isinstance(other, RegionView):
            return self._id() < other._id()
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, RegionView):
            return self._id() <= other._id()
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, RegionView):
            return self._id() > other._id()
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, RegionView):
            return self._id() >= other._id()
        return NotImplemented

    def __repr__(self) -> str:
        attrs = object.__getattribute__(self, "_attrs")
        parts = [f"id={attrs['id']!r}"]
        for key in ("label", "area_m2", "score"):
            if key in attrs:
                value = attrs[key]
                if isinstance(value, float):
                    value = round(value, 3)
                parts.append(f"{key}={value!r}")
        return f"Region({', '.join(parts)})"


class ImageView(ReadOnlyView):
    """The ``image`` argument of ``execute_command``: ``image.width``, ``image.gsd_m``..."""

    __slots__ = ()
    _kind = "image"


def freeze(value: Any) -> Any:
    """Plain data -> immutable data for view attributes (regions become views)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        if "__region__" in value:
            return RegionView(value)
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    return value


def from_plain(value: Any) -> Any:
    """Plain data from the parent -> program values (dicts with ``__region__`` -> views)."""
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, dict):
        if "__region__" in value:
            return RegionView(value)
        return {k: from_plain(v) for k, v in value.items()}
    return value


def to_plain(value: Any, depth: int = 0) -> Any:
    """Program value -> plain JSON-able data; raises PlainError for anything else."""
    if depth > MAX_VALUE_DEPTH:
        raise PlainError(f"value is nested more than {MAX_VALUE_DEPTH} levels deep")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ReadOnlyView):  # the original dict, e.g. {"__region__": 3, ...}
        return object.__getattribute__(value, "_raw")
    if isinstance(value, list | tuple):
        return [to_plain(v, depth + 1) for v in value]
    if isinstance(value, dict | MappingProxyType):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise PlainError(f"dict keys must be str, not {type(k).__name__}")
            out[k] = to_plain(v, depth + 1)
        return out
    if isinstance(value, set | frozenset):
        items = [to_plain(v, depth + 1) for v in value]
        try:
            items.sort()
        except TypeError:
            pass
        return items
    raise PlainError(f"a value of type {type(value).__name__} is not plain data")


def dumps(value: Any) -> str:
    """Compact ASCII JSON (so that characters == bytes on the wire)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _error_line(exc: BaseException) -> int | None:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PROGRAM_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - any failure: describe without the message
        text = "<unprintable message>"
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    name = type(exc).__name__
    message = f"{name}: {text}" if text else name
    line = _error_line(exc)
    return f"{message} (line {line})" if line is not None else message


def _traceback_frames(*excs: BaseException | None) -> list[Any]:
    """The frames in the tracebacks of ``excs`` and of the exceptions chained to them,
    stopping at the exception the caller is handling (in-process, a program's exception
    has it as its ``__context__``; its frames are not the program's)."""
    frames = []
    pending = list(excs)
    seen = [sys.exc_info()[1]]  # a list, not a set of id()s: id() is audited
    while pending:
        exc = pending.pop()
        if exc is None or any(exc is old for old in seen):
            continue
        seen.append(exc)
        tb = exc.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        pending += (exc.__cause__, exc.__context__)
    return frames


def _gc_collections() -> tuple[int, ...]:
    """How many collections of each generation the garbage collector has run so far."""
    return tuple(stat["collections"] for stat in gc.get_stats())


def _generation_to_collect(before: tuple[int, ...], after: tuple[int, ...]) -> int:
    """The youngest generation whose collection frees every cycle a program left behind.

    ``before``/``after`` are :func:`_gc_collections` around the program. Without any
    automatic collection in between, everything the program created is still in
    generation 0; when only generation-0 collections ran, survivors are in generation 1
    (CPython up to 3.13); otherwise they may have reached the oldest generation.
    """
    if before == after:
        return 0
    if sys.version_info < (3, 14) and len(before) == 3 and before[1:] == after[1:]:
        return 1
    return 2


# ---------------------------------------------------------------------------------------
# Runtime: one program run
# ---------------------------------------------------------------------------------------
class Runtime:
    """Compiles and runs one validated program against a tool-call function.

    ``call_tool(name, args, kwargs)`` receives plain data and returns plain data, or
    raises :class:`Abort`. ``run`` returns an outcome dict: ``ok``, ``value`` or
    ``error`` (``kind``, ``message``), ``fatal``, ``stdout``, ``cpu_s``, ``tool_calls``.
    """

    def __init__(
        self,
        call_tool: Callable[[str, list, dict], Any],
        max_output_chars: int = 20_000,
        max_tool_calls: int = 200,
        max_result_chars: int = 1_000_000,
    ) -> None:
        self.call_tool = call_tool
        self.max_output_chars = max_output_chars
        self.max_tool_calls = max_tool_calls
        self.max_result_chars = max_result_chars
        self.tool_calls = 0
        self.abort: Abort | None = None
        self.describing = False  # True while the runtime reads a failed program's traceback
        self._out: list[str] = []
        self._out_size = 0

    # hooks for the worker process (limits, audit); no-ops in-process
    def enter_program(self) -> None:
        """Called just before the program's module body runs."""

    def leave_program(self) -> None:
        """Called as soon as the program has finished (however it finished)."""

    def collect_garbage(self, before: tuple[int, ...]) -> None:
        """Collect the program's reference cycles (called before :meth:`leave_program`).

        In-process only the generations the program's objects can be in are collected,
        so that a trivial program does not pay for a full collection of a large heap.
        """
        gc.collect(_generation_to_collect(before, _gc_collections()))

    def fail(self, abort: Abort) -> Abort:
        """Record the first abort (it is sticky) and return it for raising."""
        if self.abort is None:
            self.abort = abort
        return self.abort

    # -- builtins ---------------------------------------------------------------------
    def _print(self, *args: Any, sep: Any = " ", end: Any = "\n", file: Any = None,
               flush: bool = False) -> None:  # fmt: skip
        if file is not None:
            raise TypeError("print(file=...) is not available in programs")
        if sep is None:
            sep = " "
        if end is None:
            end = "\n"
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print() sep and end must be strings")
        room = self.max_output_chars - self._out_size
        parts: list[str] = []
        size = 0
        for i, arg in enumerate(args):
            piece = (sep if i else "") + str(arg)
            parts.append(piece)
            size += len(piece)
            if size > room:
                break
        parts.append(end)
        text = "".join(parts)
        if len(text) > room:
            self._out.append(text[: max(room, 0)])
            self._out_size = self.max_output_chars
            raise self.fail(
                Abort("output", f"output limit of {self.max_output_chars} characters exceeded",
                      fatal=True)
            )  # fmt: skip
        self._out.append(text)
        self._out_size += len(text)

    def make_builtins(self) -> dict[str, Any]:
        """A fresh whitelist-only ``__builtins__`` dict."""
        table = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
        table["print"] = self._print
        table["True"] = True
        table["False"] = False
        table["None"] = None
        return table

    def make_tool(self, name: str) -> Callable[..., Any]:
        """The free function a program calls for one tool."""

        def tool(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        tool.__name__ = tool.__qualname__ = name
        return tool

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if self.abort is not None:
            raise self.abort
        self.tool_calls += 1
        if self.tool_calls > self.max_tool_calls:
            raise self.fail(
                Abort("tool_limit", f"tool call limit of {self.max_tool_calls} exceeded",
                      fatal=True)
            )  # fmt: skip
        try:
            plain_args = to_plain(list(args))
            plain_kwargs = to_plain(kwargs)
        except (PlainError, RecursionError) as exc:
            raise self.fail(Abort("tool_arg", f"bad argument to tool {name}: {exc}")) from None
        result = self.call_tool(name, plain_args, plain_kwargs)
        return from_plain(result)

    # -- running ----------------------------------------------------------------------
    def run(self, source: str, tool_names: list[str], image_info: dict | None) -> dict:
        """Run ``execute_command(image)`` of ``source``; returns the outcome dict."""
        self.tool_calls = 0
        self.abort = None
        self._out = []
        self._out_size = 0
        cpu0 = time.process_time()
        outcome: dict[str, Any]
        try:
            code = compile(
                source, PROGRAM_FILENAME, "exec", flags=_FUTURE_ANNOTATIONS, dont_inherit=True
            )
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            return self._finish({"ok": False, "error": {"kind": "compile",
                                 "message": _describe(exc)}}, cpu0)  # fmt: skip
        namespace: dict[str, Any] = {"__builtins__": self.make_builtins(), "__name__": "program"}
        for name in tool_names:
            namespace[name] = self.make_tool(name)
        image = ImageView(dict(image_info or {}))

        failure: BaseException | None = None
        encoded = entry = value = late = None
        collections = _gc_collections()
        self.enter_program()
        try:
            try:
                exec(code, namespace)
                entry = namespace.get("execute_command")
                if not callable(entry):
                    raise NameError("execute_command is not defined")
                value = entry(image)
                if self.abort is not None:
                    raise self.abort
                try:
                    encoded = dumps(to_plain(value))
                except (PlainError, ValueError, TypeError, RecursionError) as exc:
                    raise Abort("result", f"cannot return this value: {exc}") from None
                if len(encoded) > self.max_result_chars:
                    raise Abort(
                        "result",
                        f"return value is too large: {len(encoded)} characters "
                        f"(limit {self.max_result_chars})",
                        fatal=True,
                    )
            except BaseException as exc:  # noqa: BLE001 - every program fault becomes an outcome
                failure = exc
            if failure is None:
                outcome = {"ok": True, "value_json": encoded}
            else:
                outcome = {"ok": False, **self._settle(failure)}
            # Drop everything that can keep the program's objects alive (the exceptions,
            # whose tracebacks hold the program's frames, its value, its globals), then
            # collect the cycles among them -- still under the program's CPU timer and
            # audit hook, since freeing them may run code the program left behind.
            abort, self.abort = self.abort, None
            for dropped in (failure, abort):
                if dropped is not None:
                    dropped.__traceback__ = dropped.__context__ = dropped.__cause__ = None
            failure = abort = dropped = entry = value = image = code = None
            namespace.clear()
            namespace = None
            self.collect_garbage(collections)
            late, self.abort = self.abort, None  # an abort while freeing: fatal
        finally:
            self.leave_program()
        if late is not None:
            outcome = {"ok": False, "error": {"kind": late.kind, "message": late.message},
                       "fatal": True}  # fmt: skip
        return self._finish(outcome, cpu0)

    def _settle(self, exc: BaseException) -> dict[str, Any]:
        """Classify a failed program, then empty the finished frames in the tracebacks.

        Whoever keeps one of these exceptions (in-process, the handler's error that ends
        up in ``SandboxResult.error`` reaches the program's frames through ``f_back``)
        must not keep the program's variables alive.
        """
        self.describing = True  # worker: reading a traceback (tb_frame, f_code) is audited
        try:
            outcome = self._classify(exc)
            frames = _traceback_frames(exc, self.abort)
        finally:
            self.describing = False
        for frame in frames:
            try:
                frame.clear()
            except RuntimeError:  # still executing: Runtime.run and its callers
                pass
        return outcome

    def _classify(self, exc: BaseException) -> dict[str, Any]:
        if self.abort is not None:  # a tool abort / limit wins over whatever followed it
            exc = self.abort
        if isinstance(exc, Abort):
            return {"error": {"kind": exc.kind, "message": exc.message}, "fatal": exc.fatal}
        if isinstance(exc, MemoryError):
            return {"error": {"kind": "memory", "message": "memory limit exceeded"},
                    "fatal": True}  # fmt: skip
        if isinstance(exc, RecursionError):
            return {"error": {"kind": "recursion", "message": _describe(exc)}, "fatal": True}
        fatal = not isinstance(exc, Exception)
        return {"error": {"kind": "exception", "message": _describe(exc)}, "fatal": fatal}

    def _finish(self, outcome: dict[str, Any], cpu0: float) -> dict[str, Any]:
        outcome.setdefault("fatal", False)
        outcome["stdout"] = "".join(self._out)
        outcome["cpu_s"] = max(time.process_time() - cpu0, 0.0)
        outcome["tool_calls"] = self.tool_calls
        self._out = []
        return outcome


# ---------------------------------------------------------------------------------------
# Worker process
# ---------------------------------------------------------------------------------------
class _Channel:
    """Length-prefixed JSON over the worker's binary stdin/stdout."""

    def __init__(self, rfile: Any, wfile: Any) -> None:
        self.rfile = rfile
        self.wfile = wfile

    def send_text(self, text: str) -> None:
        data = text.encode("utf-8")
        self.wfile.write(HEADER.pack(len(data)) + data)
        self.wfile.flush()

    def send(self, message: dict) -> None:
        self.send_text(dumps(message))

    def recv(self) -> dict | None:
        header = self.rfile.read(HEADER.size)
        if len(header) < HEADER.size:
            return None
        (size,) = HEADER.unpack(header)
        data = self.rfile.read(size)
        if len(data) < size:
            return None
        return json.loads(data)


class WorkerRuntime(Runtime):
    """Runtime with CPU timers and an audit hook, talking to the parent over a channel."""

    def __init__(self, channel: _Channel, limits: dict) -> None:
        super().__init__(
            self._remote_call,
            max_output_chars=int(limits.get("max_output_chars", 20_000)),
            max_tool_calls=int(limits.get("max_tool_calls", 200)),
            max_result_chars=int(limits.get("max_result_chars", 1_000_000)),
        )
        self.channel = channel
        self.cpu_s = float(limits.get("cpu_s", 5.0))
        self.max_message_bytes = int(limits.get("max_message_bytes", 4_000_000))
        self.in_program = False
        self.exec_token = False

    def _remote_call(self, name: str, args: list, kwargs: dict) -> Any:
        text = dumps({"op": "call", "name": name, "args": args, "kwargs": kwargs})
        if len(text) > self.max_message_bytes:
            raise self.fail(Abort("tool_arg", f"arguments to tool {name} are too large"))
        self.channel.send_text(text)
        reply = self.channel.recv()
        if reply is None:  # parent went away
            _hard_exit(0)
        if reply.get("ok"):
            return reply.get("value")
        error = reply.get("error") or {}
        raise self.fail(Abort("aborted", str(error.get("message", "tool call aborted"))))

    def enter_program(self) -> None:
        used = time.process_time()
        soft = int(math.ceil(used + self.cpu_s)) + 1
        try:
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        except (ValueError, OSError):
            pass
        # SIGPROF's default action terminates the worker: a precise CPU budget.
        signal.setitimer(signal.ITIMER_PROF, max(self.cpu_s, 0.001))
        self.exec_token = True
        self.in_program = True

    def leave_program(self) -> None:
        self.in_program = False
        self.exec_token = False
        signal.setitimer(signal.ITIMER_PROF, 0)

    def collect_garbage(self, before: tuple[int, ...]) -> None:
        """Always a full collection: everything alive after start-up is frozen (see
        :func:`main`), so this only walks what was created since."""
        gc.collect()

    def audit(self, event: str, args: tuple) -> None:
        """Audit hook: while a program runs, no audited operation is allowed."""
        if not self.in_program:
            return
        if event == "exec" and self.exec_token:
            self.exec_token = False
            return
        if event == "object.__getattr__" and self.describing:
            return  # the runtime itself reads the traceback of a failed program
        raise self.fail(Abort("forbidden", f"operation {event!r} is not allowed", fatal=True))


def _hard_exit(code: int) -> None:
    os._exit(code)


def _can_map(size: int) -> bool:
    """True if ``size`` more bytes of address space can be mapped right now.

    An inaccessible (PROT_NONE) private mapping counts against RLIMIT_AS but is never
    touched nor charged to the commit limit, so the probe costs one mmap/munmap pair and
    no memory. (``bytes(size)`` would touch the first page; its munmap then needs a TLB
    shoot-down, measured at ~50 us per program in the warm-pool benchmark on a VM.)
    """
    try:
        probe = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=0)
    except (OSError, OverflowError, ValueError):
        return False
    probe.close()
    return True


def _free_address_space() -> int | None:
    """The largest mapping (bytes, 1 MiB steps) the worker can make under RLIMIT_AS,
    or None without an address-space limit."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    step = 2**20
    low, high = 0, soft // step  # binary search in MiB: ~10 probes
    while low < high:
        middle = (low + high + 1) // 2
        if _can_map(middle * step):
            low = middle
        else:
            high = middle - 1
    return low * step


def _page_faults() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


class _Cleanliness:
    """Is the worker as fit for the next program as after start-up?

    Measured once at start-up (after a collection and ``gc.freeze``), checked after every
    program: see MAX_LEFTOVER_BLOCKS and ADDRESS_SPACE_SLACK_FRACTION. Reading
    ``/proc/self`` is impossible (RLIMIT_NOFILE), hence the mapping probe. The probe is
    skipped while the process has taken no page fault since the last one passed: memory
    that stays mapped has been written to, and a first write to a page is a fault (a
    trivial program takes none).
    """

    def __init__(self) -> None:
        self.baseline_blocks = sys.getallocatedblocks()
        free = _free_address_space()
        self.required_free: int | None = None
        if free is not None:
            slack = max(int(free * ADDRESS_SPACE_SLACK_FRACTION), MIN_ADDRESS_SPACE_SLACK)
            if free > slack:
                self.required_free = free - slack
        self.faults = _page_faults()

    def problem(self) -> str | None:
        """None when the worker may run another program, else why it may not."""
        leftover = sys.getallocatedblocks() - self.baseline_blocks
        if leftover > MAX_LEFTOVER_BLOCKS:
            return f"{leftover} objects left allocated"
        if self.required_free is not None:
            faults = _page_faults()
            if faults != self.faults:
                if not _can_map(self.required_free):
                    return f"less than {self.required_free // 2**20} MB of address space free"
                self.faults = faults
        return None


def _apply_process_limits(memory_mb: int) -> None:
    def setlimit(which: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(which, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            pass

    if memory_mb > 0:
        setlimit(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    setlimit(resource.RLIMIT_FSIZE, 0)
    setlimit(resource.RLIMIT_CORE, 0)
    setlimit(resource.RLIMIT_NOFILE, 3)
    if hasattr(resource, "RLIMIT_NPROC"):
        setlimit(resource.RLIMIT_NPROC, 0)
    if hasattr(resource, "RLIMIT_MEMLOCK"):
        setlimit(resource.RLIMIT_MEMLOCK, 0)


def main(argv: list[str]) -> int:
    """Worker entry point: apply limits, then serve programs until end of input."""
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    channel = _Channel(sys.stdin.buffer, sys.stdout.buffer)
    # Nothing but the protocol may reach the pipe.
    sys.stdin = sys.stdout = sys.stderr = None  # type: ignore[assignment]
    for signum in (signal.SIGPROF, signal.SIGXCPU):
        signal.signal(signum, signal.SIG_DFL)  # CPU limits must terminate the worker
    _apply_process_limits(int(config.get("memory_mb", 512)))
    sys.setrecursionlimit(int(config.get("recursion_limit", DEFAULT_RECURSION_LIMIT)))
    runtime = WorkerRuntime(channel, {})
    sys.addaudithook(lambda event, args: runtime.audit(event, args))
    # Everything alive now lives as long as the worker: freeze it, so that the full
    # collection after each program only walks what that program created. The warm-up
    # run first creates what the first compile() creates lazily (the AST node types).
    Runtime(lambda name, args, kwargs: None).run(_WARM_UP_PROGRAM, [], {"width": 1})
    gc.collect()
    gc.freeze()
    cleanliness = _Cleanliness()
    channel.send({"op": "ready", "pid": _pid(), "cpu": time.process_time()})
    while True:
        message = channel.recv()
        if message is None or message.get("op") == "exit":
            return 0
        if message.get("op") != "run":
            continue
        runtime = _configure(runtime, message.get("limits") or {})
        try:
            outcome = runtime.run(
                message["source"], list(message.get("tools") or []), message.get("image")
            )
        except MemoryError:
            outcome = {"ok": False, "error": {"kind": "memory", "message": "memory limit exceeded"},
                       "fatal": True, "stdout": "", "cpu_s": 0.0, "tool_calls": 0}  # fmt: skip
        except Abort as exc:  # the audit hook stopped something while the run was ending
            outcome = {"ok": False, "error": {"kind": exc.kind, "message": exc.message},
                       "fatal": True, "stdout": "", "cpu_s": 0.0, "tool_calls": 0}  # fmt: skip
        if not outcome.get("fatal"):
            problem = cleanliness.problem()
            if problem is not None:  # the result stands; the parent replaces this worker
                outcome["fatal"] = True
                outcome["recycle"] = problem
        value_json = outcome.pop("value_json", None)
        outcome["op"] = "done"
        outcome["cpu_total"] = time.process_time()
        text = dumps(outcome)
        if value_json is not None:
            text = text[:-1] + ',"value":' + value_json + "}"
        channel.send_text(text)


def _configure(runtime: WorkerRuntime, limits: dict) -> WorkerRuntime:
    runtime.max_output_chars = int(limits.get("max_output_chars", runtime.max_output_chars))
    runtime.max_tool_calls = int(limits.get("max_tool_calls", runtime.max_tool_calls))
    runtime.max_result_chars = int(limits.get("max_result_chars", runtime.max_result_chars))
    runtime.cpu_s = float(limits.get("cpu_s", runtime.cpu_s))
    runtime.max_message_bytes = int(limits.get("max_message_bytes", runtime.max_message_bytes))
    return runtime


def _pid() -> int:
    return os.getpid()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
