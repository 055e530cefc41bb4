"""Planners: turn a question into a program over the tool API.

``build_planner(name)`` picks one by name: ``rules`` (deterministic RSVQA-HR grammar,
offline), ``llm`` (an OpenAI-compatible endpoint) or ``auto`` (currently the rule planner).
"""

from __future__ import annotations

from viper_rs.config import Settings
from viper_rs.errors import ConfigError
from viper_rs.planning.base import Plan, Planner
from viper_rs.planning.rules import RulePlanner

#: Names accepted by :func:`build_planner`.
PLANNER_NAMES: tuple[str, ...] = ("auto", "rules", "llm")


def build_planner(name: str, settings: Settings | None = None) -> Planner:
    """The planner called ``name`` ("auto", "rules" or "llm"; case-insensitive).

    ``auto`` is the rule planner for now; ``settings`` will configure the LLM planner once
    it exists. Raises ConfigError for an unknown name or an LLM planner without an endpoint.
    """
    key = (name or "auto").strip().lower()
    if key in ("auto", "rules"):
        return RulePlanner()
    if key == "llm":
        raise ConfigError("LLM planner not configured: pass --llm-base-url and --llm-model")
    raise ConfigError(f"unknown planner {name!r}; choose one of {', '.join(PLANNER_NAMES)}")


__all__ = ["PLANNER_NAMES", "Plan", "Planner", "RulePlanner", "build_planner"]
