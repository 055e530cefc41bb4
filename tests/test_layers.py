"""Layering (issue 14): no upward imports, no import cycles, the library never imports eval/.

Every module of ``viper_rs/``, ``tools/``, ``eval/`` and ``app.py`` is parsed with ``ast``;
every ``import``/``from ... import`` counts, those inside functions included, except the ones
under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Top-level names of this repository's code (other imports are third-party or stdlib).
PACKAGES = ("viper_rs", "eval", "app")

#: The layer of every module, from the bottom (0). A module may import only from its own
#: layer or below. docs/development.md's layer table (and ../shared/DESIGN.md, "Layers") states
#: the same. A key names a module or a package (its modules included); the longest
#: matching key wins, and the key ``viper_rs`` is the package's ``__init__`` only.
LAYERS: dict[str, int] = {
    "viper_rs": 0,
    "viper_rs.core": 0,  # layers 0-1: the package __init__ imports nothing
    "viper_rs.core.errors": 0,
    "viper_rs.core.config": 0,
    "viper_rs.core.regions": 0,
    "viper_rs.core.budget": 0,
    "viper_rs.core.textsafe": 0,  # safe terminal text (new, imports nothing of the project)
    "viper_rs.core.classes": 0,  # the concept table: classes, phrases, colours, detectors
    "viper_rs.core.vocabulary": 0,  # size/shape/article words, relation phrases, plural tables
    "viper_rs.core.files": 0,  # the exists / is-a-directory / empty check of input files
    "viper_rs.core.lru": 0,  # the thread-safe LRU cache of every in-memory cache
    "viper_rs.core.timing": 0,  # ms_since: elapsed milliseconds as traces report them
    "viper_rs.core.units": 0,
    "viper_rs.core.cost": 0,  # the memory-and-time Budget of a question (config, units)  # bytes, durations, pixel counts written for people (estimates)
    "viper_rs.core.overrides": 0,  # CLI flag / settings-panel -> Settings field table (config)
    "viper_rs.core.georef": 1,  # the one check of a raster's georeference (errors, textsafe)
    "viper_rs.core.geo": 1,  # GeoImage: pixels, georeference, mask, band roles, ground area
    "viper_rs.core.bands": 1,  # band roles: --bands, file metadata, palette, alpha (errors)
    "viper_rs.core.pixel_values": 0,  # finite pixels and the white point (no imports)
    "viper_rs.core.ground_area": 1,  # true ground area of pixels, projected and geodesic
    "viper_rs.core.admission": 1,  # RasterHeader, the admission check, the ways out
    "viper_rs.core.raster_read": 1,  # reading a raster file through the gate (a Raster)
    "viper_rs.core.raster_georef": 1,  # a read raster's georeference: file, user CRS, --gsd
    "viper_rs.core.raster_write": 1,  # write_geotiff
    "viper_rs.core.image": 0,  # the Image protocol GeoImage and RegionImage implement (no imports)
    "viper_rs.core.rasterfile": 1,  # the raster gate: allowed drivers, path checks, no network
    "viper_rs.core.detector": 1,  # the Detector protocol and ScoreMap: geo, regions
    "viper_rs.core.answer_json": 1,  # an answer as bounded strict JSON: output caps, json_safe
    "viper_rs.core.answer": 1,  # the Answer record, and its tool calls as data (answer_json)
    "viper_rs.core.wording": 1,  # an answer's text: value wording, what was counted (answer)
    "viper_rs.sandbox": 1,
    "viper_rs.sandbox.limits": 1,  # Limits, SandboxResult (config, errors)
    "viper_rs.sandbox.dispatch": 1,  # the parent's side of tool calls (budget, limits)
    "viper_rs.sandbox.inprocess": 1,  # run_inprocess: the worker runtime without isolation
    "viper_rs.sandbox.process": 1,  # one worker process seen from the parent
    "viper_rs.sandbox.pool": 1,  # the warm worker pool and Sandbox
    "viper_rs.core.weights": 1,
    "viper_rs.tools": 2,  # the repository's tools/ folder, installed as viper_rs.tools
    "viper_rs.agent.executor": 3,
    "viper_rs.agent.exports": 3,  # an answer's regions as GeoJSON / GeoPackage files (answer)
    "viper_rs.agent.places": 3,  # "where" answers: the places a region list names (answer, regions)
    "viper_rs.planning.prompting": 3,
    "viper_rs.synthetic": 3,
    "viper_rs.synthetic.scene": 3,  # the scene types and builder (make_scene)
    "viper_rs.synthetic.questions": 3,  # the question writer and its exact answers
    "viper_rs.agent.docs": 3,  # the tool table of docs/tools.md, rendered from the registry
    "viper_rs.vision": 4,
    "viper_rs.planning": 4,
    "viper_rs.tiling": 4,  # sources and the one chip grid (Chip, windows, halo) of index and region
    "viper_rs.datasets": 4,  # dataset access (STAC, RSVQA-HR georeference): geo, errors, config
    "viper_rs.agent": 5,  # the package re-exports Agent from the loop
    "viper_rs.agent.loop": 5,
    "viper_rs.index": 6,
    "viper_rs.region": 6,  # region questions (many tiles): grid, chips, stitching, RegionDetector
    "viper_rs.ui": 7,
    "viper_rs.ui.search_map": 7,  # the region search results map (folium HTML, thumbnails)
    "viper_rs.cli": 7,
    "viper_rs.__main__": 7,
    "app": 8,
    "eval": 8,
}
#: The library: must never import ``eval``.
LIBRARY = ("viper_rs", "app")

#: Violations in files being edited elsewhere, allowed until they are fixed there:
#: (importing module, imported module). Empty this as they go.
KNOWN_PENDING: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    """Dotted name of a source file of the repository."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "tools":  # installed as viper_rs.tools (pyproject package-dir)
        parts.insert(0, "viper_rs")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    """Module name -> file, for every module of the repository's code."""
    files = {"app": REPO / "app.py"}
    for pkg in ("viper_rs", "tools", "eval"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            files[module_name(path)] = path
    return files


MODULES = source_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """Absolute name of a ``from`` import's base module (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for each of ``module``'s imports of this
    repository's code; ``from pkg import name`` counts as importing ``pkg.name`` when that is
    a module, else ``pkg``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, top)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno, top) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in MODULES else base, node.lineno, top))
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return [(m, line, top) for m, line, top in out if m.split(".")[0] in PACKAGES]


IMPORTS = {m: imports(m) for m in MODULES}


def layer_key(module: str) -> str | None:
    """The LAYERS key that places ``module`` (None when none does)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS and (n == len(parts) or key != "viper_rs"):
            return key
    return None


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_key(m) is None)
    assert not missing, f"modules without a layer (add them to LAYERS): {missing}"


def test_library_never_imports_eval():
    bad = [
        f"{MODULES[m].relative_to(REPO)}:{line} imports {target}"
        for m in MODULES if m.split(".")[0] in LIBRARY
        for target, line, _ in IMPORTS[m]
        if target.split(".")[0] == "eval" and (m, target) not in KNOWN_PENDING
    ]
    assert not bad, "the library imports eval/:\n" + "\n".join(bad)


def test_no_upward_imports():
    bad = []
    for m in MODULES:
        for target, line, _ in IMPORTS[m]:
            src, dst = layer_key(m), layer_key(target)
            if target not in MODULES:
                bad.append(f"{MODULES[m].relative_to(REPO)}:{line} imports {target}, "
                           "which is not a module of this repository")
            elif src and dst and LAYERS[dst] > LAYERS[src] and (m, target) not in KNOWN_PENDING:
                bad.append(f"{MODULES[m].relative_to(REPO)}:{line} ({src}, layer {LAYERS[src]}) "
                           f"imports {target} ({dst}, layer {LAYERS[dst]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


@pytest.mark.parametrize("scope", ["module level", "all imports"])
def test_no_import_cycles(scope):
    """No cycle among module-level imports; none either when the imports inside functions
    count (such a cycle, e.g. eval.naip <-> eval.rsvqa, is a circle hidden by lazy imports)."""
    graph = {
        m: {t for t, _, top in IMPORTS[m] if t != m and (top or scope == "all imports")}
        for m in MODULES
    }
    graph = {m: {t for t in ts if (m, t) not in KNOWN_PENDING} for m, ts in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle ({scope}): {' -> '.join(cycle)}"


def test_known_pending_are_still_pending():
    """An allowance whose import is gone must leave KNOWN_PENDING."""
    present = {(m, t) for m in MODULES for t, _, _ in IMPORTS[m]}
    assert not KNOWN_PENDING - present, f"fixed, remove: {sorted(KNOWN_PENDING - present)}"
