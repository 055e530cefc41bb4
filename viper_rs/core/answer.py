"""Answer: what a person reads, the value, and all the evidence behind it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from viper_rs.core.regions import Region
from viper_rs.core.textsafe import cut

KINDS = ("presence", "count", "area", "comparison", "other")

# Output caps of one answer (issue 13): its JSON is bounded whatever the program did.
MAX_ANSWER_JSON_BYTES = 8_000_000  # whole JSON text of one answer (ASCII: bytes == chars)
MAX_REGIONS_LISTED = 1_000  # region summaries listed; regions_total and a note count the rest
MAX_GEOMETRY_BYTES = 4_000_000  # compact GeoJSON of the listed polygons; later ones omitted
MAX_TEXT_CHARS = 10_000  # question, answer text, value string, error message, each note
MAX_NOTES = 50  # notes listed (plus the notes on what was cut)
MAX_PROGRAM_CHARS = 20_000  # the program and each string of an attempt (sandbox limit too)
MAX_STDOUT_CHARS = 20_000  # captured print() output (the sandbox limit too)
MAX_LABEL_CHARS = 200  # each string of a region summary or trace entry (label, query, ...)
MAX_REGION_CHARS = 2_000  # text budget of one region summary
MAX_TRACE_ENTRIES = 200  # trace entries listed (the sandbox allows 200 tool calls)
MAX_TRACE_ENTRY_CHARS = 4_000  # text budget of one trace entry (args, result, detections)
MAX_ATTEMPTS_LISTED = 20  # attempts listed: the first 19 and the last
MAX_ATTEMPT_CHARS = 60_000  # text budget of one attempt (program, LLM reply, error, meta)
MAX_DEPTH = 64  # nesting levels kept in values, trace and attempts (the sandbox's limit)


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

    @property
    def ok(self) -> bool:
        """True when the question was answered without error."""
        return self.error is None

    def to_dict(self, geometry: bool = False) -> dict[str, Any]:
        """Plain, strict-JSON dict within the module's caps; ``geometry`` adds the listed
        regions' polygons (GeoJSON, image CRS) up to :data:`MAX_GEOMETRY_BYTES`.

        Non-finite floats become None; long strings end in a ``[cut: N more characters]``
        marker; ``regions`` lists the first :data:`MAX_REGIONS_LISTED` summaries (by id)
        with ``regions_total`` counting all, and ``trace_total`` / ``attempts_total`` count
        what the capped lists leave out; ``notes`` says what was cut.
        """
        return self._bounded(geometry, NORMAL_CAPS)

    def to_json(
        self, geometry: bool = False, indent: int | None = None, extra: dict[str, Any] | None = None
    ) -> str:
        """Strict JSON (ASCII, no NaN/Infinity) of :meth:`to_dict` plus ``extra`` keys,
        never longer than :data:`MAX_ANSWER_JSON_BYTES` bytes.

        Over the cap, region polygons are dropped (from the last listed region back), then
        the answer is listed with tighter caps, each step with a note.
        """
        more = json_safe(extra or {}, max_str=MAX_TEXT_CHARS, max_items=100, budget=50_000)
        d = {**self._bounded(geometry, NORMAL_CAPS), **more}
        text = _dumps(d, indent)
        if len(text) <= MAX_ANSWER_JSON_BYTES:
            return text
        with_geometry = [r for r in d["regions"] if "geometry" in r]
        while with_geometry and len(text) > MAX_ANSWER_JSON_BYTES:
            excess = len(text) - MAX_ANSWER_JSON_BYTES
            while with_geometry and excess > 0:  # drop from the last region back
                r = with_geometry.pop()
                excess -= _text_size(r.pop("geometry"), indent, depth=3)
                r["geometry_omitted"] = True
            _geometry_note(d, f"the {MAX_ANSWER_JSON_BYTES:,}-byte answer cap")
            text = _dumps(d, indent)
        if len(text) <= MAX_ANSWER_JSON_BYTES:
            return text
        d = {**self._bounded(False, TIGHT_CAPS), **more}
        d["notes"].append(f"answer JSON over {MAX_ANSWER_JSON_BYTES:,} bytes: listed with "
                          "tighter caps (no geometry, fewer regions and trace entries, shorter texts)")
        text = _dumps(d, indent)
        if len(text) <= MAX_ANSWER_JSON_BYTES:
            return text
        return _dumps(self._minimal(), indent)  # cannot happen with the caps above; kept as a floor

    def _bounded(self, geometry: bool, caps: Caps) -> dict[str, Any]:
        """The dict of :meth:`to_dict` under ``caps``."""
        notes = [cut(str(n), caps.text) for n in self.notes[: caps.notes]]
        if len(self.notes) > caps.notes:
            notes.append(f"{caps.notes:,} of {len(self.notes):,} notes listed")
        listed = self.regions[: caps.regions]
        regions = [
            json_safe(r.summary(), max_str=MAX_LABEL_CHARS, max_items=20, budget=MAX_REGION_CHARS)
            for r in listed
        ]
        if len(self.regions) > len(listed):
            notes.append(f"{len(listed):,} of {len(self.regions):,} regions listed "
                         "(regions_total counts all)")
        if geometry and caps.geometry > 0:
            _add_geometry(regions, listed, caps.geometry)
            _geometry_note({"regions": regions, "notes": notes},
                           f"the {caps.geometry:,}-byte geometry budget")
        trace = [
            json_safe(e, max_str=MAX_LABEL_CHARS, max_items=50, budget=caps.trace_entry)
            for e in self.trace[: caps.trace]
        ]
        if len(self.trace) > caps.trace:
            notes.append(f"{caps.trace:,} of {len(self.trace):,} trace entries listed")
        attempts = self.attempts
        if len(attempts) > caps.attempts:
            attempts = attempts[: caps.attempts - 1] + attempts[-1:]
            notes.append(f"{caps.attempts:,} of {len(self.attempts):,} attempts listed "
                         "(the first ones and the last)")
        text_cap = dict(max_str=caps.text, max_items=50, budget=4 * caps.text)
        return {
            "question": None if self.question is None else cut(str(self.question), caps.text),
            "answer": cut(str(self.answer), caps.text),
            "value": json_safe(self.value, **text_cap),
            "kind": cut(str(self.kind), MAX_LABEL_CHARS),
            "area_unit": cut(str(self.area_unit), MAX_LABEL_CHARS),
            "program": None if self.program is None else cut(str(self.program), caps.program),
            "trace": trace,
            "trace_total": len(self.trace),
            "regions": regions,
            "regions_total": len(self.regions),
            "error": json_safe(self.error, **text_cap),
            "timings": json_safe(self.timings, max_str=MAX_LABEL_CHARS, max_items=50, budget=5_000),
            "detector": json_safe(self.detector, max_str=MAX_LABEL_CHARS),
            "planner": json_safe(self.planner, max_str=MAX_LABEL_CHARS),
            "notes": notes,
            "image": json_safe(self.image, max_str=1_000, max_items=50, budget=20_000),
            "stdout": cut(str(self.stdout), caps.stdout),
            "attempts": [
                json_safe(a, max_str=caps.program, max_items=50, budget=caps.attempt)
                for a in attempts
            ],
            "attempts_total": len(self.attempts),
            "places": json_safe(self.places, max_str=MAX_LABEL_CHARS, max_items=200, budget=200_000),
            "places_total": int(self.places_total),
        }

    def _minimal(self) -> dict[str, Any]:
        """Every key with the smallest content: the floor of :meth:`to_json`."""
        d = Answer(
            question=None if self.question is None else cut(str(self.question), 200),
            answer=cut(str(self.answer), 200),
            value=self.value if isinstance(self.value, bool | int | float | None) else None,
            kind=self.kind,
            error=None if self.error is None else {
                "type": cut(_str(_get(self.error, "type")), 100),
                "message": cut(_str(_get(self.error, "message")), 200),
            },
        )._bounded(False, TIGHT_CAPS)
        d["regions_total"], d["trace_total"] = len(self.regions), len(self.trace)
        d["attempts_total"] = len(self.attempts)
        d["notes"] = [f"answer JSON over {MAX_ANSWER_JSON_BYTES:,} bytes: only the answer is listed"]
        return d

    def to_geojson(self) -> dict[str, Any]:
        """FeatureCollection of the evidence regions (image CRS)."""
        return {
            "type": "FeatureCollection",
            "features": [r.to_geojson_feature() for r in self.regions],
        }


@dataclass(frozen=True)
class Caps:
    """Per-answer output caps (see the module constants)."""

    regions: int  # region summaries listed
    text: int  # question, answer, value string, error message, each note (characters)
    notes: int  # notes listed
    program: int  # program, and each string of an attempt (characters)
    stdout: int  # captured print() output (characters)
    trace: int  # trace entries listed
    trace_entry: int  # text budget of one trace entry (characters)
    attempts: int  # attempts listed
    attempt: int  # text budget of one attempt (characters)
    geometry: int  # compact GeoJSON bytes of region polygons (0: none)


NORMAL_CAPS = Caps(
    regions=MAX_REGIONS_LISTED, text=MAX_TEXT_CHARS, notes=MAX_NOTES, program=MAX_PROGRAM_CHARS,
    stdout=MAX_STDOUT_CHARS, trace=MAX_TRACE_ENTRIES, trace_entry=MAX_TRACE_ENTRY_CHARS,
    attempts=MAX_ATTEMPTS_LISTED, attempt=MAX_ATTEMPT_CHARS, geometry=MAX_GEOMETRY_BYTES,
)
#: Used when an answer's JSON with NORMAL_CAPS is over MAX_ANSWER_JSON_BYTES; fits with any content.
TIGHT_CAPS = Caps(
    regions=100, text=1_000, notes=10, program=5_000, stdout=1_000, trace=20, trace_entry=1_000,
    attempts=3, attempt=5_000, geometry=0,
)


def _add_geometry(summaries: list[dict[str, Any]], regions: list[Region], budget: int) -> None:
    """Add each region's polygon (GeoJSON) to its summary while their compact JSON fits in
    ``budget`` bytes; a polygon that does not fit (or has non-finite coordinates) is left out."""
    from shapely.geometry import mapping

    used = 0
    for d, r in zip(summaries, regions, strict=True):
        if r.polygon is None:
            continue
        try:
            text = json.dumps(mapping(r.polygon), allow_nan=False, separators=(",", ":"))
        except (ValueError, TypeError, AttributeError):
            text = None
        if text is None or used + len(text) > budget:
            d["geometry_omitted"] = True
            continue
        used += len(text)
        d["geometry"] = json.loads(text)


def _geometry_note(d: dict[str, Any], reason: str) -> None:
    """(Re)write the note on listed regions whose polygon was left out; none when all are in."""
    omitted = sum(1 for r in d["regions"] if r.get("geometry_omitted"))
    d["notes"][:] = [n for n in d["notes"] if not n.startswith(_GEOMETRY_NOTE)]
    if omitted:
        total = omitted + sum(1 for r in d["regions"] if "geometry" in r)
        d["notes"].append(f"{_GEOMETRY_NOTE} {omitted:,} of {total:,} listed regions with one "
                          f"(over {reason})")


_GEOMETRY_NOTE = "geometry omitted for"


def _dumps(obj: Any, indent: int | None) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=True, allow_nan=False)


def _text_size(obj: Any, indent: int | None, depth: int) -> int:
    """Characters ``obj`` takes in :func:`_dumps` output when nested ``depth`` levels deep."""
    text = _dumps(obj, indent)
    return len(text) + (text.count("\n") * depth * indent if indent else 0)


def json_safe(
    value: Any,
    *,
    max_str: int | None = None,
    max_items: int | None = None,
    budget: int | None = None,
) -> Any:
    """A copy of ``value`` that strict JSON can hold: non-finite floats (and ints over
    1,000 bits) become None, numpy values Python ones, tuples and sets lists, keys str,
    other objects their ``str``; nesting deeper than :data:`MAX_DEPTH` becomes ``"..."``.

    Optional bounds: strings cut to ``max_str`` characters, lists and dicts to
    ``max_items`` items, and about ``budget`` characters of content in all; what is left
    out is marked (``"... N more items"`` in a list, key ``"..."`` in a dict).
    """
    left = [budget if budget is not None else -1]
    unbounded = budget is None

    def spend(n: int) -> None:
        if not unbounded:
            left[0] -= n

    def out_of_budget() -> bool:
        return not unbounded and left[0] <= 0

    def text(s: str) -> str:
        limit = max_str
        if not unbounded:
            room = max(left[0], 16)
            limit = room if limit is None else min(limit, room)
        s = cut(s, limit)
        spend(len(s) + 2)
        return s

    def walk(o: Any, depth: int) -> Any:
        if o is None or isinstance(o, bool):
            spend(5)
            return o
        if isinstance(o, int):
            spend(8)
            return int(o) if o.bit_length() <= 1000 else None
        if isinstance(o, float):
            spend(8)
            return float(o) if math.isfinite(o) else None
        if isinstance(o, str):
            return text(o)
        if isinstance(o, np.generic):
            return walk(o.item(), depth)
        if isinstance(o, np.ndarray):
            flat = o.ravel()
            if max_items is not None and flat.size > max_items:
                return walk(flat[:max_items].tolist() + [_more(flat.size - max_items)], depth)
            return walk(o.tolist(), depth)
        if depth >= MAX_DEPTH:
            spend(5)
            return "..."
        if isinstance(o, dict):
            spend(2)
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(o.items()):
                if (max_items is not None and i >= max_items) or out_of_budget():
                    out["..."] = _more(len(o) - i, "keys")
                    break
                key = text(k if isinstance(k, str) else _str(k))
                out[key] = walk(v, depth + 1)
            return out
        if isinstance(o, list | tuple | set | frozenset):
            spend(2)
            items = []
            for i, v in enumerate(o):
                if (max_items is not None and i >= max_items) or out_of_budget():
                    items.append(_more(len(o) - i))
                    break
                items.append(walk(v, depth + 1))
            return items
        return text(_str(o))

    return walk(value, 0)


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else d


def _more(n: int, what: str = "items") -> str:
    return f"... {n:,} more {what} not listed"


def _str(o: Any) -> str:
    try:
        return str(o)
    except Exception:  # noqa: BLE001 - an object whose str() fails is still listed
        return f"<unprintable {type(o).__name__}>"


def dumps_strict(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (via :func:`json_safe`: no NaN/Infinity, ASCII)."""
    return _dumps(json_safe(value), indent)


def format_area(value: float, unit: str) -> str:
    """``"1234.5 m2"``, or pixels with a hint when the image has no ground size."""
    if unit == "m2":
        return f"{value:.1f} m2"
    return f"{value:.0f} px (the image has no ground size; give its GSD, e.g. --gsd 0.3, to get m2)"


def normalise(value: Any, kind_hint: str | None, area_unit: str) -> tuple[str, Any, str]:
    """Map a program's return value to (text, value, kind)."""
    hint = kind_hint if kind_hint in KINDS else None
    if isinstance(value, bool):
        kind = hint if hint in ("presence", "comparison") else "presence"
        return ("yes" if value else "no"), value, kind
    if isinstance(value, int):
        if hint == "area":
            return format_area(float(value), area_unit), float(value), "area"
        return str(value), value, hint if hint in ("count", "other") else "count"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value), value, "other"
        if hint in (None, "area"):
            return format_area(value, area_unit), value, "area"
        return f"{value:g}", value, hint
    if isinstance(value, str):
        return value, value, hint or "other"
    if isinstance(value, list) and all(isinstance(v, dict) and "__region__" in v for v in value):
        labels = sorted({str(v.get("label", "")) for v in value})
        text = f"{len(value)} region{'s' if len(value) != 1 else ''}"
        if labels and labels != [""]:
            text += f" ({', '.join(labels)})"
        return text, len(value), "other"
    if isinstance(value, dict) and "__region__" in value:
        return f"1 region ({value.get('label', '')})", 1, "other"
    text = json.dumps(value, default=str)
    if len(text) > 2000:
        text = text[:2000] + "..."
    return text, text, "other"


# ---------------------------------------------------------------------------- readable text
def _relation_text() -> dict[str, str]:
    """Relation tool -> the words that read it ("water areas next to roads"): the
    RSVQA-HR phrase of the shared vocabulary."""
    from viper_rs.core.vocabulary import RELATIONS

    return {tool: phrases[0] for tool, phrases in RELATIONS.items()}


_RELATION_TEXT = _relation_text()
#: Answer kinds each returning tool's result may have.
_TOOL_KINDS = {"count": ("count", "other"), "area": ("area",), "exists": ("presence",),
               "compare": ("comparison", "presence")}


@dataclass(frozen=True)
class _Label:
    """A described region set: ``noun`` (singular, pluralised by count) then ``tail``."""

    noun: str
    tail: str = ""

    def text(self, n: int | None) -> str:
        return f"{plural(self.noun) if n != 1 else self.noun}{self.tail}"


def plural(phrase: str) -> str:
    """``phrase`` with its last word in the plural ("water area" -> "water areas")."""
    from viper_rs.core.vocabulary import INVARIANT_NOUNS

    head, _, word = phrase.rpartition(" ")
    if not word or word in INVARIANT_NOUNS:
        out = word
    elif word.endswith(("s", "x", "z", "ch", "sh")):
        out = word + "es"
    elif word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        out = word[:-1] + "ies"
    else:
        out = word + "s"
    return f"{head} {out}" if head else out


def _set_key(summary: Any) -> tuple | None:
    """Key of a traced region list summary (``{"regions": n, "ids": [...]}``)."""
    if isinstance(summary, list) and not summary:  # an empty region list
        return (0, ())
    if isinstance(summary, dict) and isinstance(summary.get("regions"), int):
        ids = summary.get("ids")
        return (summary["regions"], tuple(ids) if isinstance(ids, list) else ())
    return None


def _trace_labels(trace: list[dict[str, Any]]) -> dict[tuple, _Label]:
    """What each region list of the trace holds, by :func:`_set_key`, from the calls that
    made it (find, filter_size, filter_shape and the relation tools)."""
    labels: dict[tuple, _Label] = {}

    def of(arg: Any) -> _Label | None:
        if isinstance(arg, str):
            return _Label(" ".join(arg.lower().split()))
        key = _set_key(arg)
        return labels.get(key) if key is not None else None

    for entry in trace:
        if not isinstance(entry, dict) or "error" in entry:
            continue
        key = _set_key(entry.get("result"))
        args = entry.get("args") if isinstance(entry.get("args"), list) else []
        tool = entry.get("tool")
        label: _Label | None = None
        if tool == "find" and args and isinstance(args[0], str):
            label = of(args[0])
        elif tool in ("filter_size", "filter_shape") and len(args) >= 2:
            src = of(args[0])
            if src is not None and isinstance(args[1], str):
                label = _Label(f"{args[1]} {src.noun}", src.tail)
        elif tool in _RELATION_TEXT and len(args) >= 2:
            a, b = of(args[0]), of(args[1])
            if a is not None and b is not None:
                label = _Label(a.noun, f"{a.tail} {_RELATION_TEXT[tool]} {b.text(2)}")
        if key is not None and label is not None:
            labels[key] = label
    return labels


def _operand(arg: Any, labels: dict[tuple, _Label], regions: list[Region]
             ) -> tuple[int | None, _Label | None]:
    """(count, label) of one argument of count/exists/compare/area as traced."""
    if isinstance(arg, bool):
        return None, None
    if isinstance(arg, int):
        return arg, None
    if isinstance(arg, str):
        from viper_rs.core.vocabulary import split_modifiers

        phrase = " ".join(arg.lower().split())
        base, size, shape = split_modifiers(phrase)
        n = None
        if base == phrase:  # a plain concept name: its regions are the detector's
            n = sum(1 for r in regions if str(r.query).lower() == phrase)
        return n, _Label(phrase)
    key = _set_key(arg)
    if key is None:
        return None, None
    return key[0], labels.get(key)


def answer_parts(answer: Answer) -> tuple[str, str]:
    """(before, after): what to write around ``answer.answer`` so it names what was
    counted, measured or compared ("4 small buildings vs 4 large buildings → " + "no",
    "10" + " buildings", "4231.7 m2" + " of trees"); ``("", "")`` when the trace does not
    say. Read from the trace of the tool call whose result the program returned."""
    if answer.error is not None or not answer.trace:
        return "", ""
    last = answer.trace[-1]
    if not isinstance(last, dict) or "error" in last:
        return "", ""
    tool = last.get("tool")
    if answer.kind not in _TOOL_KINDS.get(str(tool), ()):
        return "", ""
    result = last.get("result")
    if tool != "area" and (type(result) is not type(answer.value) or result != answer.value):
        return "", ""
    args = last.get("args") if isinstance(last.get("args"), list) else []
    if not args:
        return "", ""
    labels = _trace_labels(answer.trace[:-1])
    n, label = _operand(args[0], labels, answer.regions)
    if tool == "compare":
        if len(args) < 2:
            return "", ""
        m, other = _operand(args[1], labels, answer.regions)
        if label is None and other is None:
            return "", ""
        return f"{_side(n, label)} vs {_side(m, other)} → ", ""
    if label is None:
        return "", ""
    if tool == "count":
        return "", f" {label.text(answer.value if isinstance(answer.value, int) else None)}"
    if tool == "area":
        return "", f" of {label.text(2)}"
    return "", f" ({n if n is not None else '?'} {label.text(n)})"


def _side(n: int | None, label: _Label | None) -> str:
    if label is None:
        return "?" if n is None else str(n)
    return label.text(2) if n is None else f"{n} {label.text(n)}"


def readable(answer: Answer) -> str:
    """``answer.answer`` with what it counted, measured or compared (see
    :func:`answer_parts`); the value and kind are not changed."""
    before, after = answer_parts(answer)
    return f"{before}{answer.answer}{after}"
