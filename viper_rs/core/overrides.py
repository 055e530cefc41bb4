"""The settings a user overrides per run: CLI flags and the app's settings panel.

One row per ``Settings`` field: its CLI flag (if any), the flag's help and how a value
converts (``kind``). The CLI adds its flags and reads them back from this table; the app's
settings panel (``viper_rs.ui.session.Options``) converts its fields with it. A converted
value of None keeps the current (default, ``VIPER_RS_*`` or base) value.

Kinds:

* ``name``: a choice word (detector, planner); blank keeps the current value.
* ``text``: free text; the panel's is stripped, and blank keeps the current value.
* ``secret``: panel only; stripped, blank keeps, stored as a ``SecretStr``.
* ``float``, ``int``, ``path``: a typed CLI value; the panel's is converted likewise.
* ``off``: a CLI switch (``--no-...``, store_true) that sets the field to False when given;
  the panel holds the field's own value (a checkbox).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viper_rs.core.config import Settings, env_var

#: argparse ``type`` of each kind with a typed CLI value.
_CLI_TYPES: dict[str, type] = {"float": float, "int": int, "path": Path}
KINDS = ("name", "text", "secret", "float", "int", "path", "off")


@dataclass(frozen=True)
class Override:
    """One overridable setting: the ``Settings`` field, its CLI flag and help, its kind."""

    field: str
    flag: str | None = None  # None: only the app's settings panel sets it
    help: str | None = None
    kind: str = "text"

    def __post_init__(self) -> None:
        if self.field not in Settings.model_fields:
            raise ValueError(f"{self.field!r} is not a Settings field")
        if self.kind not in KINDS:
            raise ValueError(f"{self.field}: unknown kind {self.kind!r}")

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag."""
        if self.flag is None:
            raise ValueError(f"{self.field} has no CLI flag")
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: Any, help: str | None = None) -> None:
        """Add the flag to ``parser`` (a parser or argument group); ``help`` replaces the
        table's help text."""
        kwargs: dict[str, Any] = {}
        if self.kind == "off":
            kwargs["action"] = "store_true"
        elif self.kind in _CLI_TYPES:
            kwargs["type"] = _CLI_TYPES[self.kind]
        parser.add_argument(self.flag, **kwargs, help=help or self.help)

    def from_args(self, args: argparse.Namespace) -> Any:
        """The override the parsed flags give (None when absent or not given)."""
        value = getattr(args, self.dest, None)
        if self.kind == "off":
            return False if value else None
        return value

    def from_panel(self, value: Any) -> Any:
        """The override a settings-panel value gives (None: keep the current value)."""
        if self.kind == "name":
            return value or None
        if self.kind in ("text", "secret"):
            text = value.strip()
            if not text:
                return None
            if self.kind == "text":
                return text
            from pydantic import SecretStr

            return SecretStr(text)
        if self.kind == "off":
            return value
        return None if value is None else _CLI_TYPES[self.kind](value)


#: Every overridable setting, by Settings field (CLI help texts as ``--help`` shows them).
OVERRIDES: dict[str, Override] = {o.field: o for o in (
    # questions about one image (ask, run)
    Override("detector", "--detector", "auto | spectral | graft | clip (default: auto)", "name"),
    Override("planner", "--planner", "auto | rules | llm (default: auto = rules for the "
             "RSVQA grammar, the LLM for other questions when one is configured)", "name"),
    Override("small_max_m2", "--small-max-m2", "size word threshold (default 100)", "float"),
    Override("large_min_m2", "--large-min-m2", "size word threshold (default 500)", "float"),
    Override("sandbox_wall_s", "--timeout", "sandbox wall-clock limit per program (s)", "float"),
    Override("image_max_memory_mb", "--image-max-memory-mb", "refuse images whose estimated "
             "peak memory is over this many MB, before decoding them (default 6000)", "int"),
    Override("image_max_time_s", "--image-max-time", "refuse images whose estimated time is "
             "over this many seconds, before decoding them (default 600)", "float"),
    # index build (viper_rs.index.cost)
    Override("index_max_chips", "--max-chips", "skip a source whose chips alone are more, and "
             "refuse a build with more chips to read, before reading any (default 200000)",
             "int"),
    Override("index_max_time_s", "--max-time-s", "likewise for the estimated time in seconds "
             "(default 86400)", "float"),
    # the LLM planner
    Override("llm_base_url", "--llm-base-url", "OpenAI-compatible endpoint, e.g. "
             "http://localhost:11434/v1 (Ollama); default https://api.openai.com/v1. Key: "
             "OPENAI_API_KEY"),
    Override("llm_model", "--llm-model", "model name, e.g. gpt-4o-mini, qwen2.5-coder:7b"),
    Override("llm_timeout_s", "--llm-timeout", "seconds per LLM request (default 60)", "float"),
    Override("llm_repair_attempts", "--llm-repairs",
             "times a failing program is sent back with its error (default 2)", "int"),
    Override("llm_cache", "--no-cache",
             "neither read nor write the cache of generated programs", "off"),
    Override("llm_api_key", kind="secret"),
    # model weights, device, calibration, SAM and caches
    Override("graft_checkpoint", "--graft-checkpoint", "GRAFT pixel-level checkpoint (.ckpt)",
             "path"),
    Override("clip_checkpoint", "--clip-checkpoint", "CLIP checkpoint for the text tower", "path"),
    Override("clip_model", "--clip-model", "open_clip architecture (default ViT-B-16)"),
    Override("clip_pretrained", "--clip-pretrained",
             "open_clip pretrained tag (downloads; online only)"),
    Override("sam_checkpoint", "--sam-checkpoint", "segment-anything checkpoint (vit_b/l/h)",
             "path"),
    Override("sam", "--no-sam", "skip SAM refinement", "off"),
    Override("device", "--device", "auto | cpu | cuda | cuda:N (default auto)"),
    Override("calibration_file", "--calibration",
             "score calibration JSON (negatives, thresholds)", "path"),
    Override("score_threshold", "--threshold", "override every per-concept score threshold",
             "float"),
    Override("cache_dir", "--cache-dir", "where features, embeddings and weights are cached",
             "path"),
    Override("disk_cache", "--no-disk-cache", "keep caches in memory only", "off"),
    # tool thresholds only the app's settings panel sets
    Override("min_region_m2", kind="float"),
    Override("next_to_m", kind="float"),
)}

#: The settings of a question about one image (``ask``, ``run``), besides LLM and models.
IMAGE_FIELDS = ("detector", "planner", "small_max_m2", "large_min_m2", "sandbox_wall_s",
                "image_max_memory_mb", "image_max_time_s")
#: The budget flags of ``index build``.
INDEX_FIELDS = ("index_max_chips", "index_max_time_s")
#: The LLM planner's flags.
LLM_FIELDS = ("llm_base_url", "llm_model", "llm_timeout_s", "llm_repair_attempts", "llm_cache")
#: The flags of model weights, device, calibration, SAM and caches.
MODEL_FIELDS = ("graft_checkpoint", "clip_checkpoint", "clip_model", "clip_pretrained",
                "sam_checkpoint", "sam", "device", "calibration_file", "score_threshold",
                "cache_dir", "disk_cache")


def add_flags(parser: Any, fields: Iterable[str], help: Mapping[str, str] | None = None) -> None:
    """Add the flags of ``fields`` to ``parser`` in that order; ``help`` replaces some help
    texts (field -> text)."""
    for name in fields:
        OVERRIDES[name].add_to(parser, (help or {}).get(name))


def args_overrides(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """Settings overrides from the flags of ``fields`` (None = keep the default/env value)."""
    return {name: OVERRIDES[name].from_args(args) for name in fields}


def panel_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings updates from settings-panel values (field -> value); blank values are left
    out."""
    out = {name: OVERRIDES[name].from_panel(value) for name, value in values.items()}
    return {name: value for name, value in out.items() if value is not None}


def setting_hint(name: str, value: str = "PATH") -> str:
    """How to set Settings field ``name`` to ``value``: "pass --flag VALUE or set
    VIPER_RS_NAME=VALUE" ("set VIPER_RS_NAME=VALUE" for a field without a flag). The app
    reads the pair as the variable alone (``viper_rs.ui.session.app_text``)."""
    override = OVERRIDES.get(name)
    env = f"{env_var(name)}={value}"
    return f"pass {override.flag} {value} or set {env}" if override and override.flag else (
        f"set {env}")


def setting_source(name: str) -> str:
    """Where Settings field ``name`` comes from: "--flag or VIPER_RS_NAME" (the variable
    alone for a field without a flag)."""
    override = OVERRIDES.get(name)
    flag = override.flag if override and override.flag else None
    return f"{flag} or {env_var(name)}" if flag else env_var(name)
