"""Bounded, strict JSON: the output caps of one answer (issue 13), the region-geometry
budget, and the value cleaning every JSON text of the project goes through
(:func:`json_safe`). The Answer record applies them (:meth:`~viper_rs.core.answer.Answer.to_json`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from viper_rs.core.regions import Region
from viper_rs.core.textsafe import cut

#: Output caps of one answer (issue 13): its JSON is bounded whatever the program did.
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


def add_geometry(summaries: list[dict[str, Any]], regions: list[Region], budget: int) -> None:
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


def geometry_note(d: dict[str, Any], reason: str) -> None:
    """(Re)write the note on listed regions whose polygon was left out; none when all are in."""
    omitted = sum(1 for r in d["regions"] if r.get("geometry_omitted"))
    d["notes"][:] = [n for n in d["notes"] if not n.startswith(_GEOMETRY_NOTE)]
    if omitted:
        total = omitted + sum(1 for r in d["regions"] if "geometry" in r)
        d["notes"].append(f"{_GEOMETRY_NOTE} {omitted:,} of {total:,} listed regions with one "
                          f"(over {reason})")


_GEOMETRY_NOTE = "geometry omitted for"


def dumps(obj: Any, indent: int | None) -> str:
    """Strict ASCII JSON text of an already-safe value (no NaN/Infinity)."""
    return json.dumps(obj, indent=indent, ensure_ascii=True, allow_nan=False)


def text_size(obj: Any, indent: int | None, depth: int) -> int:
    """Characters ``obj`` takes in :func:`dumps` output when nested ``depth`` levels deep."""
    text = dumps(obj, indent)
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
                key = text(k if isinstance(k, str) else text_of(k))
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
        return text(text_of(o))

    return walk(value, 0)


def _more(n: int, what: str = "items") -> str:
    return f"... {n:,} more {what} not listed"


def text_of(o: Any) -> str:
    """``str(o)``, or a placeholder naming its type when ``str`` fails."""
    try:
        return str(o)
    except Exception:  # noqa: BLE001 - an object whose str() fails is still listed
        return f"<unprintable {type(o).__name__}>"


def dumps_strict(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (via :func:`json_safe`: no NaN/Infinity, ASCII)."""
    return dumps(json_safe(value), indent)
