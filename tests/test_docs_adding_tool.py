"""docs/adding-a-tool.md, followed as written: its tool module (the page's first Python
block) goes into a temporary package, whose import registers the tool; the page's program
(its second Python block) then runs through an agent's validation and sandbox, and a
question is planned with it by an LLM planner answered by a loopback server."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, StaticDetector
from tests.fake_openai import FakeOpenAI
from viper_rs import tools
from viper_rs.agent import Agent
from viper_rs.core.config import Settings
from viper_rs.core.geo import GeoImage
from viper_rs.planning.prompting import render_prompt

DOC = REPO / "docs" / "adding-a-tool.md"
PACKAGE = "toy_tools_for_docs_test"


def python_blocks(text: str) -> list[str]:
    """The ```python code blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture
def toy_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The page's tool, declared in a temporary package as the page says; (name, program).
    Unregistered afterwards."""
    module_code, program = python_blocks(DOC.read_text(encoding="utf-8"))[:2]
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "ranking.py").write_text(module_code, encoding="utf-8")
    (package / "__init__.py").write_text(f"from {PACKAGE} import ranking  # noqa: F401\n",
                                         encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(tools.REGISTRY.names())
    importlib.import_module(PACKAGE)
    added = [n for n in tools.REGISTRY.names() if n not in before]
    try:
        assert added == ["largest"], added
        yield added[0], program
    finally:
        for name in added:
            tools.REGISTRY.remove(name)
        for mod in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[mod]


@pytest.fixture
def image() -> GeoImage:
    return GeoImage.from_array(np.zeros((3, 100, 100), np.uint8), "R,G,B", gsd=1.0)


def test_the_page_has_the_blocks_the_test_follows():
    module_code, program = python_blocks(DOC.read_text(encoding="utf-8"))[:2]
    assert "@tool" in module_code and "Example:" in module_code
    assert program.startswith("def execute_command(image):")


def test_toy_tool_reaches_prompt_docs_validation_and_sandbox(toy_tool, scene_masks, image):
    name, program = toy_tool
    signature = "largest(regions: list[Region], k: int = 1) -> list[Region]"
    # the LLM prompt's API section, with the docstring's example
    prompt = render_prompt("Which are the two largest buildings?")
    assert signature in prompt and 'return largest(find("building"), k=2)' in prompt
    # the tool table of docs/tools.md
    assert f"| `{name}` | `{signature}` |" in tools.REGISTRY.docs_table()
    with Agent(Settings(sandbox_workers=1), detector=StaticDetector(scene_masks),
               planner="rules") as agent:
        # the page's program, through validation and the sandbox
        ans = agent.run_program(image, program)
        assert ans.error is None, ans.error
        assert ans.value == 600.0  # the biggest of the 25, 100 and 600 m2 buildings
        assert [e["tool"] for e in ans.trace] == ["find", name]
        # argument validation from the annotations
        bad = agent.run_program(
            image, "def execute_command(image):\n    return largest(find('building'), k='two')\n")
        assert bad.error["type"] == "tool" and "'k' must be int" in bad.error["message"]


def test_toy_tool_answers_a_question_through_the_agent(toy_tool, scene_masks, image, tmp_path):
    name, program = toy_tool
    with FakeOpenAI(models=["m"]) as server:
        server.reply(f"```python\n{program}```")
        settings = Settings(llm_base_url=server.base_url, llm_model="m", cache_dir=tmp_path,
                            llm_timeout_s=5.0, llm_retries=0, sandbox_workers=1)
        with Agent(settings, detector=StaticDetector(scene_masks), planner="llm") as agent:
            ans = agent.ask(image, "What is the area of the largest building?")
        (request,) = server.chat_requests
    assert ans.error is None, ans.error
    assert ans.value == 600.0
    assert f"{name}(find(" in ans.program
    # the planner was shown the tool: its prompt is built from the registry
    sent = "\n".join(str(m.get("content", "")) for m in request["messages"])
    assert "largest(regions: list[Region], k: int = 1) -> list[Region]" in sent


def test_registry_is_clean_after_the_toy_tool(scene_masks, image):
    """Runs after the tests above (file order): the fixture's cleanup left no trace."""
    assert "largest" not in tools.REGISTRY
    with Agent(Settings(sandbox_workers=1), detector=StaticDetector(scene_masks),
               planner="rules") as agent:
        ans = agent.run_program(
            image, "def execute_command(image):\n    return largest(find('building'))\n")
    assert ans.error["type"] == "validation"
