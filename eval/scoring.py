"""RSVQA-HR answer rules: the EPSG:3857 area convention, area buckets, answer matching,
and the question-only prior baseline. Only ``eval/`` uses these conventions."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from viper_rs.datasets.rsvqa import lat_from_mercator_y  # noqa: F401  (re-exported)

AREA_BUCKETS = (
    "0m2",
    "between 0m2 and 10m2",
    "between 10m2 and 100m2",
    "between 100m2 and 1000m2",
    "more than 1000m2",
)
#: RSVQA size words in EPSG:3857 square units: small < 100 <= medium < 500 <= large.
RSVQA_SMALL_MAX = 100.0
RSVQA_LARGE_MIN = 500.0


def mercator_area_factor(lat_deg: float) -> float:
    """sec^2(lat): EPSG:3857 'square metres' per true ground m2."""
    return 1.0 / math.cos(math.radians(lat_deg)) ** 2


def ground_to_rsvqa_area(ground_m2: float, lat_deg: float) -> float:
    """True ground m2 -> RSVQA's EPSG:3857 square units."""
    return ground_m2 * mercator_area_factor(lat_deg)


def area_bucket(value_3857: float) -> str:
    """Bucket of an area in RSVQA units (rounded to an integer first, as answers are)."""
    n = int(round(value_3857))
    if n <= 0:
        return AREA_BUCKETS[0]
    if n <= 10:
        return AREA_BUCKETS[1]
    if n <= 100:
        return AREA_BUCKETS[2]
    if n <= 1000:
        return AREA_BUCKETS[3]
    return AREA_BUCKETS[4]


def parse_area_answer(text: str) -> float:
    """``"10632m2"`` -> 10632.0."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*m2\s*", text)
    if not m:
        raise ValueError(f"not an RSVQA area answer: {text!r}")
    return float(m.group(1))


def canonical_gt(qtype: str, answer: str) -> str:
    """Ground-truth answer in the scored answer space (areas bucketed)."""
    a = answer.strip().lower()
    if qtype == "area":
        return area_bucket(parse_area_answer(a)) if a not in AREA_BUCKETS else a
    return a


def to_answer_space(qtype: str, value: Any, lat_deg: float) -> str | None:
    """An agent's value -> RSVQA answer string (None when it has no such form)."""
    if value is None:
        return None
    if qtype in ("presence", "comp"):
        return ("yes" if value else "no") if isinstance(value, bool) else None
    if qtype == "count":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return str(int(round(value)))
    if qtype == "area":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return area_bucket(ground_to_rsvqa_area(float(value), lat_deg))
    return None


def question_template(question: str) -> str:
    """Normalised question text (lower case, single spaces, no "?"): the prior's key."""
    q = " ".join(question.lower().replace("?", " ").split())
    return q


class PriorBaseline:
    """Most frequent training answer per question (then per type): a question-only prior."""

    def __init__(self) -> None:
        self.by_question: dict[str, Counter] = defaultdict(Counter)
        self.by_type: dict[str, Counter] = defaultdict(Counter)

    def fit(self, items: Iterable[tuple[str, str, str]]) -> PriorBaseline:
        """``items``: (type, question, canonical answer)."""
        for qtype, question, answer in items:
            self.by_question[question_template(question)][answer] += 1
            self.by_type[qtype][answer] += 1
        return self

    def predict(self, qtype: str, question: str) -> str:
        """Most frequent answer seen for this question text, else for its type."""
        c = self.by_question.get(question_template(question))
        if c:
            return c.most_common(1)[0][0]
        c = self.by_type.get(qtype)
        return c.most_common(1)[0][0] if c else "no"


def accuracy_table(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Accuracy per type, their average, and overall, from rows with ``type``/``correct``."""
    per: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        per[r["type"]].append(int(bool(r["correct"])))
    out = {t: (sum(v) / len(v)) for t, v in per.items() if v}
    types = [t for t in ("presence", "comp", "count", "area") if t in out]
    out["average"] = sum(out[t] for t in types) / len(types) if types else 0.0
    allv = [x for v in per.values() for x in v]
    out["overall"] = sum(allv) / len(allv) if allv else 0.0
    return out
