"""The program-writing prompt: text templates in ``prompts/`` plus the API section generated
from the tool registry.

Files (plain text, ``{name}`` placeholders):

* ``program.md`` — the system message: instructions, ``{api}`` and ``{examples}``;
* ``examples.md`` — worked examples, ``Question: ...`` followed by a fenced program;
* ``question.md`` — the user message asking for one question (``{question}``);
* ``repair.md`` — the user message sending a failed program back (``{question}``,
  ``{program}``, ``{error_type}``, ``{error_message}``).

The messages sent for a question are a pure function of these files, the registry and
the question; :func:`prompt_hash` identifies everything but the question.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from viper_rs import tools  # noqa: F401  (registers the tools)
from viper_rs.tools.registry import REGISTRY, Registry

#: The repository's ``prompts/`` folder, installed as the package data of ``viper_rs.prompts``.
PROMPTS_DIR = Path(str(files("viper_rs.prompts")))

#: Longest failing program (characters) quoted back in a repair message.
MAX_REPAIR_PROGRAM_CHARS = 4000

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_EXAMPLE = re.compile(
    r"^Question:[ \t]*(?P<question>.+?)[ \t]*\n```python[ \t]*\n(?P<program>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Example:
    """One worked example of ``examples.md``."""

    question: str
    program: str


@dataclass(frozen=True)
class PromptInfo:
    """Identity and size of the prompt: hash, system-message characters, approx. tokens."""

    hash: str
    chars: int
    approx_tokens: int

    def to_dict(self) -> dict[str, int | str]:
        """Plain form for notes and traces."""
        return {"prompt_hash": self.hash, "prompt_chars": self.chars,
                "prompt_tokens_approx": self.approx_tokens}


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced (one pass; other braces kept)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def read_template(name: str, prompts_dir: Path = PROMPTS_DIR) -> str:
    """The text of ``prompts/<name>``."""
    return (prompts_dir / name).read_text(encoding="utf-8")


def api_section(registry: Registry = REGISTRY) -> str:
    """The API part of the prompt: every tool's signature, description and example."""
    return registry.api_text()


def load_examples(prompts_dir: Path = PROMPTS_DIR) -> list[Example]:
    """The worked examples of ``examples.md``, in file order."""
    text = read_template("examples.md", prompts_dir)
    return [Example(m["question"].strip(), m["program"]) for m in _EXAMPLE.finditer(text)]


def system_prompt(registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR) -> str:
    """The system message: instructions, API section and worked examples."""
    examples = read_template("examples.md", prompts_dir).strip()
    template = read_template("program.md", prompts_dir)
    return fill(template, api=api_section(registry), examples=examples).strip()


class Prompt:
    """The prompt as read once from ``prompts/`` and the registry (later edits of the files
    do not change an existing instance, so its hash always matches what it sends)."""

    def __init__(self, registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR) -> None:
        self.system = system_prompt(registry, prompts_dir)
        self.question_template = read_template("question.md", prompts_dir)
        self.repair_template = read_template("repair.md", prompts_dir)
        h = hashlib.sha256()
        for part in (self.system, self.question_template, self.repair_template):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        self.hash = h.hexdigest()[:16]

    @property
    def info(self) -> PromptInfo:
        """Hash and size (characters of the system message; tokens ~ chars / 4)."""
        return PromptInfo(self.hash, len(self.system), round(len(self.system) / 4))

    def question(self, question: str) -> str:
        """The user message asking for a program for ``question``."""
        return fill(self.question_template, question=clean_question(question)).strip()

    def repair(self, question: str, program: str, error_type: str, error_message: str) -> str:
        """The user message that sends a failed program and its error back."""
        program = program.strip("\n") or "(empty reply)"
        if len(program) > MAX_REPAIR_PROGRAM_CHARS:
            program = program[:MAX_REPAIR_PROGRAM_CHARS] + "\n... (truncated)"
        return fill(
            self.repair_template, question=clean_question(question), program=program,
            error_type=error_type, error_message=error_message.strip(),
        ).strip()

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages of a first request for ``question`` (system + user)."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.question(question)},
        ]


def messages(
    question: str, registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR
) -> list[dict[str, str]]:
    """The chat messages of a first request for ``question`` (system + user)."""
    return Prompt(registry, prompts_dir).messages(question)


def render_prompt(question: str, registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR) -> str:
    """The full text of a first request for ``question`` (system message, blank line, user)."""
    return "\n\n".join(m["content"] for m in messages(question, registry, prompts_dir))


def prompt_hash(registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR) -> str:
    """Hash of the system message and the question and repair templates (the prompt version)."""
    return Prompt(registry, prompts_dir).hash


def prompt_info(registry: Registry = REGISTRY, prompts_dir: Path = PROMPTS_DIR) -> PromptInfo:
    """Hash and size of the prompt (characters of the system message; tokens ~ chars / 4)."""
    return Prompt(registry, prompts_dir).info


def clean_question(question: str) -> str:
    """The question as sent: surrounding whitespace removed, inner whitespace collapsed."""
    return " ".join(str(question).split())
