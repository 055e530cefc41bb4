"""Spatial relations between two region sets (image coordinates: row 0 is the top).

Directional relations compare centroids: A is left of B when A's centroid column is
smaller than B's, above B when its centroid row is smaller. "next to" means the two
masks come within ``next_to_m`` metres of each other (settings, default 10 m) without
being the same region. Each relation keeps the regions of the first set that stand in
that relation to at least one region of the second set.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from shapely import STRtree, box
from viper_rs.tools.context import current, require_ground_size
from viper_rs.tools.registry import tool

from viper_rs.core import budget
from viper_rs.core.errors import ToolError
from viper_rs.core.regions import Region


def _key(r: Region) -> int:
    """Identity of a region for "not the same region": its run id, else the object."""
    return r.id if r.id >= 0 else -1 - id(r)


def _keep_beyond(
    regions: list[Region], others: list[Region], value: Callable[[Region], float]
) -> list[Region]:
    """Regions whose ``value`` is below the largest ``value`` of a distinct region of
    ``others`` (the directional relations, in O(n + m))."""
    best: dict[int, float] = {}
    for i, o in enumerate(others):
        if i % 4096 == 0:
            budget.check()
        k, v = _key(o), value(o)
        if v > best.get(k, -math.inf):
            best[k] = v
    top = sorted(best.items(), key=lambda kv: kv[1], reverse=True)[:2]
    out = []
    for i, r in enumerate(regions):
        if i % 4096 == 0:
            budget.check()
        limit = next((v for k, v in top if k != _key(r)), None)
        if limit is not None and value(r) < limit:
            out.append(r)
    return out


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
    h, w = a.image_shape
    r0, c0 = max(min(ar0, br0) - pad, 0), max(min(ac0, bc0) - pad, 0)
    r1, c1 = min(max(ar1, br1) + pad, h), min(max(ac1, bc1) + pad, w)
    win_a = a.window(r0, c0, r1, c1)
    win_b = b.window(r0, c0, r1, c1)
    if (win_a & win_b).any():
        return 0.0
    dist = ndimage.distance_transform_edt(~win_a)
    return float(dist[win_b].min() - 1) if win_b.any() else float("inf")


def near(regions: list[Region], others: list[Region], limit_px: float) -> list[Region]:
    """Regions within ``limit_px`` pixels (mask to mask) of a distinct region of ``others``.

    Candidate pairs come from a spatial index of the bounding boxes; each region's
    distance map covers only its box grown by the limit and clipped to the image.
    """
    if not regions or not others:
        return []
    unique: dict[int, Region] = {}
    for o in others:
        unique.setdefault(_key(o), o)
    others = list(unique.values())
    tree = STRtree([box(*o.bbox) for o in others])
    reach = limit_px + 1
    verdict: dict[int, bool] = {}
    out = []
    for r in regions:
        budget.check()
        k = _key(r)
        if k not in verdict:
            c0, r0, c1, r1 = r.bbox
            hits = tree.query(box(c0 - reach, r0 - reach, c1 + reach, r1 + reach))
            candidates = [others[int(i)] for i in np.sort(hits)]
            verdict[k] = _near_any(r, [o for o in candidates if _key(o) != k], limit_px)
        if verdict[k]:
            out.append(r)
    return out


def _near_any(a: Region, others: list[Region], limit_px: float) -> bool:
    """Whether any region of ``others`` is within ``limit_px`` of ``a``'s mask."""
    if not others:
        return False
    h, w = a.image_shape
    pad = int(np.ceil(limit_px)) + 2
    ac0, ar0, ac1, ar1 = a.bbox
    r0, c0 = max(ar0 - pad, 0), max(ac0 - pad, 0)
    r1, c1 = min(ar1 + pad, h), min(ac1 + pad, w)
    win_a = a.window(r0, c0, r1, c1)
    dist: np.ndarray | None = None
    for b in others:
        budget.check()
        win_b = b.window(r0, c0, r1, c1)
        if not win_b.any():
            continue
        if (win_a & win_b).any():
            return True
        if dist is None:
            dist = ndimage.distance_transform_edt(~win_a)
        if float(dist[win_b].min() - 1) <= limit_px:
            return True
    return False


@tool(describes="relation")
def left_of(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying left of at least one region of the second list.

    Example:
        return count(left_of(find("building"), find("road")))
    """
    return _keep_beyond(regions, others, lambda r: r.centroid[0])


@tool(describes="relation")
def right_of(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying right of at least one region of the second list.

    Example:
        return exists(right_of(find("parking"), find("building")))
    """
    return _keep_beyond(regions, others, lambda r: -r.centroid[0])


@tool(describes="relation")
def above(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying above ("at the top of") at least one region of the second list.

    Example:
        return count(above(find("building"), find("water area")))
    """
    return _keep_beyond(regions, others, lambda r: r.centroid[1])


@tool(describes="relation")
def below(regions: list[Region], others: list[Region]) -> list[Region]:
    """Regions (first list) lying below ("at the bottom of") at least one region of the second list.

    Example:
        return area(below(find("grass area"), find("road")))
    """
    return _keep_beyond(regions, others, lambda r: -r.centroid[1])


@tool(describes="relation")
def next_to(regions: list[Region], others: list[Region], max_distance_m: float | None = None) -> list[Region]:
    """Regions (first list) within max_distance_m (default from settings, 10 m) of a region of the second list.

    Example:
        return exists(next_to(find("water area"), find("road")))
    """
    ctx = current()
    limit_m = ctx.settings.next_to_m if max_distance_m is None else max_distance_m
    if not math.isfinite(limit_m) or limit_m < 0:
        raise ToolError(f"next_to(): max_distance_m must be a number >= 0, got {limit_m!r}")
    if limit_m > 0:
        require_ground_size(f"next_to's distance is {limit_m:g} m")
    gsd = ctx.image.ground_sampling_distance or 1.0
    # No two pixels of the image are farther apart than its diagonal.
    diagonal = math.hypot(*ctx.image.shape)
    limit_px = min(limit_m / gsd, diagonal)
    return near(regions, others, limit_px)
