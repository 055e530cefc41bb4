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
    ORACLE_ARTICLES,
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
from viper_rs.vision.oracle import _LOOKUP, OracleDetector

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


def _oracle_singular_before(phrase: str) -> str:
    """The oracle detector's own singular before issue 14 (reference for the test below)."""
    if phrase.endswith("ies"):
        return phrase[:-3] + "y"
    if phrase.endswith(("ches", "shes", "sses", "xes")):
        return phrase[:-2]
    if phrase.endswith("s") and not phrase.endswith("ss"):
        return phrase[:-1]
    return phrase


def test_oracle_reads_every_query_as_before():
    """The oracle now uses suffix_singular. Both readings map t to t, t minus "s" or "es",
    or "ies" -> "y", so every query whose singular is a known phrase k is one of k, k+"s",
    k+"es", k[:-1]+"ies": on those the old and the new lookup agree, so on every query."""
    queries = set()
    for k in _LOOKUP:
        queries |= {k, k + "s", k + "es", k[:-1] + "ies"}
    for q in sorted(queries):
        before = next((_LOOKUP[c] for c in (q, _oracle_singular_before(q)) if c in _LOOKUP), None)
        try:
            now: str | None = OracleDetector.resolve(q)[0]
        except UnknownConceptError:
            now = None
        assert now == before, q


# --------------------------------------------------------------------------- the named sets


def test_reader_sets_map_onto_the_classes():
    assert set(RULE_SIZE_WORDS.values()) == set(SIZE_WORDS) <= set(RULE_SIZE_WORDS)
    assert set(RULE_SHAPE_WORDS.values()) == set(SHAPE_WORDS) <= set(RULE_SHAPE_WORDS)
    assert set(SHAPE_ALIASES.values()) <= set(SHAPE_WORDS)
    assert set(CONCEPT_SHAPE_WORDS) - set(SHAPE_WORDS) == {"round"}
    assert set(ORACLE_ARTICLES) < set(ARTICLES) < set(CONCEPT_ARTICLES)
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
