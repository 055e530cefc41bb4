"""The parent's side of a program's tool calls: the handler, its replies and the errors a
program's outcome becomes (shared by the worker pool and in-process execution)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from viper_rs.core import budget
from viper_rs.core.errors import SandboxError, ToolError, ViperError
from viper_rs.sandbox.limits import Limits

__all__ = [
    "Dispatcher",
    "Handler",
    "error_from_outcome",
    "plain_default",
    "short_text",
    "shorten_error",
]

log = logging.getLogger(__name__)

#: Serves one tool call: ``handler(name, args, kwargs)`` returns plain data or raises.
Handler = Callable[[str, list, dict], Any]

#: Longest error message the parent keeps from a tool or a worker (characters).
MAX_ERROR_CHARS = 500
#: Largest tool result (JSON bytes) the parent sends back to a program.
MAX_REPLY_BYTES = 8 * 2**20


def plain_default(obj: Any) -> Any:
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


class Dispatcher:
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
            reply = json.dumps({"ok": True, "value": value}, default=plain_default)
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


def error_from_outcome(outcome: Mapping[str, Any], limits: Limits) -> ViperError:
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
