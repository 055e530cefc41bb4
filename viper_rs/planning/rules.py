"""Deterministic rule planner: the RSVQA-HR question grammar -> a readable tool program.

The grammar is data, not code paths:

* :data:`TEMPLATES` — the question forms (presence, count, area, comparison), each a
  regular expression with named slots ``a`` (subject), ``b`` (second subject) and ``op``;
* :data:`~viper_rs.core.vocabulary.RELATIONS` — the spatial phrases and the relation tool each
  one maps to;
* :data:`~viper_rs.core.vocabulary.RULE_SIZE_WORDS` / :data:`~viper_rs.core.vocabulary.RULE_SHAPE_WORDS`
  — modifier words and the filter value they mean;
* :data:`SCOPE_SUFFIXES` — tails such as " in the image" that do not change the meaning.

A slot holds ``[article] [size] [shape] object [relation [article] [size] [shape] object]``.
Objects are passed to ``find()`` in singular form (see
:func:`~viper_rs.core.vocabulary.singular_phrase`).
Anything else raises :class:`~viper_rs.core.errors.PlanningError`: the planner never guesses.
"""

from __future__ import annotations

import ast
import builtins
import json
import keyword
import re
from dataclasses import dataclass
from typing import Any

from viper_rs.core.errors import PlanningError
from viper_rs.core.vocabulary import (
    ARTICLES,
    INVARIANT_NOUNS,
    RELATIONS,
    RULE_SHAPE_WORDS,
    RULE_SIZE_WORDS,
    singular_phrase,
)
from viper_rs.planning.base import Plan
from viper_rs.tools.registry import REGISTRY

# --------------------------------------------------------------------------- grammar data

#: Tails that only restate the scope of the question; dropped before matching.
SCOPE_SUFFIXES: tuple[str, ...] = (
    "in the image", "in this image", "on the image", "in the picture", "in this picture",
    "in the photo", "in this photo", "in the scene", "in this scene", "in the tile",
    "in total", "in all",
)

#: Comparison words -> op of ``compare``.
COMPARISON_OPS: dict[str, str] = {
    "more": "more", "greater": "more", "larger": "more", "higher": "more", "bigger": "more",
    "less": "less", "fewer": "less", "smaller": "less", "lower": "less",
    "equal": "equal", "the same as": "equal", "as many": "equal",
}


def answer_tool(kind: str) -> str:
    """The tool whose result answers a question of ``kind`` ("count" -> ``count``): the
    first registered tool whose result gives that kind (:attr:`~viper_rs.tools.Tool.kinds`)."""
    for name, kinds in REGISTRY.kinds().items():
        if kinds[0] == kind:
            return name
    raise PlanningError(f"no registered tool answers {kind} questions")


_NUMBER = r"(?:the )?(?:total )?(?:number|amount|count)"
_OTHER = rf"(?:{_NUMBER} of |that of )?"


@dataclass(frozen=True)
class Template:
    """One question form: ``pattern`` must match the whole normalised question."""

    id: str
    kind: str
    pattern: re.Pattern[str]
    op: str | None = None  # fixed comparison op when the pattern has no ``op`` group
    example: str = ""


def _template(id: str, kind: str, pattern: str, example: str, op: str | None = None) -> Template:
    return Template(id, kind, re.compile(pattern), op, example)


#: Question forms, tried in order (comparisons first: they also start with "are there").
TEMPLATES: tuple[Template, ...] = (
    _template("comparison-more-less", "comparison",
              r"(?:are|is) there (?P<op>more|less|fewer) (?P<a>.+?) than (?:there are )?(?P<b>.+)",
              "Are there more buildings than roads?"),
    _template("comparison-number-equal", "comparison",
              rf"is {_NUMBER} of (?P<a>.+?) (?P<op>equal) to {_OTHER}(?P<b>.+)",
              "Is the number of buildings equal to the number of roads?"),
    _template("comparison-number-same", "comparison",
              rf"is {_NUMBER} of (?P<a>.+?) (?P<op>the same as) {_OTHER}(?P<b>.+)",
              "Is the number of buildings the same as the number of roads?"),
    _template("comparison-number-than", "comparison",
              rf"is {_NUMBER} of (?P<a>.+?) "
              r"(?P<op>greater|larger|higher|bigger|smaller|lower|less|fewer) "
              rf"than {_OTHER}(?P<b>.+)",
              "Is the number of buildings greater than the number of roads?"),
    _template("comparison-as-many", "comparison",
              r"are there (?P<op>as many) (?P<a>.+?) as (?:there are )?(?P<b>.+)",
              "Are there as many buildings as roads?"),
    _template("area-covered-by", "area",
              r"what is the (?:total )?(?:area|surface|surface area) (?:covered|occupied) by (?P<a>.+)",
              "What is the area covered by water areas?"),
    _template("area-what-area", "area",
              r"what (?:area|surface) is (?:covered|occupied) by (?P<a>.+)",
              "What area is covered by water areas?"),
    _template("area-how-much", "area",
              r"how much (?:area|surface|ground|land) is (?:covered|occupied) by (?P<a>.+)",
              "How much area is covered by parks?"),
    _template("area-of", "area",
              r"what is the (?:total )?(?:area|surface area) of (?P<a>.+)",
              "What is the area of the parkings?"),
    _template("count-how-many", "count",
              r"how many (?P<a>.+?)(?: are there| are present| are visible| can be seen"
              r"| can you see| do you see| are)?",
              "How many buildings are there?"),
    _template("count-number-of", "count",
              r"what is the (?:total )?(?:number|amount|count) of (?P<a>.+)",
              "What is the number of buildings?"),
    _template("count-imperative", "count",
              r"count (?:all )?(?P<a>.+)",
              "Count the buildings."),
    _template("presence-present", "presence",
              r"(?:is|are) (?:there )?(?P<a>.+?) (?:present|visible)",
              "Is a building present?"),
    _template("presence-is-there", "presence",
              r"(?:is|are) there (?P<a>.+)",
              "Is there a building?"),
    _template("presence-see", "presence",
              r"(?:can|do) you see (?P<a>.+)",
              "Can you see a road?"),
    _template("presence-contain", "presence",
              r"does (?:the|this) (?:image|picture|scene|tile) (?:contain|show|have|include) (?P<a>.+)",
              "Does the image contain a park?"),
)

#: Words that never belong to an object name: their presence means the slot holds
#: something other than one object phrase (a conjunction, a clause, a second question...).
STOP_WORDS: frozenset[str] = frozenset("""
    a an the any some each every all and or but nor not no yes with without that which who
    whose whom where when what why how than as if whether is are was were be been being do
    does did can could will would should there here this these those it its they them their
    more less fewer many much most least in on at to into onto from by for near over under
    between inside outside within around along across behind left right top bottom next
    present visible image picture photo scene number amount count colour color anything
    something everything nothing anyone someone everyone nobody anybody somebody everybody
    one ones thing things object objects item items stuff
""".split())

#: US spellings -> the British spellings of the RSVQA/OpenStreetMap vocabulary.
SPELLING_VARIANTS: dict[str, str] = {
    "theater": "theatre", "theaters": "theatres", "center": "centre", "centers": "centres",
    "harbor": "harbour", "harbors": "harbours", "neighborhood": "neighbourhood",
    "neighborhoods": "neighbourhoods",
}

_WORD_RE = re.compile(r"[a-z][a-z'/-]*")
_MAX_NOUN_WORDS = 5
_RELATION_RE = re.compile(
    r"\b(?:" + "|".join(
        re.escape(p) for p in sorted(
            (p for phrases in RELATIONS.values() for p in phrases), key=len, reverse=True)
    ) + r")\b"
)
_PHRASE_TO_RELATION = {p: tool for tool, phrases in RELATIONS.items() for p in phrases}
#: Names a variable of a rule-planned program must not take (the tools' come from the registry).
_RESERVED_NAMES = frozenset(dir(builtins)) | {"image", "execute_command"}
_FORMS_HELP = (
    "it covers presence ('Is there a X?', 'Is a X present?'), count ('How many X are there?', "
    "'What is the number/amount of X?'), area ('What is the area covered by X?') and "
    "comparison ('Are there more/less X than Y?', 'Is the number of X equal to the number "
    "of Y?') questions, where X is '[size] [shape] object [relation [a|the] [size] [shape] "
    "object]'"
)


# --------------------------------------------------------------------------- identifiers


def pluralise_identifier(noun: str) -> str:
    """Plural snake_case variable name for a singular noun: "water area" -> "water_areas",
    "place of worship" -> "places_of_worship"; never a tool, builtin or keyword name."""
    words = [re.sub(r"[^a-z0-9]+", "_", w).strip("_") for w in noun.split()]
    words = [w for w in words if w]
    head = words.index("of") - 1 if "of" in words[1:-1] else len(words) - 1
    w = words[head]
    if w in INVARIANT_NOUNS or w.endswith(("s", "x", "z", "ch", "sh")):
        plural = w if w in INVARIANT_NOUNS else w + "es"
    elif w.endswith("y") and len(w) > 1 and w[-2] not in "aeiou":
        plural = w[:-1] + "ies"
    else:
        plural = w + "s"
    words[head] = plural
    name = "_".join(words)
    if name[0].isdigit() or keyword.iskeyword(name) or name in _RESERVED_NAMES or name in REGISTRY:
        name = f"{name}_regions"
    return name


# --------------------------------------------------------------------------- parse types


@dataclass(frozen=True)
class ObjectPhrase:
    """One object phrase: the singular concept for ``find()`` plus optional filters."""

    text: str
    noun: str
    size: str | None = None
    shape: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"phrase": self.text, "noun": self.noun, "size": self.size, "shape": self.shape}

    def describe(self) -> str:
        """"small square building"-style summary."""
        return " ".join(w for w in (self.size, self.shape, self.noun) if w)


@dataclass(frozen=True)
class Target:
    """A question slot: a subject object phrase, optionally related to an object phrase."""

    text: str
    subject: ObjectPhrase
    relation: str | None = None
    relation_phrase: str | None = None
    object: ObjectPhrase | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (subject fields at top level, then relation and object)."""
        return {
            **self.subject.to_dict(),
            "target_phrase": self.text,
            "relation": self.relation,
            "relation_phrase": self.relation_phrase,
            "object": self.object.to_dict() if self.object else None,
        }

    def describe(self) -> str:
        """"small building left_of road"-style summary."""
        text = self.subject.describe()
        if self.relation and self.object:
            text += f" {self.relation} {self.object.describe()}"
        return text


@dataclass(frozen=True)
class ParsedQuestion:
    """The full reading of a question."""

    question: str
    normalised: str
    template: Template
    subject: Target
    second_subject: Target | None = None
    op: str | None = None
    op_word: str | None = None
    changes: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """presence | count | area | comparison."""
        return self.template.kind

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form stored in ``Plan.parsed``."""
        return {
            "type": self.kind,
            "template": self.template.id,
            "question": self.normalised,
            "subject": self.subject.to_dict(),
            "second_subject": self.second_subject.to_dict() if self.second_subject else None,
            "op": self.op,
        }


# --------------------------------------------------------------------------- parsing


class _OutsideGrammar(Exception):
    """Internal: why a question does not fit; turned into a PlanningError by the planner."""


def normalise_question(question: str) -> str:
    """Lower case, single spaces, no trailing punctuation, no " in the image"-like tail."""
    text = question.replace("\u2019", "'").lower()
    text = " ".join(text.split())
    text = text.rstrip("?!. ").strip()
    changed = True
    while changed:
        changed = False
        for suffix in SCOPE_SUFFIXES:
            if text.endswith(" " + suffix):
                text = text[: -len(suffix) - 1].rstrip()
                changed = True
    return text


def parse_object(text: str, changes: list[str]) -> ObjectPhrase:
    """Parse ``[article] [size] [shape] noun`` (size and shape in either order)."""
    words = text.split()
    while words and words[0] in ARTICLES:
        words.pop(0)
    modifiers: dict[str, str] = {}  # "size"/"shape" -> filter value
    while words and len(words) > 1 and (
        words[0] in RULE_SIZE_WORDS or words[0] in RULE_SHAPE_WORDS
    ):
        w = words.pop(0)
        slot, value = (
            ("size", RULE_SIZE_WORDS[w]) if w in RULE_SIZE_WORDS else ("shape", RULE_SHAPE_WORDS[w])
        )
        if modifiers.setdefault(slot, value) != value:
            raise _OutsideGrammar(f"{text!r} has two different {slot} words")
        if value != w:
            changes.append(f"{w!r} read as {value!r}")
    if not words or (
        len(words) == 1 and (words[0] in RULE_SIZE_WORDS or words[0] in RULE_SHAPE_WORDS)
    ):
        raise _OutsideGrammar(f"{text!r} names no object")
    if len(words) > _MAX_NOUN_WORDS:
        raise _OutsideGrammar(f"{text!r} is too long for one object name")
    for i, w in enumerate(words):
        if not _WORD_RE.fullmatch(w):
            raise _OutsideGrammar(f"{w!r} in {text!r} is not part of an object name")
        if w in STOP_WORDS:
            raise _OutsideGrammar(f"{text!r} is not a single object phrase ({w!r})")
        if w in RULE_SIZE_WORDS:
            raise _OutsideGrammar(f"size word {w!r} must come before the object in {text!r}")
        if w == "of" and (i == 0 or i == len(words) - 1 or words.count("of") > 1):
            raise _OutsideGrammar(f"{text!r} is not a single object phrase ('of')")
    spelled = [SPELLING_VARIANTS.get(w, w) for w in words]
    if spelled != words:
        changes.append(f"spelling {' '.join(words)!r} -> {' '.join(spelled)!r}")
    plural = " ".join(spelled)
    noun = singular_phrase(plural)
    if noun != plural:
        changes.append(f"singular {plural!r} -> {noun!r}")
    return ObjectPhrase(" ".join(text.split()), noun, modifiers.get("size"), modifiers.get("shape"))


def parse_target(text: str, changes: list[str]) -> Target:
    """Parse a slot: an object phrase, optionally followed by one relation and another."""
    text = " ".join(text.split())
    matches = list(_RELATION_RE.finditer(text))
    if len(matches) > 1:
        raise _OutsideGrammar(f"{text!r} chains more than one spatial relation")
    if not matches:
        return Target(text, parse_object(text, changes))
    m = matches[0]
    left, right = text[: m.start()].strip(), text[m.end():].strip()
    if not left or not right:
        raise _OutsideGrammar(f"relation {m.group(0)!r} in {text!r} needs an object on both sides")
    phrase = m.group(0)
    return Target(
        text,
        parse_object(left, changes),
        _PHRASE_TO_RELATION[phrase],
        phrase,
        parse_object(right, changes),
    )


def parse_question(question: str) -> ParsedQuestion:
    """Read a question with the grammar tables; raise PlanningError when it does not fit."""
    if not isinstance(question, str) or not question.strip():
        raise PlanningError(_outside(question, "the question is empty"))
    normalised = normalise_question(question)
    first_failure: str | None = None
    for template in TEMPLATES:
        m = template.pattern.fullmatch(normalised)
        if m is None:
            continue
        changes: list[str] = []
        try:
            slots = m.groupdict()
            a = parse_target(slots["a"], changes)
            b = parse_target(slots["b"], changes) if slots.get("b") else None
        except _OutsideGrammar as exc:
            if first_failure is None:
                first_failure = str(exc)
            continue  # a later template may read the question differently
        op_word = slots.get("op") or template.op
        op = COMPARISON_OPS[op_word] if template.kind == "comparison" and op_word else None
        if op_word and op and op_word != op:
            changes.append(f"{op_word!r} read as {op!r}")
        return ParsedQuestion(question, normalised, template, a, b, op, op_word, tuple(changes))
    reason = first_failure or f"no question form matches; {_FORMS_HELP}"
    raise PlanningError(_outside(question, reason))


def _outside(question: Any, reason: str) -> str:
    return (
        f"cannot plan: {question!r} is outside the RSVQA-HR question grammar the rule planner "
        f"covers ({reason}); configure an LLM planner (--llm-base-url and --llm-model) to "
        f"answer other questions"
    )


# --------------------------------------------------------------------------- program writer


class _ProgramWriter:
    """Writes one named assignment per step; identical steps are written once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, str] = {}  # variable -> expression

    def assign(self, base: str, expr: str) -> str:
        name, n = base, 2
        while name in self.names and self.names[name] != expr:
            name, n = f"{base}_{n}", n + 1
        if name not in self.names:
            self.names[name] = expr
            self.lines.append(f"    {name} = {expr}")
        return name

    def regions(self, obj: ObjectPhrase) -> str:
        base = pluralise_identifier(obj.noun)
        var = self.assign(base, f"find({_lit(obj.noun)})")
        prefix = ""
        if obj.size:
            prefix = f"{obj.size}_"
            var = self.assign(prefix + base, f"filter_size({var}, {_lit(obj.size)})")
        if obj.shape:
            prefix += f"{obj.shape}_"
            var = self.assign(prefix + base, f"filter_shape({var}, {_lit(obj.shape)})")
        return var

    def target(self, target: Target) -> str:
        var = self.regions(target.subject)
        if target.relation and target.object:
            other = self.regions(target.object)
            relation = target.relation
            var = self.assign(f"{var}_{relation}_{other}", f"{relation}({var}, {other})")
        return var

    def program(self, result: str) -> str:
        body = "\n".join([*self.lines, f"    return {result}"])
        return f"def execute_command(image):\n{body}\n"


def _lit(text: str) -> str:
    """A double-quoted Python string literal."""
    return json.dumps(text)


def write_program(parsed: ParsedQuestion) -> str:
    """The program for a parsed question (same parse -> byte-identical source)."""
    writer = _ProgramWriter()
    a = writer.target(parsed.subject)
    if parsed.kind == "comparison":
        assert parsed.second_subject is not None and parsed.op is not None
        b = writer.target(parsed.second_subject)
        return writer.program(f"compare({a}, {b}, {_lit(parsed.op)})")
    return writer.program(f"{answer_tool(parsed.kind)}({a})")


# --------------------------------------------------------------------------- planner


class RulePlanner:
    """Deterministic, offline planner for the RSVQA-HR question grammar."""

    name = "rules"

    def plan(self, question: str) -> Plan:
        """A program for ``question``; PlanningError when it is outside the grammar."""
        parsed = parse_question(question)
        program = write_program(parsed)
        try:
            ast.parse(program)
        except SyntaxError as exc:  # pragma: no cover - guards the writer itself
            raise PlanningError(f"cannot plan: rule planner wrote invalid Python ({exc})") from None
        return Plan(
            program=program,
            kind=parsed.kind,
            planner=self.name,
            notes=_notes(parsed),
            parsed=parsed.to_dict(),
        )

    def covers(self, question: str) -> bool:
        """True iff :meth:`plan` would succeed for ``question``."""
        try:
            parse_question(question)
        except PlanningError:
            return False
        return True


def _notes(parsed: ParsedQuestion) -> list[str]:
    notes = [f"rule planner: {parsed.kind} question (form {parsed.template.id})"]
    if parsed.second_subject is not None:
        link = "equal to" if parsed.op == "equal" else f"{parsed.op} than"
        notes.append(
            f"compare counts: {parsed.subject.describe()} {link} {parsed.second_subject.describe()}"
        )
    else:
        notes.append(f"subject: {parsed.subject.describe()}")
    if parsed.changes:
        notes.append("normalised: " + "; ".join(dict.fromkeys(parsed.changes)))
    return notes
