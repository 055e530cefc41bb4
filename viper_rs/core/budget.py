"""The time budget of the running program, seen by everything a tool call reaches.

The sandbox opens a :func:`deadline` around the whole program; tools and detectors call
:func:`check` between steps (per region, per window, per component), so work a program
causes stops at its wall-clock limit instead of running to the end. Outside a program
there is no deadline and :func:`check` costs one context-variable read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

from viper_rs.core.errors import SandboxTimeout

__all__ = ["check", "deadline", "remaining"]

_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("viper_rs_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float, limit_s: float) -> Iterator[None]:
    """Inside the block, :func:`check` raises once ``time.monotonic()`` passes ``at``
    (``limit_s`` is the limit quoted in the error)."""
    token = _DEADLINE.set((at, limit_s))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check() -> None:
    """Raise SandboxTimeout when the running program's wall-clock limit has passed."""
    current = _DEADLINE.get()
    if current is not None and time.monotonic() > current[0]:
        raise SandboxTimeout(
            f"program exceeded the wall-clock limit of {current[1]:g} s "
            "(tool calls included)"
        )


def remaining() -> float:
    """Seconds left before the deadline (``inf`` outside a program)."""
    current = _DEADLINE.get()
    return float("inf") if current is None else current[0] - time.monotonic()
