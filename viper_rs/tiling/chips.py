"""Chips: windows of a raster, each a core (the pixels it answers for) read with a halo.

The index cuts each source into overlapping cores with the last one flush with the source's
edge (:func:`starts`, no halo); a region cuts its working grid into adjacent cores, each read
with a halo of context. Both lay their windows out with :func:`windows` and describe them
with one :class:`Chip`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from viper_rs.tiling.sources import Source

#: A pixel window ``(r0, c0, r1, c1)``: rows ``r0:r1``, columns ``c0:c1``.
Box = tuple[int, int, int, int]


@dataclass
class Chip:
    """One chip of a raster (a source for the index, the working grid for a region): its
    ``core`` window, the ``read`` window (core plus halo, inside the raster; the core when
    there is no halo), the ``sources`` it reads, and its ``index`` (chip row, chip column)
    among the raster's chip positions.

    ``bbox`` and ``corners`` are the WGS84 footprint an index stores (None for region
    chips, whose footprint the working grid gives); ``status`` (pending | ok | failed |
    skipped), ``ms``, ``error``, ``attempts`` and ``valid_m2`` (ground area of the core's
    valid pixels, once read) are how a region scan went."""

    id: str
    index: tuple[int, int]
    core: Box
    read: Box
    sources: tuple[Source, ...]
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north (degrees)
    corners: tuple[float, ...] | None = None  # lon/lat of the corners: UL, UR, LR, LL
    status: str = "pending"
    ms: float = 0.0
    error: str | None = None
    attempts: int = 0
    valid_m2: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> tuple[int, int, int, int]:
        """The read window as ``(col_off, row_off, width, height)`` (rasterio's order)."""
        r0, c0, r1, c1 = self.read
        return (c0, r0, c1 - c0, r1 - r0)


def starts(length: int, size: int, stride: int) -> list[int]:
    """Origins along one axis: every ``stride``, the last flush with the end (``[0]`` when
    the axis is shorter than one chip)."""
    if length <= size:
        return [0]
    out = list(range(0, length - size + 1, stride))
    if out[-1] != length - size:
        out.append(length - size)
    return out


def count_starts(length: int, size: int, stride: int) -> int:
    """``len(starts(length, size, stride))``, without listing them."""
    if length <= size:
        return 1
    n = (length - size) // stride + 1
    return n + (1 if (length - size) % stride else 0)


def windows(r0: np.ndarray, c0: np.ndarray, size: tuple[int, int], halo: int,
            shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Core and read windows, ``(N, 4)`` arrays of :data:`Box`, of the chips whose cores start
    at rows ``r0``, columns ``c0``: cores ``size`` = (rows, cols) px cut at the raster's
    edge (``shape`` = (height, width)), read windows ``halo`` px wider on every side, also
    stopping at the edge (a chip touching it sees the edge as the whole raster would)."""
    h, w = shape
    r0, c0 = np.asarray(r0, dtype=np.int64), np.asarray(c0, dtype=np.int64)
    r1, c1 = np.minimum(r0 + size[0], h), np.minimum(c0 + size[1], w)
    q0, p0 = np.maximum(r0 - halo, 0), np.maximum(c0 - halo, 0)
    q1, p1 = np.minimum(r1 + halo, h), np.minimum(c1 + halo, w)
    return np.stack([r0, c0, r1, c1], axis=-1), np.stack([q0, p0, q1, p1], axis=-1)


def core_slice(chip: Chip) -> tuple[slice, slice]:
    """The chip's core inside its read window."""
    r0, c0, r1, c1 = chip.core
    rr, cc = chip.read[0], chip.read[1]
    return slice(r0 - rr, r1 - rr), slice(c0 - cc, c1 - cc)


def box(row: np.ndarray) -> Box:
    """One row of :func:`windows` as a :data:`Box` of Python ints."""
    r0, c0, r1, c1 = (int(v) for v in row)
    return (r0, c0, r1, c1)
