"""Spatial relations between two region sets (image coordinates: row 0 is the top).

Directional relations compare centroids: A is left of B when A's centroid column is
smaller than B's, above B when its centroid row is smaller. "next to" means the two
masks come within ``next_to_m`` metres of each other (settings, default 10 m) without
being the same region. Each relation keeps the regions of the first set that stand in
that relation to at least one region of the second set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from tools.context import current
from tools.registry import tool
from viper_rs.regions import Region


def _distinct(a: Region, b: Region) -> bool:
    return a is not b and not (a.id >= 0 and a.id == b.id)


def _keep(regions: list[Region], others: list[Region], rel: Callable[[Region, Region], bool]):
    return [r for r in regions if any(_distinct(r, o) and rel(r, o) for o in others)]


def is_left_of(a: Region, b: Region) -> bool:
    """Centroid of ``a`` lies left of the centroid of ``b``."""
    return a.centroid[0] < b.centroid[0]


def is_above(a: Region, b: Region) -> bool:
    """Centroid of ``a`` lies above (smaller row) the centroid of ``b``."""
    return a.centroid[1] < b.centroid[1]


def gap_px(a: Region, b: Region, limit_px: float) -> float:
    """Smallest pixel distance between two masks (``inf`` when beyond ``limit_px``)."""
    ac0, ar0, ac1, ar1 = a.bbox
    bc0, br0, bc1, br1 = b.bbox
    dx = max(bc0 - ac1, ac0 - bc1, 0)
    dy = max(br0 - ar1, ar0 - br1, 0)
    if np.hypot(dx, dy) > limit_px + 1:
        return float("inf")
    pad = int(np.ceil(limit_px)) + 2
    r0, c0 = max(min(ar0, br0) - pad, 0), max(min(ac0, bc0) - pad, 0)
    r1, c1 = max(ar1, br1) + pad, max(ac1, bc1) + pad
    win_a = a.window(r0, c0, r1, c1)
    win_b = b.window(r0, c0, r1, c1)
    if (win_a & win_b).any():
        return 0.0
    dist = ndimage.distance_transform_edt(~win_a)
    return float(dist[win_b].min() - 1) if win_b.any() else float("inf")


@tool
def left_of(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying left of at least one region of the second list.

    Example:
        return count(left_of(find("building"), find("road")))
    """
    return _keep(regions, others, is_left_of)


@tool
def right_of(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying right of at least one region of the second list.

    Example:
        return exists(right_of(find("parking"), find("building")))
    """
    return _keep(regions, others, lambda a, b: is_left_of(b, a))


@tool
def above(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying above ("at the top of") at least one region of the second list.

    Example:
        return count(above(find("building"), find("water area")))
    """
    return _keep(regions, others, is_above)


@tool
def below(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying below ("at the bottom of") at least one region of the second list.

    Example:
        return area(below(find("grass area"), find("road")))
    """
    return _keep(regions, others, lambda a, b: is_above(b, a))


@tool
def next_to(regions: list[Region], others: list[Region], max_distance_m: float | None = None) -> list[Region]:
    """Regions (first list) within max_distance_m (default from settings, 10 m) of a region of the second list.

    Example:
        return exists(next_to(find("water area"), find("road")))
    """
    ctx = current()
    limit_m = ctx.settings.next_to_m if max_distance_m is None else max_distance_m
    gsd = ctx.image.ground_sampling_distance or 1.0
    limit_px = limit_m / gsd
    return _keep(regions, others, lambda a, b: gap_px(a, b, limit_px) <= limit_px)
