"""The spectral detector's vocabulary: every RSVQA-HR object word maps to a class."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import DATA
from viper_rs.core.classes import SUPPORTED_CLASSES
from viper_rs.core.errors import UnknownConceptError
from viper_rs.vision.concepts import (
    VOCABULARY,
    known_concepts,
    normalize_phrase,
    resolve_concept,
)

QUESTIONS = DATA / "rsvqa_hr_mini" / "USGS_split_mini_questions.json"

# RSVQA-HR question templates; the groups are object phrases.
_TEMPLATES = [
    r"^is the number of (.+) equal to the number of (.+)$",
    r"^are there (?:more|less) (.+) than (.+)$",
    r"^how many (.+) are there$",
    r"^what is the (?:amount|number) of (.+)$",
    r"^what is the area covered by (.+)$",
    r"^is there an? (.+)$",
    r"^is an? (.+) present$",
]
_RELATION = r" (?:at the top of|at the bottom of|on the left of|on the right of|next to) (?:an?|the) "
_MODIFIERS = {"small", "medium", "large", "square", "rectangular", "circular"}


def _object_phrases(questions: list[str]) -> set[str]:
    """Object phrases of RSVQA-HR questions (templates, relations, size/shape removed)."""
    phrases: set[str] = set()
    for q in questions:
        s = re.sub(r"\s+", " ", q).strip().lower().rstrip("?").strip()
        s = re.sub(r" in the image$", "", s)
        for template in _TEMPLATES:
            m = re.match(template, s)
            if m:
                break
        else:
            raise AssertionError(f"question outside the RSVQA-HR templates: {q!r}")
        for group in m.groups():
            for part in re.split(_RELATION, re.sub(r" in the image$", "", group)):
                words = [w for w in part.split() if w not in _MODIFIERS]
                phrases.add(" ".join(words))
    return phrases


@pytest.mark.data
@pytest.mark.skipif(not QUESTIONS.exists(), reason="../shared/data not present")
def test_every_rsvqa_mini_object_word_resolves() -> None:
    questions = [q["question"] for q in json.loads(QUESTIONS.read_text())["questions"]]
    assert len(questions) == 2501
    phrases = _object_phrases(questions)
    assert len(phrases) >= 60  # singular and plural forms of ~35 object words
    for phrase in sorted(phrases):
        cls, notes = resolve_concept(phrase)
        assert cls in SUPPORTED_CLASSES, phrase
        assert isinstance(notes, list)
    # Whole questions' object parts with their size/shape words also resolve.
    assert resolve_concept("large residential buildings")[0] == "building"
    assert resolve_concept("circular water areas")[0] == "water"


@pytest.mark.parametrize(
    ("query", "cls"),
    [
        ("building", "building"), ("buildings", "building"), ("residential buildings", "building"),
        ("commercial buildings", "building"), ("road", "road"), ("roads", "road"),
        ("water area", "water"), ("water areas", "water"), ("salt ponds", "water"),
        ("parking", "parking"), ("parkings", "parking"), ("parking lot", "parking"),
        ("wood", "tree"), ("woods", "tree"), ("forest", "tree"), ("forests", "tree"),
        ("trees", "tree"), ("grass area", "low_vegetation"), ("meadows", "low_vegetation"),
        ("farmlands", "low_vegetation"), ("residential area", "built_up"),
        ("industrial areas", "built_up"), ("commercial area", "built_up"),
        ("construction area", "bare_soil"), ("park", "vegetation"),
        ("place of worship", "building"), ("places of worship", "building"),
        ("place of worships", "building"), ("pedestrians", "road"), ("allotments", "vegetation"),
        ("cemeterys", "vegetation"), ("cemeteries", "vegetation"),
        ("impervious surface", "impervious"), ("bare soil", "bare_soil"),
        ("low vegetation", "low_vegetation"), ("built-up area", "built_up"),
    ],
)
def test_known_words(query: str, cls: str) -> None:
    assert resolve_concept(query)[0] == cls


@pytest.mark.parametrize(
    "word",
    [
        "hospital", "school", "garage", "vineyard", "allotments", "port", "pedestrian area",
        "pedestrian way", "meadow", "cemetery", "orchard", "playground", "pitch", "stadium",
        "swimming pool", "marina", "railway", "footway", "bridge", "farmyard", "greenhouse",
        "retail", "scrub", "heath", "beach", "wetland", "theatre", "depot", "landfill",
        "military area", "religious area", "recreation ground", "greenfield", "garden",
    ],
)
def test_wider_osm_vocabulary(word: str) -> None:
    cls, _ = resolve_concept(word)
    assert cls in SUPPORTED_CLASSES


def test_normalisation() -> None:
    assert normalize_phrase("  The   Water-Areas in the image ") == "water areas"
    assert resolve_concept("A  Road")[0] == "road"
    assert resolve_concept("an orchard")[0] == "tree"
    assert resolve_concept("WATER_AREA")[0] == "water"
    assert resolve_concept("Buildings?")[0] == "building"


def test_approximation_notes() -> None:
    cls, notes = resolve_concept("commercial buildings")
    assert cls == "building"
    assert notes == [
        "'commercial building' approximated as 'building': the spectral detector cannot "
        "tell building use"
    ]
    assert resolve_concept("buildings") == ("building", [])
    cls, notes = resolve_concept("small residential areas")
    assert cls == "built_up"
    assert any("size word 'small'" in n for n in notes)
    assert any("'residential area' approximated as 'built_up'" in n for n in notes)
    cls, notes = resolve_concept("red roofs")
    assert cls == "building"
    assert any("'red'" in n for n in notes)


@pytest.mark.parametrize(
    "query",
    ["flux capacitor", "submarine", "", "   ", "small", "square", "road next to a building", 42],
)
def test_unknown_concepts_raise(query: object) -> None:
    with pytest.raises(UnknownConceptError) as info:
        resolve_concept(query)  # type: ignore[arg-type]
    if isinstance(query, str):
        message = str(info.value)
        assert "building" in message and "water area" in message


def test_exports() -> None:
    concepts = known_concepts()
    assert concepts == sorted(concepts)
    assert {"building", "water area", "road", "parking", "tree", "grass"} <= set(concepts)
    assert {cls for cls, _ in VOCABULARY.values()} == set(SUPPORTED_CLASSES)
    for cls in SUPPORTED_CLASSES:
        assert resolve_concept(cls)[0] == cls
