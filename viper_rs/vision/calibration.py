"""Score calibration for dense vision-language detectors: thresholds and negatives as data.

Raw patch-text cosines of CLIP-space models are small (about 0.1-0.3) and their offset
depends on the concept and the prompt, so a fixed cosine threshold means something
different for every query. Instead a patch is scored by the probability of the query
against a set of negative prompts (other common aerial concepts), with the model's logit
scale as the softmax temperature. The defaults live in ``calibration.json`` beside this
module; a user passes their own file with ``--calibration FILE``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from viper_rs.core.errors import ConfigError, UnknownConceptError
from viper_rs.core.vocabulary import suffix_singular
from viper_rs.vision.concepts import normalize_phrase, resolve_concept

DEFAULT_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """Prompt templates, negative prompts, temperature and per-concept thresholds."""

    templates: tuple[str, ...] = ("{}",)
    negatives: tuple[str, ...] = ()
    logit_scale: float = 100.0
    default_threshold: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    source: str = "built-in"

    @classmethod
    def load(cls, path: Path | str | None = None) -> Calibration:
        """Read a calibration JSON file (None = the built-in defaults)."""
        if path is None:
            text = resources.files("viper_rs.vision").joinpath(DEFAULT_FILE).read_text("utf-8")
            source = "built-in"
        else:
            p = Path(path)
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{p}: cannot read calibration file ({exc})") from None
            source = str(p)
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: calibration file is not valid JSON ({exc})") from None
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: object, source: str = "dict") -> Calibration:
        """Validate a parsed calibration mapping."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: calibration must be a JSON object")
        templates = tuple(raw.get("templates", ["{}"]))
        if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
            raise ConfigError(f"{source}: every template must be a string with exactly one '{{}}'")
        negatives = tuple(raw.get("negatives", []))
        if not all(isinstance(n, str) and n.strip() for n in negatives):
            raise ConfigError(f"{source}: negatives must be non-empty strings")
        try:
            scale = float(raw.get("logit_scale", 100.0))
            default = float(raw.get("default_threshold", 0.5))
            thresholds = {normalize_phrase(k): float(v)
                          for k, v in dict(raw.get("thresholds", {})).items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: bad number in calibration ({exc})") from None
        if scale <= 0:
            raise ConfigError(f"{source}: logit_scale must be positive")
        for k, v in [("default_threshold", default), *thresholds.items()]:
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{source}: threshold {k} = {v} is not a probability in [0, 1]")
        return cls(templates, negatives, scale, default, thresholds, source)

    def threshold(self, query: str) -> float:
        """Threshold for a query: by its phrase, then its canonical class, then the default."""
        phrase = normalize_phrase(query)
        for cand in _readings(phrase):
            if cand in self.thresholds:
                return self.thresholds[cand]
        cls = _concept_class(phrase)
        if cls is not None and cls in self.thresholds:
            return self.thresholds[cls]
        return self.default_threshold

    def negatives_for(self, query: str) -> list[str]:
        """Negative prompts for ``query``, without those naming the same concept."""
        phrase = normalize_phrase(query)
        cls = _concept_class(phrase)
        out = []
        for neg in self.negatives:
            n = normalize_phrase(neg)
            if n == phrase or n in phrase.split() or phrase in n.split():
                continue
            if cls is not None and _concept_class(n) == cls:
                continue
            out.append(neg)
        return out

    def prompts(self, text: str) -> list[str]:
        """The text placed in every template."""
        return [t.format(text) for t in self.templates]

    def probabilities(self, sims: np.ndarray) -> np.ndarray:
        """Softmax probability of index 0 (the query) over the last axis of cosine sims."""
        z = self.logit_scale * sims.astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return (e[..., 0] / e.sum(axis=-1)).astype(np.float32)


def _readings(phrase: str) -> list[str]:
    """The phrase and its singular reading ("swimming pools" -> "swimming pool")."""
    words = phrase.split()
    if not words:
        return [phrase]
    return list(dict.fromkeys([phrase, " ".join([*words[:-1], suffix_singular(words[-1])])]))


def _concept_class(phrase: str) -> str | None:
    try:
        return resolve_concept(phrase)[0]
    except UnknownConceptError:
        return None
