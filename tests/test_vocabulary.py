"""The word lists of viper_rs.core.vocabulary: modifiers, singulars, and that no other module keeps
its own copy (issue 14: each word list in one place)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from viper_rs.tools.filters import filter_shape, filter_size

from viper_rs import synthetic
from viper_rs.core import vocabulary
from viper_rs.core.errors import UnknownConceptError
from viper_rs.core.vocabulary import (
    ARTICLES,
    CONCEPT_ARTICLES,
    CONCEPT_SHAPE_WORDS,
    RULE_SHAPE_WORDS,
    RULE_SIZE_WORDS,
    SHAPE_ALIASES,
    SHAPE_WORDS,
    SIZE_WORDS,
    singular,
    singular_phrase,
    split_modifiers,
    suffix_singular,
)
from viper_rs.core.wording import plural
from viper_rs.vision.concepts import VOCABULARY
from viper_rs.vision.oracle import OracleDetector

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- split_modifiers


@pytest.mark.parametrize(
    ("phrase", "split"),
    [
        ("a small circular water area", ("water area", "small", "circular")),
        ("building", ("building", None, None)),
        ("the large square buildings", ("buildings", "large", "square")),
        ("round pond", ("pond", None, "circular")),
        ("some rectangle field", ("field", None, "rectangular")),
        ("squared  plaza", ("plaza", None, "square")),
        ("small the large road", ("road", "large", None)),  # a later word of a kind wins
        ("any medium round rectangular lot", ("lot", "medium", "rectangular")),
        ("big building", ("big building", None, None)),  # "big" is the rule planner's only
        ("all buildings", ("all buildings", None, None)),  # "all" is not find()'s article
        ("water area next to a small road", ("water area next to a small road", None, None)),
        ("the small", ("", "small", None)),
        ("", ("", None, None)),
    ],
)
def test_split_modifiers(phrase, split):
    assert split_modifiers(phrase) == split


# --------------------------------------------------------------------------- singular


@pytest.mark.parametrize(
    ("plural", "single"),
    [
        ("buildings", "building"), ("parkings", "parking"), ("allotments", "allotment"),
        ("woods", "wood"), ("wood", "wood"), ("grass", "grass"), ("pedestrians", "pedestrian"),
        ("cemeterys", "cemetery"), ("cemeteries", "cemetery"), ("railways", "railway"),
        ("theatres", "theatre"), ("houses", "house"), ("greenhouses", "greenhouse"),
        ("churches", "church"), ("boxes", "box"), ("buses", "bus"), ("bus", "bus"),
        ("glasses", "glass"), ("wharves", "wharf"), ("groves", "grove"), ("leaves", "leaf"),
        ("movies", "movie"), ("cities", "city"), ("niches", "niche"), ("tomatoes", "tomato"),
        ("shoes", "shoe"), ("people", "person"), ("fishermen", "fisherman"),
        ("series", "series"), ("water", "water"), ("tennis", "tennis"), ("campus", "campus"),
    ],
)
def test_singular(plural, single):
    assert singular(plural) == single
    assert singular(single) == single  # idempotent on singulars


@pytest.mark.parametrize(
    ("phrase", "single"),
    [
        ("place of worships", "place of worship"),
        ("places of worship", "place of worship"),
        ("place of worship", "place of worship"),
        ("water areas", "water area"),
        ("grass areas", "grass area"),
        ("commercial/retail areas", "commercial/retail area"),
        ("residential buildings", "residential building"),
        ("salt ponds", "salt pond"),
    ],
)
def test_singular_phrase(phrase, single):
    assert singular_phrase(phrase) == single


@pytest.mark.parametrize(
    ("word", "single"),
    [
        ("buildings", "building"), ("cemeteries", "cemetery"), ("churches", "church"),
        ("glasses", "glass"), ("boxes", "box"), ("grass", "grass"), ("campus", "campus"),
        ("tennis", "tennis"), ("areas", "area"), ("pies", "pie"), ("gas", "gas"),
    ],
)
def test_suffix_singular(word, single):
    assert suffix_singular(word) == single


#: Words where the detectors' reading (suffix_singular) and the rule planner's English
#: singular differ. Kept on purpose: e.g. a detector asked for "prairies" does not know it
#: (no "prairy"), while the rule planner passes find("prairie"). Unifying them changes
#: which concepts the spectral detector and the calibration thresholds recognise.
DIFFERENT_READINGS = {
    "prairies": ("prairy", "prairie"), "movies": ("movy", "movie"), "buses": ("buse", "bus"),
    "leaves": ("leave", "leaf"), "niches": ("nich", "niche"), "tomatoes": ("tomatoe", "tomato"),
    "series": ("sery", "series"), "sports": ("sport", "sports"), "works": ("work", "works"),
    "people": ("people", "person"), "fishermen": ("fishermen", "fisherman"),
    "atlas": ("atla", "atlas"), "quizzes": ("quizz", "quiz"),
}


@pytest.mark.parametrize("word", sorted(DIFFERENT_READINGS))
def test_the_two_singulars_differ_on_purpose(word):
    assert (suffix_singular(word), singular(word)) == DIFFERENT_READINGS[word]


#: The oracle's own phrase list before issue 24 (phrase -> (label, scene classes)), the
#: reference for the test below.
_ORACLE_BEFORE = {
    **dict.fromkeys(["building"], ("building", ("residential building", "commercial building"))),
    **dict.fromkeys(["residential building", "house", "home", "dwelling"],
                    ("residential building", ("residential building",))),
    **dict.fromkeys(["commercial building", "retail building", "office building"],
                    ("commercial building", ("commercial building",))),
    **dict.fromkeys(["road", "street"], ("road", ("road",))),
    **dict.fromkeys(["water area", "water", "water body", "pond", "lake"],
                    ("water area", ("water area",))),
    **dict.fromkeys(["tree", "wood", "forest", "woodland", "tree canopy", "wooded area"],
                    ("tree", ("tree",))),
    **dict.fromkeys(["grass area", "grass", "grassland", "lawn"], ("grass area", ("grass area",))),
    **dict.fromkeys(["parking", "parking lot", "car park", "parking area"],
                    ("parking", ("parking",))),
}
#: Phrases the oracle now reads as every detector does (the shared vocabulary): "house" and
#: "home" are any building, "dwelling" is unknown, "retail/office building" only
#: approximate a building (the vocabulary tells no use but residential and commercial).
_ORACLE_NOW_SHARED = {"house": ("building", ("residential building", "commercial building")),
                      "home": ("building", ("residential building", "commercial building")),
                      "dwelling": None, "retail building": None, "office building": None}


def _oracle(q: str) -> tuple[str, tuple[str, ...]] | None:
    try:
        return OracleDetector.resolve(q)
    except UnknownConceptError:
        return None


@pytest.mark.parametrize("phrase", sorted(_ORACLE_BEFORE))
def test_oracle_reads_its_phrases_as_before(phrase):
    """Every phrase the oracle knew reads as before (articles, case and plurals too), but
    the five it read unlike the shared vocabulary."""
    want = _ORACLE_NOW_SHARED.get(phrase, _ORACLE_BEFORE[phrase])
    for q in (phrase, plural(phrase), f"The {phrase.title()}"):
        assert _oracle(q) == want, q


def test_oracle_reads_the_shared_vocabulary():
    """The oracle knows the synonyms of the concept table's classes a scene has, nothing it
    could only approximate."""
    for phrase, (cls, reason) in VOCABULARY.items():
        got = _oracle(phrase)
        if cls in OracleDetector.concepts() and reason is None:
            assert got is not None and (got[0] == cls or len(got[1]) == 1), phrase
        elif phrase not in ("residential building", "commercial building"):
            assert got is None, phrase
    assert OracleDetector.concepts() == ["building", "road", "water", "tree", "low_vegetation",
                                         "parking"]
    assert _oracle("meadows") == ("grass area", ("grass area",))
    assert _oracle("swimming pool") is None and _oracle("red roof") is None


# --------------------------------------------------------------------------- the named sets


def test_reader_sets_map_onto_the_classes():
    assert set(RULE_SIZE_WORDS.values()) == set(SIZE_WORDS) <= set(RULE_SIZE_WORDS)
    assert set(RULE_SHAPE_WORDS.values()) == set(SHAPE_WORDS) <= set(RULE_SHAPE_WORDS)
    assert set(SHAPE_ALIASES.values()) <= set(SHAPE_WORDS)
    assert set(CONCEPT_SHAPE_WORDS) - set(SHAPE_WORDS) == {"round"}
    assert set(ARTICLES) < set(CONCEPT_ARTICLES)
    assert set(CONCEPT_ARTICLES) - set(ARTICLES) == {"all"}


def test_filters_take_the_size_and_shape_classes():
    assert get_args(get_type_hints(filter_size)["size"]) == SIZE_WORDS
    assert get_args(get_type_hints(filter_shape)["shape"]) == SHAPE_WORDS


def test_synthetic_relations_are_the_rsvqa_phrases():
    assert synthetic.RELATIONS == {
        "on the left of": "left_of", "on the right of": "right_of", "at the top of": "above",
        "at the bottom of": "below", "next to": "next_to",
    }
    assert list(synthetic.RELATIONS.values()) == list(vocabulary.RELATIONS)


# --------------------------------------------------------------------------- one place

_KINDS = {
    "size": set(SIZE_WORDS) | set(RULE_SIZE_WORDS),
    "shape": set(CONCEPT_SHAPE_WORDS) | set(SHAPE_ALIASES) | set(RULE_SHAPE_WORDS),
    "article": {"a", "an", "the"},
    "relation": {p for phrases in vocabulary.RELATIONS.values() for p in phrases},
}


def _literal_strings(node: ast.expr) -> set[str]:
    """The string elements of a tuple/list/set literal, a dict literal's keys, or such a
    literal wrapped in frozenset()/set()/tuple()/list()."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("frozenset", "set", "tuple", "list") and node.args):
        return _literal_strings(node.args[0])
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items: list[ast.expr | None] = list(node.elts)
    elif isinstance(node, ast.Dict):
        items = list(node.keys)
    else:
        return set()
    return {e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def _word_lists(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, kind) of every module- or class-level assignment of a literal holding two or
    more size, shape, article or relation words."""
    out = []
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.ClassDef):
            body.extend(node.body)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            words = _literal_strings(node.value)
            out += [(node.lineno, k) for k, ws in _KINDS.items() if len(words & ws) >= 2]
    return out


def test_the_scan_finds_word_lists():
    tree = ast.parse('SIZES = ("small", "large")\nclass C:\n    A = {"a": 1, "the": 2}\n'
                     'OK = ("small",)\nREL = frozenset(["next to", "left of"])\n')
    assert sorted(_word_lists(tree)) == [(1, "size"), (3, "article"), (5, "relation")]


def test_no_other_module_defines_its_own_word_list():
    files = [REPO / "app.py", *(p for d in ("viper_rs", "tools", "eval")
                                for p in sorted((REPO / d).rglob("*.py")))]
    bad = [
        f"{path.relative_to(REPO)}:{line} defines its own {kind} words"
        for path in files if path != REPO / "viper_rs" / "core" / "vocabulary.py"
        for line, kind in _word_lists(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not bad, "import them from viper_rs.core.vocabulary:\n" + "\n".join(bad)
