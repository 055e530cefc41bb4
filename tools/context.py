"""The per-run context tools read: image, detector, settings and the run's regions."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from viper_rs.core import budget
from viper_rs.core.config import Settings
from viper_rs.core.detector import Detector
from viper_rs.core.errors import NoGroundSize, ToolError
from viper_rs.core.georef import no_ground_size_message
from viper_rs.core.image import Image
from viper_rs.core.regions import Region
from viper_rs.core.vocabulary import query_key, split_modifiers

# What one program may make the parent hold or do (docs/limits.md).
#: Longest concept name a tool accepts (characters).
MAX_QUERY_CHARS = 200
#: Most region references one tool call may pass.
MAX_REGION_REFS_PER_CALL = 10_000
#: Most regions one program may have the parent create.
MAX_REGIONS_PER_PROGRAM = 20_000
#: Pixel masks of the regions created for one program (bytes; shared masks count once).
MAX_REGION_MASK_BYTES = 256 * 2**20


@dataclass
class ToolContext:
    """Everything tools need for one image; regions get run-wide ids here.

    ``image`` is a GeoImage, or a region's virtual image (``viper_rs.region.RegionImage``):
    tools read it through :class:`~viper_rs.core.image.Image` (``shape``,
    ``ground_sampling_distance``, ``area_unit``, ``window_area``...), never a full-size
    array of it.
    """

    image: Image
    detector: Detector
    settings: Settings = field(default_factory=Settings)
    regions: dict[int, Region] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    detect_cache: dict[str, list[Region]] = field(default_factory=dict)
    # Timed detector stages (image tower, text, components, SAM...) per detection, for the trace.
    stages: list[dict] = field(default_factory=list)
    mask_bytes: int = 0  # bytes of the distinct masks of ``regions``
    _masks: set[int] = field(default_factory=set, repr=False)  # id() of the masks counted

    def detect(self, query: str) -> list[Region]:
        """Regions of a base concept (no size/shape words), cached for this run."""
        key = query_key(query)
        if key not in self.detect_cache:
            budget.check()
            for note in self.detector.notes(self.image, key):
                if note not in self.notes:
                    self.notes.append(note)
            regions, stages = self.detector.find_with_stages(self.image, key)
            if stages:
                self.stages.append({"query": key, "stages": stages})
            self.detect_cache[key] = self.register(regions)
        return list(self.detect_cache[key])

    def register(self, regions: list[Region]) -> list[Region]:
        """Give new regions ids unique within the run; a ToolError once the program's
        regions pass MAX_REGIONS_PER_PROGRAM or MAX_REGION_MASK_BYTES."""
        for r in regions:
            if r.id < 0 or self.regions.get(r.id) is not r:
                if len(self.regions) >= MAX_REGIONS_PER_PROGRAM:
                    raise ToolError(
                        f"the program made more than {MAX_REGIONS_PER_PROGRAM} regions; "
                        "ask about fewer concepts"
                    )
                key = id(r.crop)
                if key not in self._masks:
                    self._masks.add(key)
                    self.mask_bytes += int(r.crop.nbytes)
                    if self.mask_bytes > MAX_REGION_MASK_BYTES:
                        raise ToolError(
                            f"the program's regions need more than "
                            f"{MAX_REGION_MASK_BYTES // 2**20} MB of masks; ask about fewer "
                            "concepts"
                        )
                r.id = len(self.regions)
                self.regions[r.id] = r
        return regions

    def resolve(self, ref: object) -> Region:
        """Region by id, for ids issued to this program only (a sandboxed program's
        reference); anything else is a ToolError."""
        region = self.regions.get(ref) if type(ref) is int else None
        if region is None:
            shown = repr(ref)
            raise ToolError(f"unknown region reference {shown[:40]}") from None
        return region


_CURRENT: ContextVar[ToolContext | None] = ContextVar("viper_rs_tool_context", default=None)


def current() -> ToolContext:
    """The active ToolContext; tools called outside a run raise ToolError."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise ToolError("tools can only be called while a program runs on an image")
    return ctx


@contextlib.contextmanager
def use_context(ctx: ToolContext) -> Iterator[ToolContext]:
    """Make ``ctx`` the active context inside the ``with`` block."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def require_ground_size(why: str) -> None:
    """NoGroundSize (naming the image and ``--gsd``) when the image has no ground size;
    ``why``: what is in metres (a size class, an area bound, a distance)."""
    image = current().image
    if image.ground_sampling_distance is None:
        raise NoGroundSize(no_ground_size_message(image.name, why))


def parse_phrase(name: str) -> tuple[str, str | None, str | None]:
    """Split ``"a small circular water area"`` into (``"water area"``, ``"small"``, ``"circular"``)."""
    check_query(name)
    base, size, shape = split_modifiers(re.sub(r"[^\w\s'-]", " ", name.lower()))
    if not base:
        raise ToolError(f"no object named in {name!r}")
    return base, size, shape


def check_query(name: str) -> None:
    """ToolError for a concept name longer than MAX_QUERY_CHARS."""
    if len(name) > MAX_QUERY_CHARS:
        raise ToolError(
            f"concept name of {len(name)} characters is too long (at most {MAX_QUERY_CHARS}): "
            f"{name[:40]!r}..."
        )
