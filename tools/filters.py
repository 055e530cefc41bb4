"""Size and shape filters over region lists."""

from __future__ import annotations

from typing import Literal

from viper_rs.tools.context import current, require_ground_size
from viper_rs.tools.measures import apply_shape, apply_size
from viper_rs.tools.registry import tool

from viper_rs.core.regions import Region


@tool(describes="modifier")
def filter_size(
    regions: list[Region],
    size: Literal["small", "medium", "large"],
    small_max_m2: float | None = None,
    large_min_m2: float | None = None,
) -> list[Region]:
    """Regions of one size class: small (< small_max_m2), medium, large (>= large_min_m2).

    Thresholds are ground m2 and default to the settings (100 and 500 m2).

    Example:
        return count(filter_size(find("building"), "small"))
        return filter_size(find("parking"), "large", large_min_m2=2000.0)
    """
    require_ground_size(f"filter_size {size!r} compares areas in m2")
    s = current().settings
    small = s.small_max_m2 if small_max_m2 is None else small_max_m2
    large = s.large_min_m2 if large_min_m2 is None else large_min_m2
    return apply_size(regions, size, small, large)


@tool(describes="modifier")
def filter_shape(
    regions: list[Region], shape: Literal["square", "rectangular", "circular"]
) -> list[Region]:
    """Regions whose outline is square, rectangular (not square) or circular.

    Example:
        return exists(filter_shape(find("water area"), "circular"))
    """
    return apply_shape(regions, shape)


@tool
def filter_area(regions: list[Region], min_m2: float = 0.0, max_m2: float | None = None) -> list[Region]:
    """Regions whose ground area is at least min_m2 and (if given) below max_m2.

    Example:
        return count(filter_area(find("building"), min_m2=200.0))
    """
    if min_m2 > 0 or max_m2 is not None:
        require_ground_size("filter_area's bounds are in m2")
    return [r for r in regions if r.area_m2 >= min_m2 and (max_m2 is None or r.area_m2 < max_m2)]
