"""Planners: turn a question into a program over the tool API.

``build_planner(name, settings)`` picks one by name: ``rules`` (deterministic RSVQA-HR
grammar, offline), ``llm`` (an OpenAI-compatible endpoint, see
:mod:`viper_rs.planning.llm`) or ``auto`` (rules for questions the grammar covers, the LLM
for the rest when one is configured, else a clear "cannot plan offline" refusal).
"""

from __future__ import annotations

from viper_rs.core.config import PLANNER_NAMES, Settings
from viper_rs.core.errors import ConfigError
from viper_rs.planning.auto import AutoPlanner
from viper_rs.planning.base import Plan, Planner, RepairingPlanner
from viper_rs.planning.llm import LLMPlanner, llm_configured
from viper_rs.planning.rules import RulePlanner

_NOT_CONFIGURED = "LLM planner not configured: pass --llm-base-url and --llm-model"


def build_planner(name: str, settings: Settings | None = None) -> Planner:
    """The planner called ``name`` ("auto", "rules" or "llm"; case-insensitive).

    ``settings`` configures the LLM (``llm_model``, ``llm_base_url``...). Raises ConfigError
    for an unknown name, ``llm`` without a model, or a base URL without a model.
    """
    key = (name or "auto").strip().lower()
    if key == "rules":
        return RulePlanner()
    if key not in ("auto", "llm"):
        raise ConfigError(f"unknown planner {name!r}; choose one of {', '.join(PLANNER_NAMES)}")
    if settings is not None and settings.llm_base_url and not settings.llm_model:
        raise ConfigError(f"{_NOT_CONFIGURED} (--llm-base-url {settings.llm_base_url} names no model)")
    if key == "llm":
        if not llm_configured(settings):
            raise ConfigError(_NOT_CONFIGURED)
        assert settings is not None
        return LLMPlanner(settings)
    llm = LLMPlanner(settings) if settings is not None and llm_configured(settings) else None
    return AutoPlanner(llm)


__all__ = [
    "PLANNER_NAMES",
    "AutoPlanner",
    "LLMPlanner",
    "Plan",
    "Planner",
    "RepairingPlanner",
    "RulePlanner",
    "build_planner",
]
