"""docs/adding-a-detector.md is followed as a newcomer would: its detector code goes into a
temporary package, and its "use it" code asks the agent a question that detector answers."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import Affine

from viper_rs.core.detector import Detector, DetectorBase
from viper_rs.core.geo import GeoImage
from viper_rs.core.raster_write import write_geotiff

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-detector.md"


def code_blocks() -> list[str]:
    """The doc's Python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def scene(n_roofs: int) -> GeoImage:
    """A dark 1 m UTM scene with ``n_roofs`` bright 10 x 10 m squares."""
    data = np.full((3, 120, 120), 40, np.uint8)
    for i in range(n_roofs):
        r, c = 10 + 35 * (i // 3), 10 + 35 * (i % 3)
        data[:, r:r + 10, c:c + 10] = 250
    return GeoImage.from_array(data, "R,G,B", crs="EPSG:32610",
                               transform=Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 4100000.0))


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """The doc's detector, written into a package of its own and imported from there."""
    pkg = tmp_path / "toy_detectors"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(code_blocks()[0], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("toy_detectors")
    yield module
    sys.modules.pop("toy_detectors", None)


def test_the_doc_has_the_detector_and_the_use(toy_package):
    assert len(code_blocks()) >= 2
    det = toy_package.BrightRoofs()
    assert isinstance(det, DetectorBase) and isinstance(det, Detector)
    assert det.name == "bright-roofs" and det.concepts == ("building",)


def test_the_docs_detector_answers_through_the_agent(toy_package, tmp_path, monkeypatch, capsys):
    """The doc's second block, run as written on a scene.tif with 4 bright roofs."""
    write_geotiff(scene(4), tmp_path / "scene.tif")
    monkeypatch.chdir(tmp_path)
    exec(code_blocks()[1], {"BrightRoofs": toy_package.BrightRoofs})  # noqa: S102 - the doc's code
    assert capsys.readouterr().out.strip() == "4"


def test_the_agent_uses_the_toy_detector_for_every_find(toy_package):
    from viper_rs.agent import Agent
    from viper_rs.core.config import Settings

    det = toy_package.BrightRoofs()
    with Agent(Settings(sandbox_workers=1), detector=det, planner="rules") as agent:
        yes = agent.ask(scene(2), "Is there a building?")
        none = agent.ask(scene(0), "Is there a building?")
        count = agent.ask(scene(5), "How many buildings are there?")
        water = agent.ask(scene(2), "How many lakes are there?")
    assert yes.value is True and none.value is False and count.value == 5
    assert yes.detector == "bright-roofs"
    assert water.value is None and "only finds building" in water.error["message"]
