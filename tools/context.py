"""The per-run context tools read: image, detector, settings and the run's regions."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from viper_rs.config import Settings
from viper_rs.errors import ToolError
from viper_rs.geo import GeoImage
from viper_rs.regions import Region

SIZE_WORDS = ("small", "medium", "large")
SHAPE_WORDS = ("square", "rectangular", "circular")
_SHAPE_ALIASES = {"round": "circular", "rectangle": "rectangular", "squared": "square"}
_ARTICLES = ("a", "an", "the", "some", "any")


@dataclass
class ToolContext:
    """Everything tools need for one image; regions get run-wide ids here."""

    image: GeoImage
    detector: object  # viper_rs.vision.base.Detector
    settings: Settings = field(default_factory=Settings)
    regions: dict[int, Region] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    detect_cache: dict[str, list[Region]] = field(default_factory=dict)
    # Timed detector stages (image tower, text, components, SAM...) per detection, for the trace.
    stages: list[dict] = field(default_factory=list)

    def detect(self, query: str) -> list[Region]:
        """Regions of a base concept (no size/shape words), cached for this run."""
        key = " ".join(query.lower().split())
        if key not in self.detect_cache:
            for note in self.detector.notes(self.image, key):
                if note not in self.notes:
                    self.notes.append(note)
            finder = getattr(self.detector, "find_with_stages", None)
            if finder is not None:
                regions, stages = finder(self.image, key)
                self.stages.append({"query": key, "stages": stages})
            else:
                regions = self.detector.find(self.image, key)
            self.detect_cache[key] = self.register(regions)
        return list(self.detect_cache[key])

    def register(self, regions: list[Region]) -> list[Region]:
        """Give new regions ids unique within the run."""
        for r in regions:
            if r.id < 0 or self.regions.get(r.id) is not r:
                r.id = len(self.regions)
                self.regions[r.id] = r
        return regions

    def resolve(self, ref: int) -> Region:
        """Region by id (from a sandboxed program's reference)."""
        try:
            return self.regions[int(ref)]
        except (KeyError, TypeError, ValueError):
            raise ToolError(f"unknown region reference {ref!r}") from None


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


def parse_phrase(name: str) -> tuple[str, str | None, str | None]:
    """Split ``"a small circular water area"`` into (``"water area"``, ``"small"``, ``"circular"``)."""
    words = re.sub(r"[^\w\s'-]", " ", name.lower()).split()
    size = shape = None
    while words and (words[0] in _ARTICLES or words[0] in SIZE_WORDS or words[0] in SHAPE_WORDS
                     or words[0] in _SHAPE_ALIASES):
        w = words.pop(0)
        if w in SIZE_WORDS:
            size = w
        elif w in SHAPE_WORDS or w in _SHAPE_ALIASES:
            shape = _SHAPE_ALIASES.get(w, w)
    if not words:
        raise ToolError(f"no object named in {name!r}")
    return " ".join(words), size, shape
