"""Core tools: find, exists, count, area, compare."""

from __future__ import annotations

from typing import Literal

import numpy as np
from shapely import STRtree, box
from viper_rs.tools.context import current, parse_phrase, require_ground_size
from viper_rs.tools.measures import apply_shape, apply_size
from viper_rs.tools.registry import tool

from viper_rs.core import budget
from viper_rs.core.regions import Region


def resolve_target(target: str | list[Region]) -> list[Region]:
    """A concept name becomes its regions; a region list is returned unchanged."""
    return find(target) if isinstance(target, str) else list(target)


@tool(concepts=("name",), describes="concept")
def find(name: str) -> list[Region]:
    """Instances of a concept in the image, e.g. "building", "small residential building".

    Leading size words (small/medium/large) and shape words (square/rectangular/circular)
    filter the instances like filter_size/filter_shape do. Each Region has .area_m2,
    .centroid (col, row), .bbox (col0, row0, col1, row1), .score and .label.

    Example:
        buildings = find("building")
        ponds = find("small circular water area")
    """
    ctx = current()
    base, size, shape = parse_phrase(name)
    if size:
        require_ground_size(f"the size word {size!r} compares areas in m2")
    regions = ctx.detect(base)
    if size:
        regions = apply_size(regions, size, ctx.settings.small_max_m2, ctx.settings.large_min_m2)
    if shape:
        regions = apply_shape(regions, shape)
    return regions


@tool(kinds=("presence",), concepts=("target",))
def exists(target: str | list[Region]) -> bool:
    """Whether at least one instance exists (a concept name or a list of regions).

    Example:
        return exists("water area")
        return exists(left_of(find("building"), find("road")))
    """
    return len(resolve_target(target)) > 0


@tool(kinds=("count", "other"), concepts=("target",))
def count(target: str | list[Region]) -> int:
    """Number of instances (a concept name or a list of regions).

    Example:
        return count("residential building")
        return count(filter_size(find("building"), "large"))
    """
    return len(resolve_target(target))


@tool(kinds=("area",), concepts=("target",))
def area(target: str | list[Region]) -> float:
    """Ground area covered, in m2 (union of the instances' masks; pixels if the image has no ground size).

    Example:
        return area("tree")
        return area(next_to(find("grass area"), find("water area")))
    """
    ctx = current()
    regions = resolve_target(target)
    if not regions:
        return 0.0
    # a region listed again adds nothing; an empty mask adds nothing
    unique = list({id(r): r for r in regions if r.crop.size}.values())
    total = 0.0
    for cluster in _overlap_clusters(unique):
        budget.check()
        c0 = min(r.bbox[0] for r in cluster)
        r0 = min(r.bbox[1] for r in cluster)
        c1 = max(r.bbox[2] for r in cluster)
        r1 = max(r.bbox[3] for r in cluster)
        window = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        for r in cluster:
            r.paint(window, (r0, c0))
        total += ctx.image.window_area(window, r0, c0)
    return float(total)


def _overlap_clusters(regions: list[Region]) -> list[list[Region]]:
    """Groups of regions whose bounding boxes overlap (directly or through others): the
    union of masks is the sum of the unions of the groups, each painted in its own box."""
    boxes = [box(c0, r0, c1, r1) for c0, r0, c1, r1 in (r.bbox for r in regions)]
    parent = list(range(len(regions)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    left, right = STRtree(boxes).query(boxes, predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[Region]] = {}
    for i, r in enumerate(regions):
        groups.setdefault(root(i), []).append(r)
    return list(groups.values())


@tool(kinds=("comparison", "presence"), concepts=("a", "b"))
def compare(
    a: int | str | list[Region],
    b: int | str | list[Region],
    op: Literal["more", "less", "equal"],
) -> bool:
    """Compare two counts: numbers, concept names or region lists; op is "more", "less" or "equal".

    Example:
        return compare("building", "road", "more")
        return compare(find("small building"), 3, "equal")
    """
    na = a if isinstance(a, int) else len(resolve_target(a))
    nb = b if isinstance(b, int) else len(resolve_target(b))
    if op == "more":
        return na > nb
    if op == "less":
        return na < nb
    return na == nb
