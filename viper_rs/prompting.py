"""The program-writing prompt: template and examples from ``prompts/`` plus the API
section generated from the tool registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import tools  # noqa: F401  (registers the tools)
from tools.registry import REGISTRY, Registry

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


def api_section(registry: Registry = REGISTRY) -> str:
    """The API part of the prompt: every tool's signature, description and example."""
    return registry.api_text()


def render_prompt(question: str, registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR) -> str:
    """The full prompt for ``question``."""
    template = (prompts_dir / "program.md").read_text(encoding="utf-8")
    examples = (prompts_dir / "examples.md").read_text(encoding="utf-8").strip()
    return template.format(api=api_section(registry), examples=examples, question=question.strip())


def prompt_hash(registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR) -> str:
    """Hash of the prompt with an empty question (identifies the prompt version)."""
    return hashlib.sha256(render_prompt("", registry, prompts_dir).encode()).hexdigest()[:16]
