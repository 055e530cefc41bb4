"""Issue 23 ("no ground size"): an image whose pixels have no ground size (no CRS, no
``--gsd``: a plain PNG, or a PNG whose world file has no CRS) is never measured at an
assumed 1 m. Concepts the spectral rules tell in metres (buildings, roads, parking,
built-up land, tree vs grass, water bodies, bare soil) and the tools' metre thresholds
(size words, area bounds, "next to") are refused with one line naming the image and
``--gsd``; concepts told pixel by pixel (vegetation, impervious surface) answer in pixels
with a note; ``--gsd`` answers everything in m2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viper_rs.cli import main
from viper_rs.core.classes import METRIC_CLASSES, SUPPORTED_CLASSES
from viper_rs.core.config import Settings
from viper_rs.core.errors import NoGroundSize
from viper_rs.core.geo import GeoImage
from viper_rs.synthetic import make_scene
from viper_rs.vision.spectral import SpectralDetector

SPECTRAL = ("--detector", "spectral", "--planner", "rules")


def _png(path: Path, world_file: bool = False) -> Path:
    """Synthetic scene 0 (1 m) as a plain PNG, optionally with a world file of 0.15 m
    pixels (GDAL reads its transform but no CRS)."""
    rgb = np.moveaxis(make_scene(0, size=192, gsd=1.0).image.data[:3], 0, -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    if world_file:
        path.with_suffix(".pgw").write_text("0.15\n0\n0\n-0.15\n500000\n4500000\n")
    return path


def _one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("viper-rs: error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    return lines[0]


@pytest.mark.parametrize("world_file", [False, True])
def test_building_count_is_refused_in_one_line_naming_the_image_and_gsd(
        tmp_path, capsys, world_file) -> None:
    png = _png(tmp_path / "tile.png", world_file)
    code = main(["ask", str(png), "How many buildings are there?", *SPECTRAL])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    line = _one_error(err)
    assert line.startswith("viper-rs: error: tile.png has no ground size; "
                           "pass --gsd M (metres per pixel)")
    assert "shape rules in metres" in line
    # --json: the same line, and the answer carries the typed error
    code = main(["ask", str(png), "How many buildings are there?", *SPECTRAL, "--json"])
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert code == 2 and answer["value"] is None
    assert answer["error"]["type"] == "no_ground_size"
    assert "tile.png has no ground size" in _one_error(err)


def test_vegetation_area_answers_in_pixels_with_the_note(tmp_path, capsys) -> None:
    png = _png(tmp_path / "tile.png")
    code = main(["ask", str(png), "What is the area of vegetation?", *SPECTRAL, "--json"])
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert code == 0 and answer["error"] is None and "viper-rs: error" not in err
    assert answer["area_unit"] == "px" and answer["value"] > 0
    assert any("no georeference: areas in pixels; pass --gsd M" in n for n in answer["notes"])
    assert any("taken in pixels (1 px as 1 m)" in n for n in answer["notes"])


def test_water_area_is_refused_without_and_answered_in_m2_with_gsd(tmp_path, capsys) -> None:
    png = _png(tmp_path / "tile.png")
    code = main(["ask", str(png), "What is the area of water?", *SPECTRAL])
    line = _one_error(capsys.readouterr().err)
    assert code == 2 and "tile.png has no ground size; pass --gsd M" in line
    for q in ("What is the area of water?", "How many buildings are there?"):
        code = main(["ask", str(png), q, *SPECTRAL, "--json", "--gsd", "0.15"])
        answer = json.loads(capsys.readouterr().out)
        assert code == 0 and answer["error"] is None and answer["area_unit"] == "m2"
        assert not any("no georeference" in n for n in answer["notes"])


def test_a_questions_file_answers_the_rest_and_exits_2(tmp_path, capsys) -> None:
    png = _png(tmp_path / "tile.png")
    qs = tmp_path / "q.txt"
    qs.write_text("What is the area of vegetation?\nHow many roads are there?\n")
    code = main(["ask", str(png), "--questions-file", str(qs), *SPECTRAL, "--json"])
    out, err = capsys.readouterr()
    answers = [json.loads(ln) for ln in out.splitlines()]
    assert code == 2 and len(answers) == 2
    assert answers[0]["error"] is None and answers[1]["error"]["type"] == "no_ground_size"
    assert "pass --gsd M" in _one_error(err)


@pytest.mark.parametrize("cls", SUPPORTED_CLASSES)
def test_each_class_is_refused_or_answered_in_pixels(cls: str) -> None:
    """The table (METRIC_CLASSES) decides: a class told in metres is refused on an image
    without a ground size, the others answer in pixels; all answer with a GSD."""
    data = make_scene(0, size=128, gsd=1.0).image.data
    det = SpectralDetector()
    plain = GeoImage.from_array(data, "R,G,B,NIR", name="plain")
    query = cls.replace("_", " ")
    if cls in METRIC_CLASSES:
        with pytest.raises(NoGroundSize, match=r"^plain has no ground size; pass --gsd M"):
            det.find(plain, query)
    else:
        assert all(r.area_unit == "px" for r in det.find(plain, query))
    grounded = GeoImage.from_array(data, "R,G,B,NIR", gsd=1.0)
    assert all(r.area_unit == "m2" for r in det.find(grounded, query))


@pytest.mark.parametrize("program, why", [
    ('return count(find("small vegetation"))', "the size word 'small' compares areas in m2"),
    ('return count(filter_size(find("vegetation"), "large"))', "filter_size 'large'"),
    ('return count(filter_area(find("vegetation"), min_m2=50.0))', "filter_area's bounds"),
    ('return exists(next_to(find("vegetation"), find("impervious")))',
     "next_to's distance is 10 m"),
])
def test_metre_thresholds_of_the_tools_are_refused(program: str, why: str) -> None:
    from viper_rs.agent import Agent

    source = f"def execute_command(image):\n    {program}\n"
    plain = GeoImage.from_array(make_scene(0, size=128).image.data, "R,G,B,NIR", name="arr")
    grounded = GeoImage.from_array(make_scene(0, size=128).image.data, "R,G,B,NIR", gsd=1.0)
    with Agent(Settings(detector="spectral", planner="rules", sandbox_workers=1)) as agent:
        refused = agent.run_program(plain, source)
        answered = agent.run_program(grounded, source)
        # metre-free calls still answer in pixels
        free = agent.run_program(plain, "def execute_command(image):\n    return count("
                                 "filter_area(find('vegetation'), min_m2=0.0))\n")
    assert refused.error["type"] == "no_ground_size"
    assert refused.error["message"].startswith("arr has no ground size; pass --gsd M")
    assert why in refused.error["message"]
    assert answered.error is None and free.error is None


def test_the_app_says_to_set_the_gsd_field(tmp_path: Path) -> None:
    from viper_rs.ui.catalog import Catalog
    from viper_rs.ui.session import Controller, Options

    settings = Settings.from_env(cache_dir=tmp_path / "cache", sandbox_workers=1)
    c = Controller(Catalog(demo=((0, 128, 1.0),)), settings, out_dir=tmp_path / "out")
    try:
        key, loaded = c.load_upload(_png(tmp_path / "up.png"))
        assert "It has no ground size: enter its GSD (m/px)" in loaded
        assert "questions that need metres (buildings, roads, water...) are refused" in loaded
        rules = Options(detector="spectral", planner="rules")
        refused = c.ask(key, "How many buildings are there?", rules)
        assert refused.message.startswith("Could not answer: up.png has no ground size; set "
                                          "the GSD (m/px) field")
        assert "--gsd" not in refused.message
        assert c.ask(key, "How many buildings are there?", rules, gsd=0.5).answer.error is None
        assert c.ask(key, "What is the area of vegetation?", rules).answer.area_unit == "px"
    finally:
        c.close()
