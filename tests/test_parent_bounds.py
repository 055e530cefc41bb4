"""Issue 13: what a program makes the PARENT do is bounded in time, memory and output.

Each hostile program below tries to amplify work or memory through one tool (or forges
region references); each test asserts the bound (wall time within the limit + 1 s,
parent memory, error size) and that an honest program run right after on the same agent
still gets the right answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from viper_rs.tools.context import MAX_QUERY_CHARS, MAX_REGION_REFS_PER_CALL
from viper_rs.tools.registry import REGISTRY

from viper_rs.agent import Agent
from viper_rs.core import budget
from viper_rs.core.config import Settings
from viper_rs.core.errors import SandboxTimeout
from viper_rs.synthetic import make_scene

REPO = Path(__file__).resolve().parents[1]
WALL_S = 1.5
BENIGN = "def execute_command(image):\n    return count('building')\n"


def program(body: str) -> str:
    return "def execute_command(image):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ")


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=1, size=1024, gsd=0.5)


@pytest.fixture(scope="module")
def agent():
    settings = Settings(detector="spectral", planner="rules", sandbox_wall_s=WALL_S,
                        sandbox_workers=1)
    with Agent(settings) as a:
        yield a


@pytest.fixture(scope="module")
def truth(agent: Agent, scene) -> int:
    """The honest answer (computed once; the per-image work is done here, unlimited)."""
    answer = agent.run_program(scene.image, BENIGN)
    assert answer.error is None, answer.error
    assert answer.value >= 1
    return answer.value


def run_timed(agent: Agent, image, source: str):
    started = time.perf_counter()
    answer = agent.run_program(image, source)
    return answer, time.perf_counter() - started


# Each program would keep the parent busy for many seconds (or minutes) without the
# deadline covering tool calls and the per-tool cost bounds.
AMPLIFIERS = {
    "find_many_concepts": """
        n = 0
        for i in range(199):
            n += len(find(str(i) + " large building"))
        return n
    """,
    "find_shapes": """
        n = 0
        for i in range(199):
            n += len(find("circular " + str(i) + " tree"))
        return n
    """,
    "exists_count_compare": """
        n = 0
        for i in range(66):
            n += count(str(i) + " road") + exists(str(i) + " tree")
            n += compare(str(i) + " pond", str(i) + " grass", "more")
        return n
    """,
    "area_union": """
        b = find("building") + find("tree") + find("grass") + find("road")
        s = 0.0
        for i in range(190):
            s += area(b)
        return s
    """,
    "filters": """
        t = find("tree") + find("building") + find("grass area")
        n = 0
        for i in range(65):
            n += len(filter_shape(t, "circular")) + len(filter_size(t, "small"))
            n += len(filter_area(t, 1.0, 1e9))
        return n
    """,
    "directions": """
        b = find("building")
        t = find("tree") + find("grass") + find("road")
        n = 0
        for i in range(49):
            n += len(left_of(t, b)) + len(right_of(b, t)) + len(above(t, t)) + len(below(t, b))
        return n
    """,
    "next_to_far": """
        b = find("building") + find("tree")
        n = 0
        for i in range(198):
            n += len(next_to(b, b, max_distance_m=12000.0))
        return n
    """,
}


@pytest.mark.parametrize("name", sorted(AMPLIFIERS))
def test_tool_time_is_charged_and_bounded(agent: Agent, scene, truth: int, name: str) -> None:
    answer, wall = run_timed(agent, scene.image, program(AMPLIFIERS[name]))
    assert wall <= WALL_S + 1.0, (name, wall, answer.answer)
    assert answer.timings["program_ms"] <= (WALL_S + 1.0) * 1000
    if answer.error is not None:
        assert answer.error["type"] in ("timeout", "tool", "sandbox"), answer.error
        assert len(answer.error["message"]) <= 500
    if answer.error and answer.error["type"] == "timeout":
        assert "tool calls included" in answer.error["message"]
        assert answer.regions == []  # partial work leaves nothing behind
    after = agent.run_program(scene.image, BENIGN)
    assert after.error is None and after.value == truth


def test_a_long_tool_call_is_abandoned_at_the_deadline(agent: Agent, scene, truth) -> None:
    """A tool that works for minutes (checking the budget) stops at the program's limit."""

    @REGISTRY.register
    def grind(n: int) -> int:
        """Busy work for tests.

        Example:
            return grind(10)
        """
        total = 0
        for _ in range(n):
            budget.check()
            total += sum(range(2000))
        return total

    try:
        answer, wall = run_timed(agent, scene.image, program("return grind(10 ** 9)"))
    finally:
        REGISTRY.remove("grind")
    assert answer.error is not None and answer.error["type"] == "timeout"
    assert WALL_S - 0.1 <= wall <= WALL_S + 1.0
    assert agent.run_program(scene.image, BENIGN).value == truth


def test_budget_check_outside_a_program_is_free() -> None:
    budget.check()  # no deadline: never raises
    assert budget.remaining() == float("inf")
    with budget.deadline(time.monotonic() - 1, 3.0), pytest.raises(SandboxTimeout, match="3 s"):
        budget.check()


# --------------------------------------------------------------------- forged references
@pytest.mark.parametrize(
    "refs",
    [
        '[{"__region__": 0}] * 70000',  # 17-byte forged references, far too many
        '[{"__region__": 10 ** 30}]',  # int too large: no OverflowError, a tool error
        '[{"__region__": 1e308}]',
        '[{"__region__": True}]',
        '[{"__region__": "0"}]',
        '[{"__region__": -1}]',
        '[{"__region__": [0]}]',
    ],
)
def test_forged_region_references(agent: Agent, scene, truth, refs: str, capfd) -> None:
    source = program(f"b = find('building')\nreturn area({refs})")
    answer, wall = run_timed(agent, scene.image, source)
    assert answer.error is not None and answer.error["type"] == "tool", answer.answer
    assert "region reference" in answer.error["message"]
    assert len(answer.error["message"]) <= 500
    assert wall <= WALL_S + 1.0
    assert "Traceback" not in capfd.readouterr().err
    assert agent.run_program(scene.image, BENIGN).value == truth


def test_references_are_only_valid_in_the_program_they_were_issued_to(
    agent: Agent, scene, truth
) -> None:
    first = agent.run_program(scene.image, program("return find('building')"))
    assert first.error is None and first.value == truth
    # a later program that never called find cannot use those ids
    answer = agent.run_program(scene.image, program('return area([{"__region__": 0}])'))
    assert answer.error is not None and "unknown region reference" in answer.error["message"]


def test_region_references_per_call_are_capped(agent: Agent, scene) -> None:
    many = program(f'b = find("building")\nreturn count([b[0]] * {MAX_REGION_REFS_PER_CALL + 1})')
    answer = agent.run_program(scene.image, many)
    assert answer.error is not None and answer.error["type"] in ("tool", "sandbox")


def test_query_strings_are_capped(agent: Agent, scene, truth) -> None:
    long = program(f'return count("x" * {MAX_QUERY_CHARS} + " building")')
    answer = agent.run_program(scene.image, long)
    assert answer.error is not None and answer.error["type"] == "tool"
    assert "too long" in answer.error["message"] and len(answer.error["message"]) <= 500
    ok = agent.run_program(scene.image, program(f'return count("{"a " * 40}building")'))
    assert ok.error is None and ok.value == truth


# --------------------------------------------------------------------- unexpected exceptions
def test_an_unexpected_exception_in_a_tool_is_a_short_tool_error(
    agent: Agent, scene, truth, capfd
) -> None:
    @REGISTRY.register
    def broken(n: int) -> int:
        """A tool with a bug, for tests.

        Example:
            return broken(1)
        """
        raise ZeroDivisionError("x" * 100_000)

    try:
        answer = agent.run_program(scene.image, program("return broken(1)"))
    finally:
        REGISTRY.remove("broken")
    assert answer.error["type"] == "tool"
    assert answer.error["message"].startswith("internal error in tool broken: ZeroDivisionError")
    assert len(answer.error["message"]) <= 500
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert agent.run_program(scene.image, BENIGN).value == truth


# --------------------------------------------------------------------- parent memory
MEMORY_SCRIPT = r"""
import json, resource, sys, textwrap
from viper_rs.agent import Agent
from viper_rs.core.config import Settings
from viper_rs.synthetic import make_scene

programs = json.loads(sys.argv[1])
image = make_scene(seed=1, size=1024, gsd=0.5).image
settings = Settings(detector="spectral", planner="rules", sandbox_wall_s=3.0, sandbox_workers=1)
benign = "def execute_command(image):\n    return count('building')\n"
with Agent(settings) as agent:
    truth = agent.run_program(image, benign).value
    for src in programs:  # warm every code path once
        agent.run_program(image, benign)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = []
    for src in programs:
        a = agent.run_program(image, src)
        size = len(a.to_json())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        after = agent.run_program(image, benign)
        out.append({"error": a.error, "ms": a.timings["program_ms"], "json": size,
                    "peak_mb": (peak - base) / 1024, "benign": after.value == truth})
print(json.dumps(out))
"""

MEMORY_HOGS = [
    # one distance map per region with a distance larger than the image (4.8 GB before)
    program("""
        b = find("building") + find("tree") + find("road")
        return len(next_to(b, b, max_distance_m=12000.0))
    """),
    # region copies carrying long query strings, kept in the answer (GBs before)
    program("""
        n = 0
        for i in range(190):
            n += len(find("q" * 150 + str(i) + " tree"))
        return find("tree") + find("grass")
    """),
    # a union mask per call over thousands of references
    program("""
        t = find("tree") + find("grass") + find("building")
        s = 0.0
        for i in range(150):
            s += area(t)
        return s
    """),
]


def test_parent_memory_and_output_are_bounded(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "VIPER_RS_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, json.dumps(MEMORY_HOGS)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in results:
        assert r["ms"] <= 4000, r  # 3 s limit + 1 s
        assert r["peak_mb"] <= 512, r  # the documented parent budget per program
        assert r["json"] <= 4 * 2**20, r
        assert r["benign"], r
