"""An answer's wording: the text of a program's value (:func:`normalise`), and the words
around it that name what was counted, measured or compared (:func:`answer_parts`,
:func:`readable`), read from the tool calls the executor recorded (``Answer.calls``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from viper_rs.core.answer import KINDS, Answer, CallValue, RegionSet, ToolCall
from viper_rs.core.regions import Region
from viper_rs.core.vocabulary import INVARIANT_NOUNS, RELATIONS, query_key, split_modifiers


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
#: Relation tool -> the words that read it ("water areas next to roads"): the RSVQA-HR
#: phrase of the shared vocabulary.
_RELATION_TEXT: dict[str, str] = {tool: phrases[0] for tool, phrases in RELATIONS.items()}


@dataclass(frozen=True)
class Label:
    """A described region set: ``noun`` (singular, pluralised by count) then ``tail``."""

    noun: str
    tail: str = ""

    def text(self, n: int | None) -> str:
        """The label for ``n`` regions ("1 building" / "buildings next to roads")."""
        return f"{plural(self.noun) if n != 1 else self.noun}{self.tail}"


def plural(phrase: str) -> str:
    """``phrase`` with its last word in the plural ("water area" -> "water areas")."""
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


def call_labels(calls: list[ToolCall]) -> dict[tuple[int, ...], Label]:
    """What each region list of the calls holds, by its ids, from the calls that made it
    (as their tools' ``describes`` says: find, the size and shape filters, the relations);
    a later call that gives the same list relabels it."""
    labels: dict[tuple[int, ...], Label] = {}

    def of(arg: CallValue) -> Label | None:
        if isinstance(arg, str):
            return Label(query_key(arg))
        return labels.get(arg.ids) if isinstance(arg, RegionSet) else None

    for call in calls:
        if call.failed:
            continue
        args = call.args
        label: Label | None = None
        if call.describes == "concept" and args and isinstance(args[0], str):
            label = of(args[0])
        elif call.describes == "modifier" and len(args) >= 2:
            src = of(args[0])
            if src is not None and isinstance(args[1], str):
                label = Label(f"{args[1]} {src.noun}", src.tail)
        elif call.describes == "relation" and call.tool in _RELATION_TEXT and len(args) >= 2:
            a, b = of(args[0]), of(args[1])
            if a is not None and b is not None:
                label = Label(a.noun, f"{a.tail} {_RELATION_TEXT[call.tool]} {b.text(2)}")
        if isinstance(call.result, RegionSet) and label is not None:
            labels[call.result.ids] = label
    return labels


def _operand(arg: CallValue, labels: dict[tuple[int, ...], Label], regions: list[Region]
             ) -> tuple[int | None, Label | None]:
    """(count, label) of one argument of count/exists/compare/area as called."""
    if isinstance(arg, bool):
        return None, None
    if isinstance(arg, int):
        return arg, None
    if isinstance(arg, str):
        phrase = query_key(arg)
        base, size, shape = split_modifiers(phrase)
        n = None
        if base == phrase:  # a plain concept name: its regions are the detector's
            n = sum(1 for r in regions if str(r.query).lower() == phrase)
        return n, Label(phrase)
    if not isinstance(arg, RegionSet):
        return None, None
    return len(arg), labels.get(arg.ids)


def answer_parts(answer: Answer) -> tuple[str, str]:
    """(before, after): what to write around ``answer.answer`` so it names what was
    counted, measured or compared ("4 small buildings vs 4 large buildings → " + "no",
    "10" + " buildings", "4231.7 m2" + " of trees"); ``("", "")`` when the calls do not
    say. Read from the tool call whose result the program returned (the last one)."""
    if answer.error is not None or not answer.calls:
        return "", ""
    last = answer.calls[-1]
    if last.failed or answer.kind not in last.kinds:
        return "", ""
    kind, result = last.kinds[0], last.result  # the kind the tool's result gives
    if kind != "area" and (type(result) is not type(answer.value) or result != answer.value):
        return "", ""
    args = last.args
    if not args:
        return "", ""
    labels = call_labels(answer.calls[:-1])
    n, label = _operand(args[0], labels, answer.regions)
    if kind == "comparison":
        if len(args) < 2:
            return "", ""
        m, other = _operand(args[1], labels, answer.regions)
        if label is None and other is None:
            return "", ""
        return f"{_side(n, label)} vs {_side(m, other)} → ", ""
    if label is None:
        return "", ""
    if kind == "count":
        return "", f" {label.text(answer.value if isinstance(answer.value, int) else None)}"
    if kind == "area":
        return "", f" of {label.text(2)}"
    return "", f" ({n if n is not None else '?'} {label.text(n)})"


def returned_label(answer: Answer) -> Label | None:
    """What the region list the program returned holds (the last call's result, read from
    the calls that made it), None when the calls do not say."""
    last = answer.calls[-1] if answer.calls else None
    if last is None or last.failed or not isinstance(last.result, RegionSet):
        return None
    return call_labels(answer.calls).get(last.result.ids)


def _side(n: int | None, label: Label | None) -> str:
    if label is None:
        return "?" if n is None else str(n)
    return label.text(2) if n is None else f"{n} {label.text(n)}"


def readable(answer: Answer) -> str:
    """``answer.answer`` with what it counted, measured or compared (see
    :func:`answer_parts`); the value and kind are not changed."""
    before, after = answer_parts(answer)
    return f"{before}{answer.answer}{after}"
