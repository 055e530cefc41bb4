"""One declaration per tool: a new tool shows up in the prompt API text, the sandbox
namespace, argument validation and the tool table of docs/tools.md."""

from __future__ import annotations

import numpy as np
import pytest
from viper_rs.tools.registry import tool

from tests.conftest import REPO, StaticDetector
from viper_rs import tools
from viper_rs.agent import Agent
from viper_rs.agent.docs import TOOLS_DOC, docs_tools_table
from viper_rs.core.config import Settings
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.planning.prompting import render_prompt


@pytest.fixture
def widest_tool():
    @tool
    def widest(regions: list[Region], k: int = 1) -> list[Region]:
        """The k regions with the widest bounding boxes.

        Example:
            return widest(find("building"), k=2)
        """
        return sorted(regions, key=lambda r: r.bbox[2] - r.bbox[0], reverse=True)[:k]

    yield widest
    tools.REGISTRY.remove("widest")


@pytest.fixture
def agent(scene_masks):
    a = Agent(Settings(sandbox_workers=1), detector=StaticDetector(scene_masks), planner="rules")
    yield a
    a.close()


@pytest.fixture
def image():
    return GeoImage.from_array(np.zeros((3, 100, 100), np.uint8), "R,G,B", gsd=1.0)


def test_new_tool_appears_everywhere(widest_tool, agent, image):
    # 1. prompt API text
    prompt = render_prompt("Which building is widest?")
    assert "widest(regions: list[Region], k: int = 1) -> list[Region]" in prompt
    assert 'return widest(find("building"), k=2)' in prompt
    # 2. sandbox namespace: a program can call it
    ans = agent.run_program(image, "def execute_command(image):\n    return widest(find('building'), k=1)[0].area_m2\n")
    assert ans.error is None, ans.error
    assert ans.value == 600.0
    assert [e["tool"] for e in ans.trace] == ["find", "widest"]
    # 3. argument validation
    bad = agent.run_program(image, "def execute_command(image):\n    return widest(find('building'), k='two')\n")
    assert bad.error["type"] == "tool" and "'k' must be int" in bad.error["message"]
    # 4. the docs tool table
    assert "| `widest` |" in tools.REGISTRY.docs_table()


def test_unregistered_name_is_rejected_before_running(agent, image):
    ans = agent.run_program(image, "def execute_command(image):\n    return widest(find('building'))\n")
    assert ans.error["type"] == "validation"


def test_docs_tool_table_is_generated_from_registry():
    assert TOOLS_DOC == REPO / "docs" / "tools.md"
    page = TOOLS_DOC.read_text(encoding="utf-8")
    assert docs_tools_table(tools.REGISTRY) in page, (
        "docs/tools.md tool table is stale: run `python -m viper_rs tools --update-docs`"
    )
