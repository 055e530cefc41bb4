"""Facts in one place (issue 24): the concept classes live in one table
(``viper_rs.core.classes``), tool names and kinds in the tool registry, and queries are
normalised by one function (``viper_rs.core.vocabulary.query_key``). The library is scanned
with ``ast`` for a second copy: a literal (tuple, list, set, dict) naming two or more
classes or tools, or the normalisation written out again."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from viper_rs.tools import REGISTRY

from viper_rs.core import vocabulary
from viper_rs.core.answer import KINDS
from viper_rs.core.classes import (
    BY_NAME,
    CONCEPT_CLASSES,
    INDEX_DIMENSIONS,
    SUPPORTED_CLASSES,
    answered_by,
)
from viper_rs.core.regions import Region
from viper_rs.vision.concepts import VOCABULARY

REPO = Path(__file__).resolve().parents[1]

#: Class names as code writes them (``low_vegetation``) and as phrases (``low vegetation``).
CLASS_NAMES = frozenset(SUPPORTED_CLASSES) | {c.replace("_", " ") for c in SUPPORTED_CLASSES}
#: Tool names that are no ordinary words: "count" and "area" are answer kinds as well.
TOOL_NAMES = frozenset(REGISTRY.names()) - set(KINDS)

#: Literals that name several classes or tools and are not a copy of the table or the
#: registry: (file, owner) -> why. The owner is the assigned name or enclosing function.
ALLOWED: dict[tuple[str, str], str] = {
    ("viper_rs/core/classes.py", "CONCEPT_CLASSES"): "the table itself",
    ("viper_rs/core/vocabulary.py", "RELATIONS"):
        "the relation phrases, keyed by relation tool (test_relation_phrases_name_the_tools)",
    ("viper_rs/core/vocabulary.py", "RELATION_WORDS"): "words; 'above' and 'below' are words",
    ("viper_rs/vision/spectral/landcover.py", "COVER_NAMES"):
        "the spectral land-cover codes' names (test_cover_codes_name_table_classes)",
    ("viper_rs/vision/concepts.py", "_unknown_message"): "example phrases of an error message",
    ("viper_rs/ui/app.py", "REGION_EXAMPLES"): "example searches shown in the app",
    ("viper_rs/synthetic/questions.py", "QUESTION_CONCEPTS"):
        "the RSVQA-HR words synthetic questions use ('water area', 'wood'), not classes",
    ("viper_rs/synthetic/questions.py", "_CONCEPT_WEIGHTS"): "how often each question word is drawn",
    ("viper_rs/synthetic/questions.py", "_Truth"):
        "the relations' geometry when the synthetic writer answers its own questions",
}


def _strings(node: ast.AST) -> set[str]:
    """The string constants of a tuple/list/set literal (a dict's keys and values), or of
    such a literal wrapped in frozenset()/set()/tuple()/list()/dict()."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("frozenset", "set", "tuple", "list", "dict") and node.args):
        return _strings(node.args[0])
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items: list[ast.expr | None] = list(node.elts)
    elif isinstance(node, ast.Dict):
        items = [*node.keys, *node.values]
    else:
        return set()
    return {e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def _owner(stmt: ast.stmt) -> str:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return stmt.name
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
    names = [t.id for t in targets if isinstance(t, ast.Name)]
    return names[0] if names else f"line {stmt.lineno}"


def copies(source: str) -> list[tuple[str, str]]:
    """(owner, what) of every literal in ``source`` naming two or more classes ("classes")
    or tools ("tools"); the owner is the top-level statement's name."""
    out = []
    for stmt in ast.parse(source).body:
        for node in ast.walk(stmt):
            words = _strings(node)
            if len(words & CLASS_NAMES) >= 2:
                out.append((_owner(stmt), "classes"))
            if len(words & TOOL_NAMES) >= 2:
                out.append((_owner(stmt), "tools"))
    return list(dict.fromkeys(out))


def library_files() -> list[Path]:
    """Every source file of the library (the eval harness maps datasets' own labels)."""
    return [REPO / "app.py", *(p for d in ("viper_rs", "tools") for p in sorted((REPO / d).rglob("*.py")))]


def test_the_scan_finds_copies():
    source = (
        'COLOURS = {"water": "#00f", "tree": "#0f0"}\n'
        'def f(cls):\n    return cls in ("road", "building", "parking")\n'
        'KNOWN = frozenset(["low vegetation", "bare soil"])\n'
        'EMITTED = ("find", "filter_size", "count")\n'
        'OK = ("water", "count", "area", "small")\n'
    )
    assert copies(source) == [("COLOURS", "classes"), ("f", "classes"), ("KNOWN", "classes"),
                              ("EMITTED", "tools")]


def test_no_second_copy_of_the_class_table_or_the_tool_names():
    found = {
        (str(path.relative_to(REPO)), owner): what
        for path in library_files()
        for owner, what in copies(path.read_text(encoding="utf-8"))
    }
    bad = [f"{path}: {owner} lists {what}" for (path, owner), what in found.items()
           if (path, owner) not in ALLOWED]
    assert not bad, ("read the concept table (viper_rs.core.classes) or the tool registry "
                     "(tools.REGISTRY: names, Tool.kinds/concepts/describes) instead:\n"
                     + "\n".join(bad))
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"allowed copies that are gone (remove them from ALLOWED): {stale}"


_JOIN_LOWER_SPLIT = re.compile(r'" "\.join\(\s*[\w.()\[\]]+\.lower\(\)\.split\(\)\s*\)')


def test_one_query_normalisation():
    """Queries are keyed by ``vocabulary.query_key`` only."""
    assert _JOIN_LOWER_SPLIT.search('key = " ".join(query.lower().split())')
    bad = [str(p.relative_to(REPO)) for p in library_files()
           if p != REPO / "viper_rs" / "core" / "vocabulary.py"
           and _JOIN_LOWER_SPLIT.search(p.read_text(encoding="utf-8"))]
    assert not bad, f"use viper_rs.core.vocabulary.query_key: {bad}"
    assert vocabulary.query_key("  Water \t AREA ") == "water area"


# --------------------------------------------------------------------------- the table


def test_the_table_is_consistent():
    assert len(set(SUPPORTED_CLASSES)) == len(CONCEPT_CLASSES)
    colours = [c.colour for c in CONCEPT_CLASSES]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours) and len(set(colours)) == len(colours)
    for c in CONCEPT_CLASSES:
        assert set(c.parts) <= set(SUPPORTED_CLASSES) - {c.name}
        assert (c.index_dimension is None) == bool(c.parts), c.name  # a union scores its parts
        assert c.synonyms and c.approximated and c.approximation and c.description
    assert sorted(BY_NAME[n].index_dimension for n in INDEX_DIMENSIONS) == list(
        range(len(INDEX_DIMENSIONS)))
    phrases = [p for c in CONCEPT_CLASSES for p in (*c.synonyms, *c.approximated)]
    assert len(phrases) == len(set(phrases)), "a phrase names one class"
    assert {cls for cls, _ in VOCABULARY.values()} == set(SUPPORTED_CLASSES)
    assert answered_by("buildingnet") == ("building",)
    assert answered_by("spectral") == SUPPORTED_CLASSES


def test_cover_codes_name_table_classes():
    from viper_rs.vision.spectral import NODATA
    from viper_rs.vision.spectral.landcover import COVER_NAMES
    from viper_rs.vision.spectral.maps import _COVER_CODES, _OBJECT_LAYERS

    assert {n for code, n in COVER_NAMES.items() if code != NODATA} <= set(SUPPORTED_CLASSES)
    assert set(_COVER_CODES) | set(_OBJECT_LAYERS) == set(SUPPORTED_CLASSES)
    assert _COVER_CODES["vegetation"] == (*_COVER_CODES["tree"], *_COVER_CODES["low_vegetation"])


@pytest.mark.parametrize("reader", ["answer_map", "embedders", "spectral"])
def test_readers_follow_the_table(monkeypatch, reader):
    """A colour or an index dimension changed in the table is what its reader sees."""
    if reader == "answer_map":
        from viper_rs.ui.answer_map import colour_for

        colour_for.cache_clear()
        assert colour_for("ponds") == BY_NAME["water"].colour
        assert colour_for("lakeside (3)") == BY_NAME["water"].colour  # a keyword
    elif reader == "embedders":
        from viper_rs.index.embedders import SPECTRAL_CLASSES, SpectralChipEmbedder

        assert SPECTRAL_CLASSES == INDEX_DIMENSIONS
        v, _ = SpectralChipEmbedder(detector=object()).embed_text("vegetation")
        assert [SPECTRAL_CLASSES[i] for i in v.nonzero()[0]] == list(BY_NAME["vegetation"].parts)
    else:
        from viper_rs.core.classes import METRIC_CLASSES, OBJECT_CLASSES

        assert OBJECT_CLASSES == {c.name for c in CONCEPT_CLASSES if c.is_object}
        assert set(METRIC_CLASSES) == {c.name for c in CONCEPT_CLASSES if c.metric}


# --------------------------------------------------------------------------- the registry


def test_registry_declares_kinds_concepts_and_wording():
    kinds = REGISTRY.kinds()
    assert kinds == {"exists": ("presence",), "count": ("count", "other"), "area": ("area",),
                     "compare": ("comparison", "presence")}
    assert all(set(k) <= set(KINDS) for k in kinds.values())
    concepts = {t.name: t.concept_positions() for t in REGISTRY if t.concepts}
    assert concepts == {"find": (0,), "exists": (0,), "count": (0,), "area": (0,),
                        "compare": (0, 1)}
    def bad_tool(x: str) -> str:
        """Echo.

        Example:
            return bad_tool("x")
        """
        return x

    with pytest.raises(ValueError, match="not parameters"):
        REGISTRY.add(bad_tool, concepts=("y",))
    assert "bad_tool" not in REGISTRY


def test_relation_phrases_name_the_tools():
    relations = [t.name for t in REGISTRY if t.describes == "relation"]
    assert relations == list(vocabulary.RELATIONS)


def test_a_new_tool_is_read_from_its_declaration():
    """A tool added with kinds and concept parameters is seen by the agent's concept scan,
    the answer-kind inference and the wording without any other list to edit."""
    from viper_rs.agent.loop import program_queries
    from viper_rs.planning.extract import infer_kind

    def tally(things: str | list[Region], extra: int = 0) -> int:
        """Count things.

        Example:
            return tally("building")
        """
        return 0

    REGISTRY.add(tally, kinds=("count",), concepts=("things",))
    try:
        program = 'def execute_command(image):\n    return tally("Small  Ponds", extra=1)\n'
        assert program_queries(program) == ["ponds"]
        assert infer_kind(program) == "count"
    finally:
        REGISTRY.remove("tally")
    assert program_queries(program) == [] and infer_kind(program) == "other"
