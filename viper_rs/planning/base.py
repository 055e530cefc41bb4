"""What every planner returns (:class:`Plan`) and the interface it implements (:class:`Planner`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

#: Answer kinds a plan can announce (the same strings as ``Answer.kind``).
PlanKind = Literal["presence", "count", "area", "comparison", "other"]
PLAN_KINDS: tuple[str, ...] = ("presence", "count", "area", "comparison", "other")


@dataclass
class Plan:
    """A program written for one question, and how it was written.

    ``program`` is the source of ``def execute_command(image): ...``; ``kind`` is the kind of
    answer it returns; ``planner`` names the planner ("rules" or "llm"); ``notes`` are short
    human-readable remarks (the parse, normalisations applied); ``parsed`` is the planner's
    structured reading of the question (for the rule planner: type, subject, size, shape,
    relation, object, second subject, comparison operator), or None.

    LLM plans also carry ``cached`` (served from the program cache, no request made),
    ``error`` (``{type, message}`` when the reply held no usable program; ``program`` is
    then the raw reply) and ``meta`` (model, endpoint, prompt hash and size, raw reply,
    token usage, request time).
    """

    program: str
    kind: str
    planner: str
    notes: list[str] = field(default_factory=list)
    parsed: dict[str, Any] | None = None
    cached: bool = False
    error: dict[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (for traces, caches and the UI)."""
        return {
            "program": self.program,
            "kind": self.kind,
            "planner": self.planner,
            "notes": list(self.notes),
            "parsed": self.parsed,
            "cached": self.cached,
            "error": self.error,
            "meta": dict(self.meta),
        }


@runtime_checkable
class Planner(Protocol):
    """Turns a question into a :class:`Plan`.

    ``plan`` raises :class:`viper_rs.core.errors.PlanningError` when it cannot write a program
    for the question; it never guesses.
    """

    name: str

    def plan(self, question: str) -> Plan:
        """A program answering ``question``."""
        ...


@runtime_checkable
class RepairingPlanner(Planner, Protocol):
    """A planner that can rewrite a failed program and remember programs that worked."""

    def can_repair(self, plan: Plan) -> bool:
        """Whether :meth:`repair` can rewrite ``plan`` (e.g. it came from the LLM)."""
        ...

    def repair(self, question: str, failures: Sequence[tuple[Plan, dict[str, str]]]) -> Plan:
        """A new program after ``failures`` (each plan with its ``{type, message}`` error,
        oldest first); raises PlanningError when no new program can be had."""
        ...

    def accept(self, question: str, plan: Plan) -> None:
        """``plan`` answered ``question`` without error (cache it)."""
        ...
