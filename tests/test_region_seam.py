"""The seam between region questions and the agent (issue 24, point 5).

A region question hands the agent the image, detector and planner of that one question
(``Agent.ask(..., detector=, planner=)``); nothing swaps an agent's detector or planner in
place, nothing probes planners or agents with ``getattr``, and no ``Any`` stands for a planner
or an agent in the library. The source checks parse ``viper_rs/`` and ``app.py`` with ``ast``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.test_region import big_scene, cut
from viper_rs.agent import Agent
from viper_rs.core.config import Settings
from viper_rs.core.errors import PlanningError
from viper_rs.planning.base import Plan, RepairingPlanner
from viper_rs.planning.rules import RulePlanner
from viper_rs.region import RegionOptions, ask_region, estimate_question, open_region
from viper_rs.region.funnel import PlannedOnce
from viper_rs.region.oracle import MosaicOracle
from viper_rs.synthetic import BUILDING_CLASSES, make_scene
from viper_rs.vision.oracle import OracleDetector

REPO = Path(__file__).resolve().parents[1]
#: Names that hold a planner or an agent (the last part of a dotted name, any case).
PLANNER_OR_AGENT = re.compile(r"(^|_)(planner|agent)s?$", re.IGNORECASE)
#: What only planners and agents answer: a ``getattr`` probe for one of these is a probe of
#: a planner or an agent, whatever the variable is called.
PLANNER_OR_AGENT_MEMBERS = frozenset({"plan", "can_repair", "repair", "accept", "ask",
                                      "run_program"})
#: Attribute assignments to ``.detector`` / ``.planner`` that are not an agent's insides:
#: (file, assigned expression) and why.
ALLOWED_ASSIGNMENTS: dict[tuple[str, str], str] = {
    ("viper_rs/planning/auto.py", "plan.planner"): "a Plan record names the planner that wrote it",
}


def library_files() -> list[Path]:
    return sorted((REPO / "viper_rs").rglob("*.py")) + [REPO / "app.py"]


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def last_name(node: ast.AST) -> str:
    """``agent`` for ``agent``, ``self.agent``, ``ctx.planner``; ``""`` for other expressions."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def is_any(annotation: ast.AST | None) -> bool:
    """Whether an annotation is ``Any`` (or ``Any | None``, ``Optional[Any]``)."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    names = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(annotation)
             if isinstance(n, ast.Name | ast.Attribute)}
    return "Any" in names and not names - {"Any", "None", "Optional", "typing"}


def getattr_probes(rel: str, tree: ast.AST) -> list[str]:
    """``getattr``/``hasattr`` calls on a planner or an agent (by the variable's name, or
    by the member probed)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
            continue
        member = node.args[1]
        if PLANNER_OR_AGENT.search(last_name(node.args[0])) or (
                isinstance(member, ast.Constant) and member.value in PLANNER_OR_AGENT_MEMBERS):
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    return found


def forwarding_wrappers(rel: str, tree: ast.AST) -> list[str]:
    """``__getattr__``/``__getattribute__`` definitions (a wrapper forwarding undeclared
    attributes)."""
    return [f"{rel}:{node.lineno}: {node.name}" for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name in ("__getattr__", "__getattribute__")]


def swaps(rel: str, tree: ast.AST) -> list[str]:
    """Assignments to another object's ``.detector`` / ``.planner`` (``setattr`` too)."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = [t for tgt in node.targets
                       for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt])]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "setattr" and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in ("detector", "planner"):
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
        for t in targets:
            if not (isinstance(t, ast.Attribute) and t.attr in ("detector", "planner")):
                continue
            if isinstance(t.value, ast.Name) and t.value.id == "self":
                continue  # an object setting its own attribute (its constructor)
            if (rel, ast.unparse(t)) in ALLOWED_ASSIGNMENTS:
                continue
            found.append(f"{rel}:{t.lineno}: {ast.unparse(t)} = ...")
    return found


def any_annotations(rel: str, tree: ast.AST) -> list[str]:
    """Parameters, returns and annotated names of planners/agents typed ``Any``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs:
                if PLANNER_OR_AGENT.search(arg.arg) and is_any(arg.annotation):
                    found.append(f"{rel}:{arg.lineno}: {arg.arg}: Any")
            if PLANNER_OR_AGENT.search(node.name) and is_any(node.returns):
                found.append(f"{rel}:{node.lineno}: {node.name}() -> Any")
        elif isinstance(node, ast.AnnAssign) and is_any(node.annotation) \
                and PLANNER_OR_AGENT.search(last_name(node.target)):
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node.target)}: Any")
    return found


def library_findings(check, folders: tuple[str, ...] | None = None) -> list[str]:
    found = []
    for path in library_files():
        rel = str(path.relative_to(REPO))
        if folders is None or any(rel.startswith(f"viper_rs/{f}/") for f in folders):
            found += check(rel, parsed(path))
    return found


def test_no_getattr_on_planners_or_agents() -> None:
    found = library_findings(getattr_probes)
    assert not found, "read planners and agents through their declared interface:\n" + \
        "\n".join(found)


def test_no_forwarding_wrappers_around_planners() -> None:
    """A class standing in for a planner (like PlannedOnce) declares what it forwards."""
    found = library_findings(forwarding_wrappers, ("planning", "region", "agent"))
    assert not found, "\n".join(found)


def test_no_swapping_of_an_agents_detector_or_planner() -> None:
    found = library_findings(swaps)
    assert not found, ("hand the detector/planner to Agent.ask or run_program instead of "
                       "swapping an agent's:\n" + "\n".join(found))


def test_no_any_for_planners_or_agents() -> None:
    found = library_findings(any_annotations)
    assert not found, "type planners and agents by Planner/RepairingPlanner/Agent:\n" + \
        "\n".join(found)


#: The old ask_region's ways, each of which a check above must find.
OLD = """
def ask_region(agent: Any = None, planner: Any = None) -> None:
    agent.detector = region_det
    self.agent.detector, self.agent.planner = previous, before
    setattr(agent, "planner", PlannedOnce(plan, agent.planner))
    name = getattr(self._planner, "name", None)
    f = getattr(self.inner, "can_repair", None)

class PlannedOnce:
    inner_planner: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner_planner, name)

def session_agent(options) -> Any: ...
"""


def test_the_source_checks_find_the_old_ways() -> None:
    tree = ast.parse(OLD)
    assert len(getattr_probes("old.py", tree)) == 3
    assert len(forwarding_wrappers("old.py", tree)) == 1
    assert len(swaps("old.py", tree)) == 4
    assert len(any_annotations("old.py", tree)) == 4
    fine = ast.parse("def f(planner: Planner | None, agent: Agent) -> None:\n"
                     "    self.planner = planner\n    x = getattr(agent.detector, 'name')\n")
    assert not getattr_probes("f.py", fine) + swaps("f.py", fine) + any_annotations("f.py", fine)


# ---------------------------------------------------------------------------- behaviour
class OncePlanner:
    """A plain Planner (not a RepairingPlanner) that counts its calls."""

    name = "once"

    def __init__(self) -> None:
        self.calls = 0

    def plan(self, question: str) -> Plan:
        self.calls += 1
        return Plan(program="def execute_command(image):\n    return count('building')\n",
                    kind="count", planner=self.name)


def test_planned_once_declares_the_planner_interface() -> None:
    inner = OncePlanner()
    first = Plan(program="def execute_command(image):\n    return 1\n", kind="count",
                 planner="once")
    p = PlannedOnce(first, inner)
    assert isinstance(p, RepairingPlanner) and p.name == "once"
    assert p.plan("q") is first and inner.calls == 0
    assert p.plan("q").planner == "once" and inner.calls == 1
    assert p.can_repair(first) is False
    p.accept("q", first)  # the inner planner keeps nothing: a no-op
    with pytest.raises(PlanningError):
        p.repair("q", [(first, {"type": "tool", "message": "x"})])
    with pytest.raises(AttributeError):
        p.calls  # noqa: B018 - nothing is forwarded that the interface does not declare


def test_planned_once_forwards_to_a_repairing_planner() -> None:
    class Repairing(OncePlanner):
        accepted: list[str] = []

        def can_repair(self, plan: Plan) -> bool:
            return True

        def repair(self, question, failures) -> Plan:
            return Plan(program="repaired", kind="other", planner=self.name)

        def accept(self, question: str, plan: Plan) -> None:
            self.accepted.append(question)

    inner = Repairing()
    p = PlannedOnce(inner.plan("q"), inner)
    assert p.can_repair(p.plan("q")) and p.repair("q", []).program == "repaired"
    p.accept("q2", p.plan("q"))
    assert inner.accepted == ["q2"]


class WatchedAgent(Agent):
    """An Agent that records every attribute set after it was built."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__["changed"] = []

    def __setattr__(self, name: str, value: object) -> None:
        if "changed" in self.__dict__:
            self.__dict__["changed"].append(name)
        super().__setattr__(name, value)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    return cut(big_scene(), tmp_path_factory.mktemp("mosaic"))


def test_ask_region_hands_the_agent_its_detector_and_planner(mosaic) -> None:
    planner = OncePlanner()
    with WatchedAgent(settings=Settings(), detector=MosaicOracle(big_scene()),
                      planner=planner) as agent:
        detector = agent.detector
        answer, report = ask_region(open_region(mosaic), "How many buildings are there?",
                                    RegionOptions(chip_m=256.0, halo_m=0.0, detector=detector),
                                    agent=agent)
        assert agent.changed == [] and agent.detector is detector and agent.planner is planner
    assert answer.error is None and answer.value == len(big_scene().objects_of(*BUILDING_CLASSES))
    assert planner.calls == 1  # planned once, before the scan; the agent used that plan
    assert answer.planner == "once" and answer.detector == detector.name
    assert report.coverage["computed_chips"] > 0


def test_agent_ask_takes_the_detector_and_planner_of_one_question() -> None:
    scene = make_scene(seed=3)
    with Agent(settings=Settings(), detector="spectral", planner="rules") as agent:
        before = (agent.detector, agent.planner)
        planner = OncePlanner()
        answer = agent.ask(scene.image, "anything", detector=OracleDetector(scene),
                           planner=planner)
        assert (agent.detector, agent.planner) == before
        assert planner.calls == 1 and answer.planner == "once" and answer.detector == "oracle"
        assert answer.error is None
        again = agent.ask(scene.image, "How many buildings are there?")
        assert again.detector == agent.detector.name and again.planner == RulePlanner.name


def test_estimate_question_takes_the_same_options(mosaic) -> None:
    image = open_region(mosaic)
    options = RegionOptions(chip_m=256.0, halo_m=0.0, detector="spectral", planner="rules",
                            settings=Settings())
    cost, refusal = estimate_question(image, "How many water areas are there?", options)
    assert refusal is None and cost.chips > 0
    _, report = ask_region(image, "How many water areas are there?", options)
    assert report.estimate == cost.to_dict()
