"""Answer: what a person reads, the value, and all the evidence behind it.

The record and its bounded JSON (the caps are :mod:`viper_rs.core.answer_json`); its wording (the
text that names what was counted) :mod:`viper_rs.core.wording`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from viper_rs.core.answer_json import (
    MAX_ANSWER_JSON_BYTES,
    MAX_LABEL_CHARS,
    MAX_REGION_CHARS,
    MAX_TEXT_CHARS,
    NORMAL_CAPS,
    TIGHT_CAPS,
    Caps,
    add_geometry,
    dumps,
    geometry_note,
    json_safe,
    text_of,
    text_size,
)
from viper_rs.core.regions import Region
from viper_rs.core.textsafe import cut

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
        (:data:`~viper_rs.core.answer_json.NORMAL_CAPS`, see :func:`_bounded`);
        ``geometry`` adds the listed regions' polygons (GeoJSON, image CRS)."""
        return _bounded(self, geometry, NORMAL_CAPS)

    def to_json(
        self, geometry: bool = False, indent: int | None = None, extra: dict[str, Any] | None = None
    ) -> str:
        """Strict JSON (ASCII, no NaN/Infinity) of :meth:`to_dict` plus ``extra`` keys, never
        longer than :data:`~viper_rs.core.answer_json.MAX_ANSWER_JSON_BYTES` bytes
        (:func:`_capped_json`)."""
        return _capped_json(self, geometry, indent, extra)

    def to_geojson(self) -> dict[str, Any]:
        """FeatureCollection of the evidence regions (image CRS)."""
        return {
            "type": "FeatureCollection",
            "features": [r.to_geojson_feature() for r in self.regions],
        }


def _bounded(answer: Answer, geometry: bool, caps: Caps) -> dict[str, Any]:
    """Plain, strict-JSON dict of ``answer`` within ``caps``; ``geometry`` adds the listed
    regions' polygons (GeoJSON, image CRS) up to ``caps.geometry`` bytes.

    Non-finite floats become None; long strings end in a ``[cut: N more characters]``
    marker; ``regions`` lists the first ``caps.regions`` summaries (by id) with
    ``regions_total`` counting all, and ``trace_total`` / ``attempts_total`` count what the
    capped lists leave out; ``notes`` says what was cut.
    """
    notes = [cut(str(n), caps.text) for n in answer.notes[: caps.notes]]
    if len(answer.notes) > caps.notes:
        notes.append(f"{caps.notes:,} of {len(answer.notes):,} notes listed")
    listed = answer.regions[: caps.regions]
    regions = [
        json_safe(r.summary(), max_str=MAX_LABEL_CHARS, max_items=20, budget=MAX_REGION_CHARS)
        for r in listed
    ]
    if len(answer.regions) > len(listed):
        notes.append(f"{len(listed):,} of {len(answer.regions):,} regions listed "
                     "(regions_total counts all)")
    if geometry and caps.geometry > 0:
        add_geometry(regions, listed, caps.geometry)
        geometry_note({"regions": regions, "notes": notes},
                       f"the {caps.geometry:,}-byte geometry budget")
    trace = [
        json_safe(e, max_str=MAX_LABEL_CHARS, max_items=50, budget=caps.trace_entry)
        for e in answer.trace[: caps.trace]
    ]
    if len(answer.trace) > caps.trace:
        notes.append(f"{caps.trace:,} of {len(answer.trace):,} trace entries listed")
    attempts = answer.attempts
    if len(attempts) > caps.attempts:
        attempts = attempts[: caps.attempts - 1] + attempts[-1:]
        notes.append(f"{caps.attempts:,} of {len(answer.attempts):,} attempts listed "
                     "(the first ones and the last)")
    text_cap = dict(max_str=caps.text, max_items=50, budget=4 * caps.text)
    return {
        "question": None if answer.question is None else cut(str(answer.question), caps.text),
        "answer": cut(str(answer.answer), caps.text),
        "value": json_safe(answer.value, **text_cap),
        "kind": cut(str(answer.kind), MAX_LABEL_CHARS),
        "area_unit": cut(str(answer.area_unit), MAX_LABEL_CHARS),
        "program": None if answer.program is None else cut(str(answer.program), caps.program),
        "trace": trace,
        "trace_total": len(answer.trace),
        "regions": regions,
        "regions_total": len(answer.regions),
        "error": json_safe(answer.error, **text_cap),
        "timings": json_safe(answer.timings, max_str=MAX_LABEL_CHARS, max_items=50, budget=5_000),
        "detector": json_safe(answer.detector, max_str=MAX_LABEL_CHARS),
        "planner": json_safe(answer.planner, max_str=MAX_LABEL_CHARS),
        "notes": notes,
        "image": json_safe(answer.image, max_str=1_000, max_items=50, budget=20_000),
        "stdout": cut(str(answer.stdout), caps.stdout),
        "attempts": [
            json_safe(a, max_str=caps.program, max_items=50, budget=caps.attempt)
            for a in attempts
        ],
        "attempts_total": len(answer.attempts),
        "places": json_safe(answer.places, max_str=MAX_LABEL_CHARS, max_items=200, budget=200_000),
        "places_total": int(answer.places_total),
    }


def _minimal(answer: Answer) -> dict[str, Any]:
    """Every key of ``answer`` with the smallest content: the floor of :func:`_capped_json`."""
    d = _bounded(type(answer)(
        question=None if answer.question is None else cut(str(answer.question), 200),
        answer=cut(str(answer.answer), 200),
        value=answer.value if isinstance(answer.value, bool | int | float | None) else None,
        kind=answer.kind,
        error=None if answer.error is None else {
            "type": cut(text_of(_get(answer.error, "type")), 100),
            "message": cut(text_of(_get(answer.error, "message")), 200),
        },
    ), False, TIGHT_CAPS)
    d["regions_total"], d["trace_total"] = len(answer.regions), len(answer.trace)
    d["attempts_total"] = len(answer.attempts)
    d["notes"] = [f"answer JSON over {MAX_ANSWER_JSON_BYTES:,} bytes: only the answer is listed"]
    return d


def _capped_json(
    answer: Answer, geometry: bool = False, indent: int | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Strict JSON (ASCII, no NaN/Infinity) of :func:`_bounded` plus ``extra`` keys,
    never longer than :data:`MAX_ANSWER_JSON_BYTES` bytes.

    Over the cap, region polygons are dropped (from the last listed region back), then
    the answer is listed with tighter caps, each step with a note.
    """
    more = json_safe(extra or {}, max_str=MAX_TEXT_CHARS, max_items=100, budget=50_000)
    d = {**_bounded(answer, geometry, NORMAL_CAPS), **more}
    text = dumps(d, indent)
    if len(text) <= MAX_ANSWER_JSON_BYTES:
        return text
    with_geometry = [r for r in d["regions"] if "geometry" in r]
    while with_geometry and len(text) > MAX_ANSWER_JSON_BYTES:
        excess = len(text) - MAX_ANSWER_JSON_BYTES
        while with_geometry and excess > 0:  # drop from the last region back
            r = with_geometry.pop()
            excess -= text_size(r.pop("geometry"), indent, depth=3)
            r["geometry_omitted"] = True
        geometry_note(d, f"the {MAX_ANSWER_JSON_BYTES:,}-byte answer cap")
        text = dumps(d, indent)
    if len(text) <= MAX_ANSWER_JSON_BYTES:
        return text
    d = {**_bounded(answer, False, TIGHT_CAPS), **more}
    d["notes"].append(f"answer JSON over {MAX_ANSWER_JSON_BYTES:,} bytes: listed with "
                      "tighter caps (no geometry, fewer regions and trace entries, shorter texts)")
    text = dumps(d, indent)
    if len(text) <= MAX_ANSWER_JSON_BYTES:
        return text
    return dumps(_minimal(answer), indent)  # cannot happen with the caps above; kept as a floor


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else d
