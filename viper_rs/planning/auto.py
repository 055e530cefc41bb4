"""The ``auto`` planner: the rule grammar first, the LLM for everything else."""

from __future__ import annotations

import re
from collections.abc import Sequence

from viper_rs.core.errors import PlanningError
from viper_rs.planning.base import Plan
from viper_rs.planning.llm import LLMPlanner
from viper_rs.planning.rules import RulePlanner

OFFLINE = (
    "cannot plan this question offline: it is outside the rule grammar and no LLM endpoint "
    "is configured (--llm-base-url/--llm-model)"
)
_NOTE = "auto: outside the rule grammar, so the LLM planned it"
_REASON = re.compile(r"covers \((?P<reason>.*)\); configure")


class AutoPlanner(RulePlanner):
    """Rule planner for questions its grammar covers; the LLM (when configured) for the rest.

    Without an LLM it is the rule planner (``name`` "rules") with a refusal that says the
    question cannot be planned offline; with one, ``name`` is "auto" and each plan names the
    planner that wrote it.
    """

    def __init__(self, llm: LLMPlanner | None = None) -> None:
        self.llm = llm
        self.name = "auto" if llm is not None else "rules"

    def plan(self, question: str) -> Plan:
        """The rule planner's program, else the LLM's; PlanningError offline."""
        try:
            plan = super().plan(question)
            plan.planner = RulePlanner.name  # the plan names who wrote it, not "auto"
            return plan
        except PlanningError as exc:
            if self.llm is None:
                m = _REASON.search(str(exc))
                raise PlanningError(OFFLINE + (f" ({m['reason']})" if m else "")) from None
        plan = self.llm.plan(question)
        plan.notes.insert(0, _NOTE)
        return plan

    def can_repair(self, plan: Plan) -> bool:
        """True for LLM plans."""
        return self.llm is not None and self.llm.can_repair(plan)

    def repair(self, question: str, failures: Sequence[tuple[Plan, dict[str, str]]]) -> Plan:
        """The LLM's repaired program (see :meth:`LLMPlanner.repair`)."""
        if self.llm is None:
            raise PlanningError("cannot repair offline: no LLM endpoint is configured")
        plan = self.llm.repair(question, failures)
        plan.notes.insert(0, _NOTE)
        return plan

    def accept(self, question: str, plan: Plan) -> None:
        """Cache LLM plans that worked."""
        if self.llm is not None:
            self.llm.accept(question, plan)
