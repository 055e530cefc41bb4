"""Answer: what a person reads, the value, and all the evidence behind it.

The record only: its bounded JSON is :mod:`viper_rs.core.answer_json`, its wording (the
text that names what was counted) :mod:`viper_rs.core.wording`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from viper_rs.core.answer_json import NORMAL_CAPS, answer_json, bounded
from viper_rs.core.regions import Region

KINDS = ("presence", "count", "area", "comparison", "other")


@dataclass(frozen=True)
class RegionSet:
    """A list of regions a tool call took or gave: their ids, in the list's order, and
    their distinct labels (sorted)."""

    ids: tuple[int, ...]
    labels: tuple[str, ...] = ()

    @classmethod
    def of(cls, regions: list[Region] | tuple[Region, ...]) -> RegionSet:
        """The set of a list of regions."""
        return cls(tuple(r.id for r in regions), tuple(sorted({str(r.label) for r in regions})))

    def __len__(self) -> int:
        return len(self.ids)


#: What a :class:`ToolCall` keeps of one argument or result: a region list as its
#: :class:`RegionSet`, a number, bool, string or None as itself; other values become None
#: (the trace summarises them).
CallValue = RegionSet | bool | int | float | str | None


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a program, as the executor ran it: the tool, what the registry
    declares of it (``Tool.kinds``: the answer kinds its result may have; ``Tool.describes``:
    how answers name the region list it returns), the positional and keyword arguments and
    the result (:data:`CallValue`), and whether it failed."""

    tool: str
    kinds: tuple[str, ...] = ()
    describes: str | None = None
    args: tuple[CallValue, ...] = ()
    kwargs: dict[str, CallValue] = field(default_factory=dict)
    result: CallValue = None
    failed: bool = False


@dataclass
class Answer:
    """One answered (or failed) question. ``error`` is None or ``{type, message}``.

    ``attempts`` lists every program tried for the question, in order (the answer is the
    last one's): ``{attempt, planner, program, error, cached, plan_ms, run_ms, ...}`` plus,
    for LLM plans, model, endpoint, prompt hash and size, the raw reply and token usage.
    """

    question: str | None
    answer: str
    value: bool | int | float | str | None
    kind: str
    program: str | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    error: dict[str, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    detector: str | None = None
    planner: str | None = None
    notes: list[str] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)
    area_unit: str = "m2"
    stdout: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: Ranked places of a "where" program (one returning regions), see viper_rs.agent.places.
    places: list[dict[str, Any]] = field(default_factory=list)
    places_total: int = 0
    #: Every tool call of the program as data, in order (what was counted, filtered and
    #: compared, by region id), from the executor; not part of the JSON (``trace`` is).
    calls: list[ToolCall] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the question was answered without error."""
        return self.error is None

    def to_dict(self, geometry: bool = False) -> dict[str, Any]:
        """Plain, strict-JSON dict within the output caps
        (:data:`~viper_rs.core.answer_json.NORMAL_CAPS`, see :func:`~viper_rs.core.answer_json.bounded`);
        ``geometry`` adds the listed regions' polygons (GeoJSON, image CRS)."""
        return bounded(self, geometry, NORMAL_CAPS)

    def to_json(
        self, geometry: bool = False, indent: int | None = None, extra: dict[str, Any] | None = None
    ) -> str:
        """Strict JSON (ASCII, no NaN/Infinity) of :meth:`to_dict` plus ``extra`` keys, never
        longer than :data:`~viper_rs.core.answer_json.MAX_ANSWER_JSON_BYTES` bytes
        (:func:`~viper_rs.core.answer_json.answer_json`)."""
        return answer_json(self, geometry, indent, extra)

    def to_geojson(self) -> dict[str, Any]:
        """FeatureCollection of the evidence regions (image CRS)."""
        return {
            "type": "FeatureCollection",
            "features": [r.to_geojson_feature() for r in self.regions],
        }
