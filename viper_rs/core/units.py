"""Quantities written for people in estimates and refusals: bytes, durations, pixel counts."""

from __future__ import annotations


def bytes_text(n: float) -> str:
    """``"3.9 GB"``, ``"690 MB"``, ``"7.6 TB"``."""
    if n >= 1e12:
        return f"{n / 1e12:,.1f} TB"
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def duration_text(s: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3.2 h"``, ``"41 days"``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:,.0f} days"


def count_text(n: float) -> str:
    """``"44.5 M"``, ``"2.1 G"`` (followed by a unit: ``f"{count_text(n)}px"``)."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} "
