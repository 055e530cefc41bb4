"""Retrieval first, then verify (issue 16, point 4): the chip index picks where to look.

The question's concepts (the literal names its program passes to find/count/exists/area/
compare) are searched in a chip index; only the region chips that meet the best ``top``
index chips of some concept, and their 8 neighbours (so objects cut by a chip border are
stitched whole), are analysed. Every other chip is ``skipped``; the answer is a partial
scan and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viper_rs.agent.loop import program_queries
from viper_rs.core.config import Settings
from viper_rs.core.errors import PlanningError, ViperError
from viper_rs.planning.base import Plan, Planner, RepairingPlanner
from viper_rs.region.image import RegionImage
from viper_rs.tiling.chips import Chip

if TYPE_CHECKING:
    from viper_rs.index.query import Searcher
    from viper_rs.index.store import ChipIndex


@dataclass
class Funnel:
    """Which chips the index chose: per concept its hits, the chips meeting them (``top``),
    those plus neighbours (``selected``), out of ``total`` chips in the area, and the
    selected cores' share of the requested area."""

    concepts: list[str]
    top: int
    hits: dict[str, int] = field(default_factory=dict)
    top_chips: list[str] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    total: int = 0
    share: float = 0.0

    @property
    def reason(self) -> str:
        """Why an unselected chip was skipped."""
        return f"not in the top {self.top} of the index"

    def note(self) -> str:
        """``"partial scan: 12 of 140 chips (the index's top 10 for 'water' and their
        neighbours), 9% of the area"``."""
        names = ", ".join(repr(c) for c in self.concepts)
        pct = 100 * self.share
        share = f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"
        return (f"partial scan: {len(self.selected)} of {self.total} chips (the index's top "
                f"{self.top} for {names} and their neighbours), {share} of the area")

    def to_dict(self) -> dict[str, Any]:
        """Plain form for the coverage report."""
        return {"concepts": list(self.concepts), "top": self.top, "hits": dict(self.hits),
                "top_chips": list(self.top_chips), "selected_chips": len(self.selected),
                "chips_in_area": self.total, "selected_share": round(self.share, 6)}


def select_chips(image: RegionImage, chips: list[Chip], footprints: dict[str, list[Any]],
                 top: int) -> Funnel:
    """The Funnel of ``chips`` for index chip ``footprints`` (per concept, WGS84 polygons):
    chips whose core meets a footprint by at least one pixel, plus their 8 neighbours;
    skipped chips of the layout stay out."""
    from pyproj import Transformer
    from shapely.ops import transform, unary_union
    from shapely.strtree import STRtree

    live = [c for c in chips if c.status != "skipped"]
    boxes = [image.grid.window_box(*c.core) for c in live]
    to_grid = Transformer.from_crs("EPSG:4326", image.crs, always_xy=True).transform
    min_overlap = 0.5 * image.grid.pixel_size ** 2
    tree = STRtree(boxes) if boxes else None
    hit_idx: set[int] = set()
    for polys in footprints.values():
        for poly in polys:
            if tree is None:
                break
            geom = transform(to_grid, poly)
            for i in tree.query(geom):
                if boxes[int(i)].intersection(geom).area >= min_overlap:
                    hit_idx.add(int(i))
    by_index = {c.index: k for k, c in enumerate(live)}
    chosen = set(hit_idx)
    for k in hit_idx:
        ci, cj = live[k].index
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                n = by_index.get((ci + di, cj + dj))
                if n is not None:
                    chosen.add(n)
    area = image.grid.area
    share = 0.0
    if area.area > 0 and chosen:
        share = min(unary_union([boxes[k] for k in chosen]).intersection(area).area / area.area, 1.0)
    return Funnel(concepts=list(footprints), top=top,
                  hits={k: len(v) for k, v in footprints.items()},
                  top_chips=[live[k].id for k in sorted(hit_idx)],
                  selected=[live[k].id for k in sorted(chosen)], total=len(live), share=share)


def index_footprints(index: str | Path | ChipIndex | Searcher, concepts: list[str], top: int,
                     image: RegionImage, settings: Settings | None = None) -> dict[str, list[Any]]:
    """The WGS84 footprint polygons of the best ``top`` index chips of each concept within
    the region's bounds (``index``: a path, a ChipIndex or a Searcher)."""
    from viper_rs.index.query import Searcher, footprint_polygon

    searcher = index if isinstance(index, Searcher) else Searcher(index, settings)
    w, s, e, n = image.grid.lonlat_bounds(0, 0, image.height, image.width)
    out: dict[str, list[Any]] = {}
    for concept in concepts:
        result = searcher.search(concept, k=top, bbox=(w, s, e, n))
        out[concept] = [footprint_polygon(h.corners) for h in result.hits if h.score > 0]
    return out


def apply_funnel(image: RegionImage, chips: list[Chip], program: str,
                 index: str | Path | ChipIndex | Searcher, top: int,
                 settings: Settings | None = None) -> tuple[Funnel | None, list[str]]:
    """Skip the chips the index does not point to for ``program``'s concepts. Returns the
    Funnel (None when the program names no concept or the index cannot rank one, then
    every chip is analysed) and notes saying why the funnel was not applied."""
    if int(top) < 1:
        from viper_rs.core.errors import InputError

        raise InputError(f"--top must be at least 1, got {top}")
    concepts = program_queries(program)
    if not concepts:
        return None, ["full scan: the program names no concept to search the index for"]
    from viper_rs.index.query import Searcher

    searcher = index if isinstance(index, Searcher) else Searcher(index, settings)  # raises
    try:
        footprints = index_footprints(searcher, concepts, int(top), image, settings)
    except ViperError as exc:
        return None, [f"full scan: the index could not rank the question's concepts ({exc})"]
    funnel = select_chips(image, chips, footprints, int(top))
    keep = set(funnel.selected)
    for c in chips:
        if c.status != "skipped" and c.id not in keep:
            c.status, c.error = "skipped", funnel.reason
    return funnel, [funnel.note()]


class PlannedOnce:
    """A planner that answers its first ``plan`` call with a plan already made (the one the
    funnel read its concepts from) and hands everything else to the planner it wraps: a
    :class:`~viper_rs.planning.base.RepairingPlanner` that repairs only when that one can."""

    def __init__(self, plan: Plan, inner: Planner) -> None:
        self._plan: Plan | None = plan
        self.inner = inner
        self.name = inner.name

    def plan(self, question: str) -> Plan:
        """The stored plan once, then the inner planner's."""
        if self._plan is not None:
            plan, self._plan = self._plan, None
            return plan
        return self.inner.plan(question)

    def can_repair(self, plan: Plan) -> bool:
        """Whether the inner planner can repair ``plan``."""
        return isinstance(self.inner, RepairingPlanner) and self.inner.can_repair(plan)

    def repair(self, question: str, failures: Sequence[tuple[Plan, dict[str, str]]]) -> Plan:
        """The inner planner's repair (PlanningError when it cannot repair)."""
        if not isinstance(self.inner, RepairingPlanner):
            raise PlanningError(f"the {self.name} planner cannot repair a program")
        return self.inner.repair(question, failures)

    def accept(self, question: str, plan: Plan) -> None:
        """The inner planner's accept, when it keeps programs that worked."""
        if isinstance(self.inner, RepairingPlanner):
            self.inner.accept(question, plan)


def place_chips(places: list[dict[str, Any]], chips: list[Chip]) -> None:
    """Set each place's ``chip`` to the id of the chip whose core holds its centroid."""
    for p in places:
        col, row = p.get("centroid_px", (None, None))
        if col is None:
            continue
        for c in chips:
            r0, c0, r1, c1 = c.core
            if r0 <= row < r1 and c0 <= col < c1:
                p["chip"] = c.id
                break
