"""The app's behaviour without a browser: image catalog, questions, errors, settings panel."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from tests.conftest import DATA
from tests.fake_openai import FakeOpenAI
from viper_rs.core.config import Settings
from viper_rs.core.errors import ImageError
from viper_rs.synthetic import BUILDING_CLASSES
from viper_rs.ui.catalog import Catalog
from viper_rs.ui.session import MAX_AGENTS, MAX_QUESTION_CHARS, Controller, Options


def _rgb_png(path: Path, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _one_band_tif(path: Path) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1,
                       dtype="uint8") as ds:
        ds.write(np.ones((1, 16, 16), dtype=np.uint8))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(cache_dir=tmp_path / "cache", sandbox_workers=1)


@pytest.fixture
def controller(settings: Settings, tmp_path: Path):
    c = Controller(Catalog(demo=((0, 256, 1.0),)), settings, out_dir=tmp_path / "out")
    yield c
    c.close()


RULES = Options(detector="spectral", planner="rules")
ORACLE = Options(detector="oracle", planner="rules")


# ---------------------------------------------------------------------- catalog
def test_catalog_starts_on_a_georeferenced_demo_scene():
    cat = Catalog(demo=((0, 128, 1.0), (1, 128, 0.5)))
    assert cat.default_key == cat.keys[0] and cat.keys[0].startswith("demo: synthetic scene 0")
    image = cat.open(cat.default_key)
    assert image.georeferenced and image.shape == (128, 128)
    assert cat.open(cat.default_key) is image  # cached
    assert cat.scene(cat.keys[1]).image.ground_sampling_distance == pytest.approx(0.5, rel=1e-3)
    with pytest.raises(ImageError, match="no image called"):
        cat.open("nope")


def test_folder_scan_lists_imagery_and_skips_the_rest(tmp_path: Path):
    root = tmp_path / "imgs"
    _rgb_png(root / "a.png")
    _rgb_png(root / "sub" / "b.JPG")
    _rgb_png(root / ".hidden" / "c.png")
    root.joinpath("broken.tif").write_bytes(b"not a tiff")
    _one_band_tif(root / "labels.tif")
    (root / "notes.txt").write_text("x")
    cat = Catalog([root, tmp_path / "missing"], demo=())
    assert cat.keys == ["imgs/a.png", "imgs/sub/b.JPG"]
    assert any("missing" in n for n in cat.notes)
    # The one-band raster is left out with the reason (issue 22).
    assert ("imgs: 1 raster with fewer than 3 bands (label masks, elevation models) not "
            "listed: the detectors need red, green and blue bands (e.g. labels.tif)"
            in cat.notes)
    plain = cat.open("imgs/a.png")
    assert plain.area_unit == "px"
    assert cat.open("imgs/a.png", gsd=0.5).area_unit == "m2"
    with pytest.raises(ImageError, match="positive"):
        cat.open("imgs/a.png", gsd=-1.0)


def test_rsvqa_tiles_are_georeferenced_from_their_records(tmp_path: Path):
    root = tmp_path / "rsvqa"
    _rgb_png(root / "images" / "7.png", size=32)
    record = {"id": 7, "upperleft_map_x": -8237000.0, "upperleft_map_y": 4970000.0,
              "res_x": ".1524m", "res_y": ".1524m"}
    (root / "USGS_split_x_images.json").write_text(json.dumps({"images": [record]}))
    cat = Catalog([root], demo=())
    image = cat.open("rsvqa/images/7.png")
    assert image.georeferenced and image.area_unit == "m2"
    assert image.ground_sampling_distance == pytest.approx(0.1524, rel=0.02)


def test_uploads(tmp_path: Path, controller: Controller):
    good = _rgb_png(tmp_path / "up" / "field.png")
    key, message = controller.load_upload(good, gsd=2.0)
    assert key == "upload: field.png" and key in controller.catalog.keys
    assert "Loaded **field.png**" in message and "64×64 px" in message
    assert controller.catalog.open(key, 2.0).area_unit == "m2"
    key, message = controller.load_upload(good)
    assert "no ground size" in message
    for name, content in [("broken.tif", b"II*\x00garbage"), ("empty.png", b""),
                          ("notes.txt", b"hello")]:
        path = tmp_path / "up" / name
        path.write_bytes(content)
        key, message = controller.load_upload(path)
        assert key is None and message.startswith("Could not use the upload"), message
        assert name in message


# ---------------------------------------------------------------------- questions
def test_answer_comes_with_overlay_table_and_evidence(controller: Controller):
    key = controller.catalog.default_key
    turn = controller.ask(key, "How many buildings are there?", RULES)
    assert turn.ok, turn.message
    assert f"**{turn.answer.answer}**" in turn.message
    base, layers = turn.overlay
    assert base.shape == (256, 256, 3) and layers
    assert layers[0][1].startswith("building")
    assert len(turn.rows) == len(turn.answer.regions) > 0
    names = sorted(Path(f).name for f in turn.files)
    assert names == ["answer.json", "evidence.geojson", "evidence.gpkg"]
    assert all(Path(f).is_file() for f in turn.files)
    assert "find(" in turn.program and turn.trace


def test_oracle_answers_the_demo_scenes_ground_truth(controller: Controller):
    key = controller.catalog.default_key
    scene = controller.catalog.scene(key)
    turn = controller.ask(key, "How many buildings are there?", ORACLE)
    truth = len(scene.objects_of(*BUILDING_CLASSES))
    assert turn.ok and turn.answer.value == truth


def test_size_thresholds_from_the_settings_panel_reach_the_tools(controller: Controller):
    key = controller.catalog.default_key
    q = "How many small buildings are there?"
    few = controller.ask(key, q, ORACLE).answer.value
    every = controller.ask(key, q, Options(detector="oracle", planner="rules",
                                          small_max_m2=1e9, large_min_m2=2e9)).answer.value
    total = controller.ask(key, "How many buildings are there?", ORACLE).answer.value
    assert every == total and few < total


@pytest.mark.parametrize("question, expected", [
    ("", "Type a question"),
    ("   ", "Type a question"),
    ("x" * (MAX_QUESTION_CHARS + 1), "characters long"),
    ("Write me a poem about the sea", "Could not answer"),
])
def test_bad_questions_are_messages(controller: Controller, question: str, expected: str):
    turn = controller.ask(controller.catalog.default_key, question, RULES)
    assert expected in turn.message and not turn.ok


def test_unplannable_question_says_what_can_be_asked(controller: Controller):
    turn = controller.ask(controller.catalog.default_key, "What is the meaning of life?", RULES)
    assert turn.message.startswith("Could not answer")
    assert "How many" in turn.message
    assert turn.overlay is not None  # the image stays on screen


def test_settings_and_image_problems_are_messages(controller: Controller, tmp_path: Path):
    key = controller.catalog.default_key
    assert "Settings problem" in controller.ask(key, "Is there a road?",
                                                Options(planner="llm")).message
    upload, _ = controller.load_upload(_rgb_png(tmp_path / "p.png"))
    msg = controller.ask(upload, "Is there a road?", ORACLE).message
    assert "Settings problem" in msg and "demo scene" in msg
    assert "Could not read the image" in controller.ask("gone", "Is there a road?", RULES).message


def test_html_in_questions_is_not_markup(controller: Controller):
    turn = controller.ask(controller.catalog.default_key, "<img src=x onerror=alert(1)>", RULES)
    assert "<img" not in turn.message


def test_unexpected_errors_keep_the_app_up(controller: Controller, monkeypatch):
    agent = controller.agent(RULES)

    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(agent, "ask", boom)
    turn = controller.ask(controller.catalog.default_key, "Is there a road?", RULES)
    assert "Internal error (RuntimeError): kaput" in turn.message
    monkeypatch.undo()
    assert controller.ask(controller.catalog.default_key, "Is there a road?", RULES).ok


def test_agents_are_reused_and_evicted(controller: Controller):
    a = controller.agent(RULES)
    assert controller.agent(Options(detector="spectral", planner="rules", small_max_m2=5)) is a
    others = [controller.agent(Options(detector="spectral", planner="rules",
                                       score_threshold=t)) for t in (0.1, 0.2)]
    assert len(controller._agents) == MAX_AGENTS
    assert a not in controller._agents.values() and others[-1] in controller._agents.values()


def test_llm_endpoint_from_the_settings_panel(controller: Controller):
    program = ("```python\ndef execute_command(image):\n"
               "    return count(find(\"building\"))\n```")
    with FakeOpenAI(models=["m"]) as server:
        server.reply(program)
        opts = Options(detector="spectral", planner="llm", llm_base_url=server.base_url,
                       llm_model="m", llm_api_key="sk-test")
        turn = controller.ask(controller.catalog.default_key, "Count the houses", opts)
        assert turn.ok, turn.message
        assert turn.answer.planner == "llm"
        assert server.requests[-1]["headers"]["authorization"] == "Bearer sk-test"
    assert "sk-test" not in turn.answer.to_json()


def test_close_removes_the_evidence_folder(settings: Settings):
    c = Controller(Catalog(demo=((0, 128, 1.0),)), settings)
    turn = c.ask(c.catalog.default_key, "Is there a road?", RULES)
    assert turn.files and c.out_dir.is_dir()
    c.close()
    assert not c.out_dir.exists()


@pytest.mark.data
def test_shared_data_folder_is_listed_and_georeferenced(shared_data: Path):
    cat = Catalog([shared_data], demo=())
    keys = cat.keys
    assert "data/naip/napa_naip_1m.tif" in keys
    assert not any(k.endswith(("_landcover.tif", "_buildings.tif", "dsm_1m.tif")) for k in keys)
    tiles = [k for k in keys if k.startswith("data/rsvqa_hr_mini/images/")]
    assert len(tiles) == 25
    assert cat.open(tiles[0]).crs.to_epsg() == 3857
    assert DATA.name == "data"



def test_deleted_upload_is_named_without_its_server_path(controller: Controller, tmp_path: Path):
    path = _rgb_png(tmp_path / "deep" / "folder" / "gone.png")
    key, _ = controller.load_upload(path, gsd=1.0)
    path.unlink()
    controller.catalog._opened.clear()  # as after other images pushed it out of the cache
    message = controller.ask(key, "Is there a road?", RULES, gsd=1.0).message
    assert message.startswith("Could not read the image") and "gone.png" in message
    assert str(tmp_path) not in message


def test_folder_scan_in_a_fresh_process(tmp_path: Path):
    """Listing registers GDAL's drivers itself (nothing opened a raster before)."""
    import subprocess
    import sys

    _rgb_png(tmp_path / "imgs" / "a.png")
    code = ("import sys; from viper_rs.ui.catalog import Catalog; "
            "print(len(Catalog([sys.argv[1]], demo=()).keys))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "imgs")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1", out.stderr


def test_a_failed_answer_offers_only_its_json(controller: Controller):
    turn = controller.ask(controller.catalog.default_key, "What is the meaning of life?", RULES)
    assert [Path(f).name for f in turn.files] == ["answer.json"]
    saved = json.loads(Path(turn.files[0]).read_text())
    assert saved["error"]["type"] == "planning" and saved["attempts"]


def test_a_hostile_llm_program_is_bounded_in_the_app(settings: Settings, tmp_path: Path):
    """Issue 13, point 6: the app's agent has the CLI's limits (time, references, output)."""
    settings = settings.model_copy(update={"sandbox_wall_s": 1.0, "llm_repair_attempts": 0})
    c = Controller(Catalog(demo=((0, 256, 1.0),)), settings, out_dir=tmp_path / "out")
    grind = ("```python\ndef execute_command(image):\n    n = 0\n    for i in range(49):\n"
             "        n += len(next_to(find('tree') + find(str(i) + ' grass'), find('road'),"
             " max_distance_m=12000.0))\n    return n\n```")
    forged = ("```python\ndef execute_command(image):\n"
              "    return area([{'__region__': 10 ** 40}] * 20000)\n```")
    benign = "```python\ndef execute_command(image):\n    return count('building')\n```"
    try:
        with FakeOpenAI(models=["m"]) as server:
            opts = Options(detector="spectral", planner="llm", llm_base_url=server.base_url,
                           llm_model="m", llm_api_key="sk-test")
            truth = c.ask(c.catalog.default_key, "How many buildings are there?", RULES)
            assert truth.ok, truth.message
            for i, reply in enumerate((grind, forged)):
                server.reply(reply)
                started = time.perf_counter()
                turn = c.ask(c.catalog.default_key, f"hostile question {i}", opts)
                assert time.perf_counter() - started <= 1.0 + 1.0 + 1.0  # limit + 1 s + app
                if i == 1:  # forged references: always refused
                    assert not turn.ok and turn.answer.error["type"] == "tool", turn.message
                elif not turn.ok:
                    assert turn.answer.error["type"] in ("timeout", "sandbox"), turn.message
                assert len(turn.answer.to_json()) < 8_000_000
            server.reply(benign)
            after = c.ask(c.catalog.default_key, "benign question", opts)
            assert after.ok and after.answer.value == truth.answer.value
    finally:
        c.close()


# ---------------------------------------------------------------------- issue 15
def test_choice_note_once_per_session(controller: Controller):
    key = controller.catalog.default_key
    auto = Options(detector="auto", planner="rules")
    first = controller.ask(key, "How many buildings are there?", auto)
    note = first.answer.notes[0]
    if not note.startswith("detector auto"):
        pytest.skip("weights found: auto picked a model without a choice note")
    assert first.message.count("<summary>Notes (") == 1
    assert "no CLIP weights" in first.message and "--clip-checkpoint" not in first.message
    assert "`" not in first.message and "<code>" in first.message
    second = controller.ask(key, "Is there a building?", auto)
    assert second.ok and "no CLIP weights" not in second.message
    assert note in second.answer.notes  # the answer itself keeps it (evidence, JSON)


def test_comparison_and_count_name_their_numbers(controller: Controller):
    key = controller.catalog.default_key
    turn = controller.ask(key, "Are there more small buildings than large buildings?", RULES)
    assert turn.ok and turn.answer.kind == "comparison", turn.message
    head = turn.message.splitlines()[0]
    small = sum(1 for r in turn.answer.regions if r.area_m2 < 100)
    assert head.startswith(f"{small} small building") and " vs " in head and "→ **" in head
    count = controller.ask(key, "How many buildings are there?", RULES)
    assert count.message.startswith(f"**{count.answer.value}** building")


@pytest.mark.parametrize("options, message", [
    (Options(min_region_m2=-5), "Smallest region (m2) must be 0 or more, got -5"),
    (Options(next_to_m=-1), "'next to' distance (m) must be 0 or more, got -1"),
    (Options(score_threshold=1.5), "Score threshold must be from 0 to 1, got 1.5"),
    (Options(small_max_m2=900, large_min_m2=500),
     "small &lt; (m2) must be less than large ≥ (m2), got 900 and 500"),
])
def test_out_of_range_settings_are_chat_messages(controller: Controller, options: Options,
                                                 message: str):
    turn = controller.ask(controller.catalog.default_key, "How many buildings are there?",
                          options)
    assert turn.answer is None and turn.message == f"Settings problem: {message}"


def test_single_band_raster_is_refused(controller: Controller, tmp_path: Path):
    path = _one_band_tif(tmp_path / "dsm.tif")
    # Said when it is loaded (issue 22: it read "Loaded" and was refused only when asked),
    # as the CLI refuses it when it opens it; it stays listed (another detector may read
    # it).
    for detector in ("spectral", "auto"):
        key, message = controller.load_upload(path, 1.0, detector)
        assert key is not None and "Ask a question about it" not in message, message
        assert "**The current detector cannot answer questions about it**: dsm.tif has 1 " \
               "band; the spectral detector needs red, green and blue bands" in message
    key, message = controller.load_upload(_rgb_png(tmp_path / "rgb.png"), 1.0, "spectral")
    assert "cannot answer" not in message and "Ask a question about it" in message
    key, _ = controller.load_upload(path, 1.0)
    turn = controller.ask(key, "How many buildings are there?", RULES, 1.0)
    assert turn.answer is not None and turn.answer.error["type"] == "image"
    assert "dsm.tif has 1 band; the spectral detector needs red, green and blue" in turn.message


def test_image_list_sorts_naturally(tmp_path: Path):
    root = tmp_path / "tiles"
    for i in (10, 2, 0, 1, 11):
        _rgb_png(root / f"tile_{i}.png", size=8)
    keys = [k for k in Catalog([root], demo=()).keys]
    assert keys == [f"tiles/tile_{i}.png" for i in (0, 1, 2, 10, 11)]


def test_gsd_not_needed_for_georeferenced_images(controller: Controller, tmp_path: Path):
    assert not controller.needs_gsd(controller.catalog.default_key)
    key, _ = controller.load_upload(_rgb_png(tmp_path / "plain.png"))
    assert controller.needs_gsd(key)


# ---------------------------------------------------------------------- answer map, session
def test_answer_comes_with_a_map_of_its_regions_in_class_colours(controller: Controller):
    from viper_rs.ui.answer_map import colour_for

    turn = controller.ask(controller.catalog.default_key,
                          "Is there a water area next to a road?", RULES)
    assert turn.ok and turn.rows
    assert turn.map_html.startswith("<iframe") and "viper-highlight" in turn.map_html
    assert "data:image/png;base64," in turn.map_html
    # The overlay's legend and the map use one colour per class.
    assert turn.colours and all(c == colour_for(label) for label, c in turn.colours.items())
    assert colour_for("water (2)") == colour_for("water area") == "#1f78b4"
    assert colour_for("trees") != colour_for("buildings") != colour_for("roads")


def test_map_data_simplifies_caps_and_places_regions(controller: Controller):
    from viper_rs.core.geo import GeoImage
    from viper_rs.ui.answer_map import map_data

    turn = controller.ask(controller.catalog.default_key, "How many buildings are there?",
                          RULES)
    image = controller.catalog.open(controller.catalog.default_key)
    data = map_data(image, turn.answer, turn.overlay[0])
    assert data["crs"] == "wgs84" and len(data["regions"]) == len(turn.rows)
    (s, w), (n, e) = data["bounds"]
    for r in data["regions"]:
        lats, lngs = r["rings"][0][0][0::2], r["rings"][0][0][1::2]
        assert s - 1e-6 <= min(lats) and max(lats) <= n + 1e-6
        assert w - 1e-6 <= min(lngs) and max(lngs) <= e + 1e-6
    capped = map_data(image, turn.answer, turn.overlay[0], max_polygons=1)
    assert len(capped["regions"]) == 1 and capped["omitted"] == len(turn.rows) - 1
    biggest = max(turn.answer.regions, key=lambda r: r.area_m2)
    assert capped["regions"][0]["id"] == biggest.id
    # Without a CRS: a flat map in metres from the GSD.
    import dataclasses

    from viper_rs.vision.components import mask_polygon

    flat = GeoImage.from_array(image.data, image.band_names, gsd=0.5)
    answer = dataclasses.replace(turn.answer, regions=[
        dataclasses.replace(r, polygon=mask_polygon(flat, r.crop, r.origin))
        for r in turn.answer.regions])
    flat_data = map_data(flat, answer, turn.overlay[0])
    assert flat_data["crs"] == "simple" and len(flat_data["regions"]) == len(turn.rows)
    top = image.height * 0.5
    assert flat_data["bounds"] == [[0.0, 0.0], [top, image.width * 0.5]]
    for r, region in zip(flat_data["regions"], answer.regions, strict=True):
        ys, xs = r["rings"][0][0][0::2], r["rings"][0][0][1::2]
        c0, r0, c1, r1 = region.bbox  # metres from the bottom-left corner
        assert min(xs) == pytest.approx(c0 * 0.5, abs=1) and max(xs) == pytest.approx(
            c1 * 0.5, abs=1)
        assert max(ys) == pytest.approx(top - r0 * 0.5, abs=1)


def test_export_session_writes_the_conversation_and_every_region(controller: Controller):
    import zipfile

    from tests.geojson_check import check_rfc7946

    key = controller.catalog.default_key
    turns = [controller.ask(key, q, RULES) for q in
             ("How many buildings are there?", "Write me a poem about the sea",
              "What is the area covered by trees?")]
    path = controller.export_session([t.record for t in turns])
    assert path.is_file() and path.suffix == ".zip"
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["regions.geojson", "session.json"]
        session = json.loads(z.read("session.json"))
        regions = json.loads(z.read("regions.geojson"))
    assert [t["question"] for t in session["turns"]] == [
        "How many buildings are there?", "Write me a poem about the sea",
        "What is the area covered by trees?"]
    first, failed, third = session["turns"]
    assert first["ok"] and "def execute_command" in first["program"] and first["answer"]
    assert not failed["ok"] and failed["error"]["type"] == "planning"
    assert isinstance(third["notes"], list) and third["reply"]
    n = len(turns[0].rows) + len(turns[2].rows)
    assert len(regions["features"]) == n
    assert {f["properties"]["turn"] for f in regions["features"]} == {1, 3}
    assert len({f["id"] for f in regions["features"]}) == n
    check_rfc7946(regions)
    # An empty conversation is a valid, empty export.
    with zipfile.ZipFile(controller.export_session([])) as z:
        assert json.loads(z.read("regions.geojson"))["features"] == []


# ---------------------------------------------------------------------- issue 22
def test_session_export_stores_plain_text_not_markup(controller: Controller):
    """session.json keeps what the chat said as plain text: "auto -> spectral", not the
    chat's HTML-escaped "auto -&gt; spectral" (escaping belongs to rendering only)."""
    from viper_rs.ui.session import session_documents

    key = controller.catalog.default_key
    turn = controller.ask(key, "How many buildings are there?",
                          Options(detector="auto", planner="rules"))
    if "auto -&gt;" not in turn.message:
        pytest.skip("weights found: auto picked a model without a choice note")
    hostile = controller.ask(key, "Is there a `pool` <b>near</b> the *road* & a_b?", RULES)
    session, _ = session_documents([turn.record, hostile.record])
    first, second = (t["reply"] for t in session["turns"])
    assert "detector auto -> spectral" in first and "python -m viper_rs weights" in first
    for reply in (first, second):
        for markup in ("&gt;", "&lt;", "&amp;", "&#96;", "\\", "<details>", "<summary>",
                       "<code>", "**"):
            assert markup not in reply, (markup, reply)
    assert f"'{session['turns'][1]['question']}'" in second  # quoted exactly as typed
