"""RSVQA-HR style questions on a synthetic scene, answered exactly with the tools' semantics.

``make_questions(scene)`` writes questions with the RSVQA-HR templates and grammar:
presence = at least one object, count = number of objects, comparison = counts compared,
area = union of the rasterised masks in true ground m2; relations reuse ``tools.spatial``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from viper_rs.core import vocabulary
from viper_rs.core.config import Settings
from viper_rs.core.vocabulary import SHAPE_WORDS, SIZE_WORDS
from viper_rs.synthetic.classes import (
    BUILDING_CLASSES,
    COMMERCIAL,
    GRASS,
    PARKING,
    RESIDENTIAL,
    ROAD,
    TREE,
    WATER,
)
from viper_rs.synthetic.scene import Scene, SceneObject, weighted_choice
from viper_rs.tools.measures import shape_class, size_class
from viper_rs.tools.spatial import gap_px, is_above, is_left_of

__all__ = [
    "QUESTION_CONCEPTS",
    "QUESTION_TYPES",
    "RELATIONS",
    "QuestionType",
    "SceneQuestion",
    "answer_matches",
    "make_questions",
]

#: RSVQA-HR concept words used in questions -> the scene classes they cover.
QUESTION_CONCEPTS: dict[str, tuple[str, ...]] = {
    "building": BUILDING_CLASSES,
    "residential building": (RESIDENTIAL,),
    "commercial building": (COMMERCIAL,),
    "road": (ROAD,),
    "water area": (WATER,),
    "wood": (TREE,),
    "forest": (TREE,),
    "grass area": (GRASS,),
    "parking": (PARKING,),
}
_CONCEPT_WEIGHTS = {
    "building": 0.22, "residential building": 0.15, "commercial building": 0.1, "road": 0.12,
    "water area": 0.1, "wood": 0.07, "forest": 0.03, "grass area": 0.09, "parking": 0.12,
}
#: Relation phrases (RSVQA-HR wording) -> tools.spatial relation names.
RELATIONS: dict[str, str] = {phrases[0]: tool for tool, phrases in vocabulary.RELATIONS.items()}
QuestionType = Literal["presence", "count", "comp", "area"]
QUESTION_TYPES: tuple[str, ...] = ("presence", "count", "comp", "area")
_TYPE_SHARES = {"presence": 0.25, "count": 0.3, "comp": 0.25, "area": 0.2}


@dataclass
class SceneQuestion:
    """A question with its exact answer.

    ``answer`` uses the RSVQA-HR answer space ("yes"/"no", an integer string, or an area
    like ``"1234m2"`` in true ground m2, rounded); ``value`` is the exact value (area
    unrounded). ``spec`` is the structured form the question was written from.
    """

    question: str
    type: QuestionType
    answer: str
    value: bool | int | float
    spec: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- questions
class _Truth:
    """Ground-truth selections with the tools' semantics for one scene and settings."""

    def __init__(self, scene: Scene, settings: Settings) -> None:
        self.scene = scene
        self.image = scene.image
        self.settings = settings
        self.regions = {o.id: o.region(scene.image) for o in scene.objects}
        self.sizes = {
            o.id: size_class(self.regions[o.id].area_m2, settings.small_max_m2, settings.large_min_m2)
            for o in scene.objects
        }
        self.shapes = {o.id: shape_class(self.regions[o.id]) for o in scene.objects}
        gsd = scene.image.ground_sampling_distance or 1.0
        self.limit_px = settings.next_to_m / gsd

    def select(self, concept: str, modifier: str | None) -> list[SceneObject]:
        classes = QUESTION_CONCEPTS[concept]
        out = [o for o in self.scene.objects if o.cls in classes]
        if modifier in SIZE_WORDS:
            out = [o for o in out if self.sizes[o.id] == modifier]
        elif modifier in SHAPE_WORDS:
            out = [o for o in out if self.shapes[o.id] == modifier]
        return out

    def relate(self, first: list[SceneObject], relation: str, second: list[SceneObject]
               ) -> list[SceneObject] | None:
        """Objects of ``first`` in ``relation`` to some object of ``second``; None on a near-tie."""
        out = []
        for a in first:
            ra = self.regions[a.id]
            hit = False
            for b in second:
                if a.id == b.id:
                    continue
                rb = self.regions[b.id]
                if relation == "next_to":
                    g = gap_px(ra, rb, self.limit_px)
                    if math.isfinite(g) and abs(g - self.limit_px) <= 1.0:
                        return None
                    hit |= g <= self.limit_px
                    continue
                axis = 0 if relation in ("left_of", "right_of") else 1
                if abs(ra.centroid[axis] - rb.centroid[axis]) <= 1.0:
                    return None
                if relation == "left_of":
                    hit |= is_left_of(ra, rb)
                elif relation == "right_of":
                    hit |= is_left_of(rb, ra)
                elif relation == "above":
                    hit |= is_above(ra, rb)
                else:
                    hit |= is_above(rb, ra)
            if hit:
                out.append(a)
        return out

    def area(self, objects: list[SceneObject]) -> float:
        if not objects:
            return 0.0
        union = np.zeros(self.image.shape, dtype=bool)
        for o in objects:
            union |= o.mask
        return float(self.image.mask_area(union))


def _phrase(concept: str, modifier: str | None) -> str:
    return f"{modifier} {concept}" if modifier else concept


def _plural(concept: str, modifier: str | None) -> str:
    # RSVQA-HR pluralises by appending "s" ("place of worships", "cemeterys").
    return _phrase(concept, modifier) + "s"


class _Writer:
    """Draws random question specs and renders them with the RSVQA-HR templates."""

    def __init__(self, rng: np.random.Generator, truth: _Truth) -> None:
        self.rng = rng
        self.truth = truth

    def pick_concept(self, exclude: tuple[str, ...] = ()) -> str:
        names = [c for c in _CONCEPT_WEIGHTS if not set(QUESTION_CONCEPTS[c]) & set(exclude)]
        return weighted_choice(self.rng, names, [_CONCEPT_WEIGHTS[c] for c in names])

    def pick_modifier(self, concept: str, p: float) -> str | None:
        rng = self.rng
        if rng.random() >= p:
            return None
        objs = self.truth.select(concept, None)
        if objs and rng.random() < 0.6:
            present = sorted({self.truth.sizes[o.id] for o in objs}
                             | {s for o in objs if (s := self.truth.shapes[o.id])})
            return present[int(rng.integers(len(present)))]
        words = SIZE_WORDS + SHAPE_WORDS
        return words[int(rng.integers(len(words)))]

    def pick_object(self, p_mod: float = 0.35, p_rel: float = 0.35) -> dict[str, Any]:
        concept = self.pick_concept()
        obj: dict[str, Any] = {"concept": concept, "modifier": self.pick_modifier(concept, p_mod)}
        if self.rng.random() < p_rel:
            self.add_relation(obj)
        return obj

    def add_relation(self, obj: dict[str, Any]) -> None:
        """Attach a relation to a second object whose classes differ from the first's."""
        other = self.pick_concept(exclude=QUESTION_CONCEPTS[obj["concept"]])
        obj["relation"] = list(RELATIONS)[int(self.rng.integers(len(RELATIONS)))]
        obj["other"] = other
        obj["other_modifier"] = self.pick_modifier(other, 0.2)
        obj["det"] = "a" if self.rng.random() < 0.65 else "the"

    def objects_for(self, obj: dict[str, Any]) -> list[SceneObject] | None:
        first = self.truth.select(obj["concept"], obj["modifier"])
        if "relation" not in obj:
            return first
        second = self.truth.select(obj["other"], obj["other_modifier"])
        return self.truth.relate(first, RELATIONS[obj["relation"]], second)

    @staticmethod
    def relation_text(obj: dict[str, Any]) -> str:
        if "relation" not in obj:
            return ""
        # RSVQA-HR leaves an empty slot after the determiner: "next to a  road".
        return f" {obj['relation']} {obj['det']}  {_phrase(obj['other'], obj['other_modifier'])}"

    def draw(self, qtype: str) -> SceneQuestion | None:
        rng = self.rng
        img = " in the image" if rng.random() < 0.15 else ""
        if qtype == "comp":
            a = self.pick_object(p_rel=0.0)
            b = self.pick_object(p_rel=0.0)
            if _phrase(a["concept"], a["modifier"]) == _phrase(b["concept"], b["modifier"]):
                return None
            if rng.random() < 0.35:  # one relation, on either side
                self.add_relation(a if rng.random() < 0.5 else b)
            sa, sb = self.objects_for(a), self.objects_for(b)
            if sa is None or sb is None:
                return None
            op = weighted_choice(rng, ["more", "less", "equal"], [0.35, 0.35, 0.3])
            xa = _plural(a["concept"], a["modifier"]) + self.relation_text(a)
            xb = _plural(b["concept"], b["modifier"]) + self.relation_text(b)
            if op == "equal":
                text = f"Is the number of {xa} equal to the number of {xb}{img}?"
                value = len(sa) == len(sb)
            else:
                text = f"Are there {op} {xa} than {xb}{img}?"
                value = len(sa) > len(sb) if op == "more" else len(sa) < len(sb)
            spec = {"type": qtype, "first": a, "second": b, "op": op,
                    "counts": [len(sa), len(sb)]}
            return SceneQuestion(text, "comp", "yes" if value else "no", bool(value), spec)

        obj = self.pick_object()
        sel = self.objects_for(obj)
        if sel is None:
            return None
        rel = self.relation_text(obj)
        spec = {"type": qtype, "first": obj, "ids": [o.id for o in sel]}
        if qtype == "presence":
            x = _phrase(obj["concept"], obj["modifier"])
            if rng.random() < 0.5:
                text = f"Is there a {x}{rel}{img}?"
            else:
                text = f"Is a {x}{rel} present{img}?"
            value = len(sel) > 0
            return SceneQuestion(text, "presence", "yes" if value else "no", value, spec)
        xs = _plural(obj["concept"], obj["modifier"]) + rel
        if qtype == "count":
            form = int(rng.integers(3))
            if form == 0:
                text = f"How many {xs} are there{img}?"
            elif form == 1:
                text = f"What is the number of {xs}{img}?"
            else:
                text = f"What is the amount of {xs}{img}?"
            return SceneQuestion(text, "count", str(len(sel)), len(sel), spec)
        value = self.truth.area(sel)
        text = f"What is the area covered by {xs}{img}?"
        return SceneQuestion(text, "area", f"{int(round(value))}m2", value, spec)


def answer_matches(value: Any, q: SceneQuestion, area_tolerance: float = 0.1) -> bool:
    """Whether an answer's ``value`` is right for ``q``: yes/no and counts exactly, areas
    within ``area_tolerance`` of the true area (or 1 m2 for tiny areas)."""
    if value is None:
        return False
    if isinstance(q.value, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return abs(float(value) - q.value) <= max(1.0, area_tolerance * abs(q.value))
    return bool(value == q.value) and type(value) is type(q.value)


def _bucket(q: SceneQuestion) -> str:
    """Answer bucket used to balance the answers of each question type."""
    if q.type in ("presence", "comp"):
        return q.answer
    return "zero" if not q.value else "nonzero"


#: Wanted share of the first bucket per type (the rest go to the other bucket).
_BUCKET_SHARE = {"presence": ("yes", 0.55), "comp": ("yes", 0.45), "count": ("zero", 0.25),
                 "area": ("zero", 0.2)}


def make_questions(scene: Scene, n: int = 60, seed: int = 0,
                   settings: Settings | None = None) -> list[SceneQuestion]:
    """``n`` distinct RSVQA-HR style questions on ``scene`` with exact answers.

    Types are mixed about 25 % presence, 30 % count, 25 % comparison, 20 % area; about a
    third carry a size or shape word and a third a relation; presence/comparison answers
    are balanced between yes and no and some counts and areas are zero. Fewer than ``n``
    questions are returned only if the scene cannot support that many distinct ones.
    """
    settings = settings or scene.settings
    rng = np.random.default_rng([int(seed), int(scene.seed), 5150])
    writer = _Writer(rng, _Truth(scene, settings))
    quota = {t: int(round(n * s)) for t, s in _TYPE_SHARES.items()}
    quota["count"] += n - sum(quota.values())
    slots = [t for t in QUESTION_TYPES for _ in range(quota[t])]
    slots = [slots[i] for i in rng.permutation(len(slots))]
    seen: set[str] = set()
    made: dict[str, list[str]] = {t: [] for t in QUESTION_TYPES}
    out: list[SceneQuestion] = []
    for qtype in slots:
        first_bucket, share = _BUCKET_SHARE[qtype]
        done = made[qtype]
        want_first = done.count(first_bucket) < share * (len(done) + 1)
        fallback: SceneQuestion | None = None
        chosen: SceneQuestion | None = None
        for _ in range(150):
            q = writer.draw(qtype)
            if q is None or " ".join(q.question.split()) in seen:
                continue
            if (_bucket(q) == first_bucket) == want_first:
                chosen = q
                break
            fallback = fallback or q
        chosen = chosen or fallback
        if chosen is None:
            continue
        seen.add(" ".join(chosen.question.split()))
        done.append(_bucket(chosen))
        out.append(chosen)
    return out

