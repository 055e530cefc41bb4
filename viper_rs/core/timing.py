"""Elapsed time in the form traces and timings report it."""

from __future__ import annotations

import time


def ms_since(t0: float, digits: int = 3) -> float:
    """Milliseconds since ``t0`` (a :func:`time.perf_counter` value), rounded to ``digits``."""
    return round((time.perf_counter() - t0) * 1000, digits)
