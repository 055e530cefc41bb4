"""The command line, end to end, as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

KEYS = {"answer", "value", "kind", "program", "trace", "regions", "error", "timings"}


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "viper_rs", *args], capture_output=True, text=True,
        timeout=timeout, cwd=REPO,
    )


def test_ask_napa_water_area_json(shared_data):
    img = shared_data / "naip" / "napa_naip_1m.tif"
    p = run("ask", str(img), "What is the area covered by water areas?", "--json")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert KEYS <= out.keys()
    assert out["error"] is None and out["kind"] == "area"
    assert isinstance(out["value"], float) and out["answer"].endswith("m2")
    assert out["trace"] and out["trace"][0]["tool"] in ("find", "area")
    assert all("ms" in e for e in out["trace"])
    assert out["detector"] == "buildingnet+spectral"  # auto: buildings by the learned model


def test_questions_file_batch_keeps_going(tmp_path, shared_data):
    img = shared_data / "naip" / "napa_naip_1m.tif"
    qf = tmp_path / "q.txt"
    qf.write_text("How many buildings are there?\nWhat colour is the sky?\n# comment\n\nIs there a road?\n")
    p = run("ask", str(img), "--questions-file", str(qf), "--json")
    assert p.returncode == 1  # one question failed, the others were answered
    rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    assert [r["question"] for r in rows] == [
        "How many buildings are there?", "What colour is the sky?", "Is there a road?"]
    assert rows[0]["error"] is None and rows[0]["kind"] == "count"
    assert rows[1]["error"]["type"] == "planning" and rows[1]["value"] is None
    assert rows[2]["error"] is None and rows[2]["kind"] == "presence"


def test_run_programs(tmp_path, shared_data):
    img = shared_data / "naip" / "napa_naip_1m.tif"
    good = tmp_path / "good.py"
    good.write_text("def execute_command(image):\n    return count('tree') >= 0\n")
    evil = tmp_path / "evil.py"
    evil.write_text("import os\ndef execute_command(image):\n    return os.listdir('/')\n")
    p = run("run", str(img), str(good), str(evil), "--json")
    rows = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    assert len(rows) == 2
    assert rows[0]["error"] is None and rows[0]["value"] is True
    assert rows[1]["error"]["type"] == "validation"
    assert p.returncode == 1


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.tif", None, "no such file"),
        ("empty.tif", b"", "empty"),
        ("junk.tif", b"hello, not a tiff", "not a readable image"),
        ("junk.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image"),
        (".", None, "directory"),
    ],
)
def test_bad_image_one_line_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    p = run("ask", str(path), "How many buildings are there?")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]


def test_png_needs_gsd_for_m2(tmp_path):
    import numpy as np
    from PIL import Image

    png = tmp_path / "g.png"
    rgb = np.full((64, 64, 3), (90, 140, 60), np.uint8)
    Image.fromarray(rgb).save(png)
    p = run("ask", str(png), "What is the area covered by vegetation?", "--json")
    out = json.loads(p.stdout)
    assert out["area_unit"] == "px" and "px" in out["answer"] and out["error"] is None
    # grass is told from trees by texture in metres: refused until --gsd gives them
    p = run("ask", str(png), "What is the area covered by grass areas?")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().startswith("viper-rs: error: g.png has no ground size; pass --gsd M")
    p = run("ask", str(png), "What is the area covered by grass areas?", "--json", "--gsd", "0.5")
    out = json.loads(p.stdout)
    assert out["area_unit"] == "m2" and out["answer"].endswith("m2")


def test_unknown_concept_is_an_error_not_no(shared_data):
    img = shared_data / "naip" / "napa_naip_1m.tif"
    p = run("ask", str(img), "Is there a flux capacitor?", "--json")
    out = json.loads(p.stdout)
    assert out["error"]["type"] == "tool" and out["value"] is None
    assert out["answer"] != "no"


def test_demo_runs():
    p = run("demo", "--n", "3", "--out", "out/test_demo")
    assert p.returncode == 0, p.stderr
    assert "right with the buildingnet+spectral detector" in p.stdout


def test_tools_table():
    p = run("tools")
    assert p.returncode == 0 and "| `find` |" in p.stdout


def test_bad_questions_and_program_files(tmp_path, shared_data):
    img = shared_data / "naip" / "napa_naip_1m.tif"
    binary = tmp_path / "q.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n# only a comment\n")
    for args, message in [
        (("ask", str(img), "--questions-file", str(binary)), "cannot read questions file"),
        (("ask", str(img), "--questions-file", str(empty)), "no questions"),
        (("ask", str(img), "--questions-file", str(tmp_path / "nope.txt")), "no such questions file"),
        (("run", str(img), str(tmp_path / "nope.py")), "no such program file"),
        (("ask", str(img)), "QUESTION"),
    ]:
        p = run(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert "Traceback" not in p.stderr and message in p.stderr


def test_single_band_raster_is_refused(tmp_path):
    import numpy as np
    import rasterio

    path = tmp_path / "dsm.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1,
                       dtype="float32") as ds:
        ds.write(np.ones((1, 16, 16), dtype=np.float32))
    # Bands the detector cannot read are bad input, refused before any question like an
    # unreadable file: exit 2 and one line naming the file and the problem (issue 22).
    # (An empty cache: no CLIP weights, so auto is spectral.)
    env = {**os.environ, "VIPER_RS_CACHE_DIR": str(tmp_path / "cache")}
    for detector in ("spectral", "auto"):
        r = subprocess.run([sys.executable, "-m", "viper_rs", "ask", str(path),
                            "How many buildings are there?", "--detector", detector],
                           capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and not r.stdout, r.stdout + r.stderr
        assert ("dsm.tif has 1 band; the spectral detector needs red, green and blue bands"
                in lines[0])
    assert lines[0].endswith("(detector auto -> spectral)"), lines
