"""viper_rs.ui.evidence: overlay, region table, GeoJSON/GeoPackage export and chat reply."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from pyogrio.raw import read as read_vector
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom
from shapely import wkb
from shapely.geometry import LinearRing, box, shape

from tests.conftest import StaticDetector
from viper_rs.agent import Agent
from viper_rs.core.answer import Answer, RegionSet, ToolCall
from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.core.wording import readable
from viper_rs.synthetic import make_scene
from viper_rs.ui.evidence import (
    GPKG_FIELDS,
    OVERLAY_MAX_SIDE,
    REGION_COLUMNS,
    answer_markdown,
    evidence_geojson,
    note_markdown,
    overlay,
    region_rows,
    write_evidence,
)
from viper_rs.vision.oracle import OracleDetector

COMPARE = "Are there more buildings than roads?"


@pytest.fixture(scope="module")
def oracle_answers(tmp_path_factory):
    """Scene 0 (georeferenced, 384 px) and oracle answers keyed by question."""
    scene = make_scene(seed=0)
    settings = Settings.from_env(cache_dir=tmp_path_factory.mktemp("cache"))
    questions = [
        COMPARE,
        "How many buildings are there?",
        "Is there a helicopter?",
        "Is there a <img src=x onerror=alert(1)> **x**?",
    ]
    with Agent(settings, detector=OracleDetector(scene, settings), planner="rules") as agent:
        answers = {q: agent.ask(scene.image, q) for q in questions}
    return scene, answers


def _wgs84_bounds(image: GeoImage) -> tuple[float, float, float, float]:
    left, top = image.pixel_to_crs(0, 0)
    right, bottom = image.pixel_to_crs(image.width, image.height)
    return transform_bounds(image.crs, "EPSG:4326", left, bottom, right, top, densify_pts=21)


def _gsd_image(size: int = 100) -> GeoImage:
    rng = np.random.default_rng(1)
    return GeoImage.from_array(rng.integers(0, 255, (3, size, size), dtype=np.uint8), gsd=1.0)


def _static_answer(image: GeoImage, masks: dict[str, np.ndarray], question: str,
                   cache: Path) -> Answer:
    settings = Settings.from_env(cache_dir=cache)
    with Agent(settings, detector=StaticDetector(masks), planner="rules") as agent:
        return agent.ask(image, question)


# ---------------------------------------------------------------------------- overlay
def test_overlay_labels_and_full_size_masks(oracle_answers):
    scene, answers = oracle_answers
    ans = answers[COMPARE]
    assert ans.ok and ans.regions
    base, annotations = overlay(scene.image, ans)
    assert base.shape == (384, 384, 3) and base.dtype == np.uint8
    np.testing.assert_array_equal(base, scene.image.rgb_uint8())  # all pixels valid
    queries = list(dict.fromkeys(r.query for r in ans.regions))
    assert [label for _, label in annotations] == [
        f"{q} ({sum(r.query == q for r in ans.regions)})" for q in queries
    ]
    assert [label for _, label in annotations] == ["building (10)", "road (1)"]
    for (mask, _), q in zip(annotations, queries, strict=True):
        assert mask.shape == (384, 384) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        union = np.zeros((384, 384), bool)
        for r in ans.regions:
            if r.query == q:
                union |= r.mask
        np.testing.assert_array_equal(mask > 0, union)


def test_overlay_downscaled_keeps_every_region(oracle_answers):
    scene, answers = oracle_answers
    ans = answers[COMPARE]
    base, annotations = overlay(scene.image, ans, max_side=128)
    assert base.shape == (128, 128, 3)
    by_label = {label.split(" (")[0]: mask for mask, label in annotations}
    for r in ans.regions:
        small = np.zeros((128, 128), bool)
        c0, r0, c1, r1 = r.bbox
        small[r0 * 128 // 384 : (r1 - 1) * 128 // 384 + 1,
              c0 * 128 // 384 : (c1 - 1) * 128 // 384 + 1] = True
        assert (by_label[r.query] > 0)[small].any(), r.id
    # box average of the full picture
    full = scene.image.rgb_uint8().astype(np.float64)
    expected = full.reshape(128, 3, 128, 3, 3).mean(axis=(1, 3))
    assert np.abs(base - expected).max() <= 1.0


def test_overlay_non_square_nodata_and_no_answer():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 300, 1000), dtype=np.uint8)
    valid = np.ones((300, 1000), bool)
    valid[:, :100] = False
    image = GeoImage.from_array(data, valid=valid)
    base, annotations = overlay(image, None, max_side=500)
    assert base.shape == (150, 500, 3) and annotations == []
    assert (base[:, :50] == 64).all()  # nodata shown dark grey
    empty = Answer(question="q", answer="no", value=False, kind="presence")
    assert overlay(image, empty, max_side=500)[1] == []


def test_overlay_huge_image_is_bounded(tmp_path):
    h, w = 4000, 3000
    data = np.full((3, h, w), 120, dtype=np.uint8)
    image = GeoImage.from_array(data, gsd=0.5)
    regions = []
    for i, (r0, c0, r1, c1, q) in enumerate([
        (100, 100, 900, 700, "building"), (2000, 2500, 2001, 2501, "building"),
        (0, 1400, 4000, 1420, "road"),
    ]):
        m = np.zeros((h, w), bool)
        m[r0:r1, c0:c1] = True
        regions.append(Region.from_mask(m, label=q, query=q, score=0.9, area_m2=m.sum() * 0.25,
                                        id=i))
    ans = Answer(question="How many buildings are there?", answer="2", value=2, kind="count",
                 regions=regions)
    tracemalloc.start()
    t0 = time.perf_counter()
    base, annotations = overlay(image, ans)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert max(base.shape[:2]) == OVERLAY_MAX_SIDE and base.shape == (1024, 768, 3)
    assert (base == 120).all()
    assert [label for _, label in annotations] == ["building (2)", "road (1)"]
    building = annotations[0][0]
    assert building[2000 * 1024 // 4000, 2500 * 768 // 3000] == 1.0  # one-pixel region kept
    assert peak < 80 * 2**20, f"overlay peaked at {peak / 2**20:.0f} MiB"
    assert elapsed < 5


# ---------------------------------------------------------------------------- table
def test_region_rows_georeferenced(oracle_answers):
    scene, answers = oracle_answers
    ans = answers[COMPARE]
    rows = region_rows(scene.image, ans)
    assert len(rows) == len(ans.regions)
    west, south, east, north = _wgs84_bounds(scene.image)
    for row, r in zip(rows, ans.regions, strict=True):
        d = dict(zip(REGION_COLUMNS, row, strict=True))
        assert d["id"] == r.id and d["query"] == r.query and d["label"] == r.label
        assert d["area"] == round(r.area_m2, 1) and d["unit"] == "m2"
        assert west <= d["lon"] <= east and south <= d["lat"] <= north
        assert (d["col"], d["row"]) == (round(r.centroid[0], 1), round(r.centroid[1], 1))
    assert region_rows(scene.image, None) == []
    json.dumps(rows)


def test_region_rows_without_crs(tmp_path, scene_masks):
    image = _gsd_image()
    ans = _static_answer(image, scene_masks, "How many buildings are there?", tmp_path)
    assert ans.ok and ans.value == 3
    rows = region_rows(image, ans)
    assert len(rows) == 3
    assert all(row[REGION_COLUMNS.index("lon")] is None for row in rows)
    assert sorted(row[REGION_COLUMNS.index("area")] for row in rows) == [25.0, 100.0, 600.0]


# ---------------------------------------------------------------------------- GeoJSON
def test_evidence_geojson_wgs84_ccw(oracle_answers):
    scene, answers = oracle_answers
    ans = answers[COMPARE]
    fc = evidence_geojson(scene.image, ans)
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    assert len(fc["features"]) == sum(r.polygon is not None for r in ans.regions)
    west, south, east, north = _wgs84_bounds(scene.image)
    eps = 1e-6
    for f, r in zip(fc["features"], ans.regions, strict=True):
        geom = shape(f["geometry"])
        polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
        for p in polys:
            assert LinearRing(p.exterior.coords).is_ccw
            for lon, lat in p.exterior.coords:
                assert -180 <= lon <= 180 and -90 <= lat <= 90
                assert west - eps <= lon <= east + eps and south - eps <= lat <= north + eps
                assert lon == round(lon, 7)
        back = shape(transform_geom("EPSG:4326", scene.image.crs, f["geometry"]))
        # 7 decimals of a degree move a vertex by about a centimetre
        assert back.area == pytest.approx(r.polygon.area, abs=0.01 * r.polygon.length)
        props = f["properties"]
        assert props["id"] == r.id and props["query"] == r.query
        assert props["question"] == COMPARE and props["answer"] == ans.answer
    b = fc["bbox"]
    assert west - eps <= b[0] <= b[2] <= east + eps and south - eps <= b[1] <= b[3] <= north + eps
    json.loads(json.dumps(fc))


def test_evidence_geojson_needs_crs(tmp_path, scene_masks):
    image = _gsd_image()
    ans = _static_answer(image, scene_masks, "How many buildings are there?", tmp_path)
    with pytest.raises(InputError, match="coordinate reference system"):
        evidence_geojson(image, ans)


# ---------------------------------------------------------------------------- files
def test_write_evidence_georeferenced(oracle_answers, tmp_path):
    scene, answers = oracle_answers
    ans = answers[COMPARE]
    paths = write_evidence(scene.image, ans, tmp_path / "out")
    assert [p.name for p in paths] == ["evidence.geojson", "evidence.gpkg", "answer.json"]
    assert all(p.is_file() for p in paths)
    n = sum(r.polygon is not None for r in ans.regions)
    assert len(json.loads(paths[0].read_text())["features"]) == n
    info = pyogrio.read_info(paths[1], layer="regions")
    assert info["features"] == n and info["geometry_type"] == "MultiPolygon"
    assert CRS.from_user_input(info["crs"]) == scene.image.crs
    assert list(info["fields"]) == GPKG_FIELDS
    meta, _, geometry, fields = read_vector(paths[1], layer="regions")
    area = fields[list(meta["fields"]).index("area")]
    np.testing.assert_allclose(area, [r.area_m2 for r in ans.regions])
    first = wkb.loads(geometry[0])
    assert first.geom_type == "MultiPolygon"
    assert abs(first.area - ans.regions[0].polygon.area) < 1e-6
    data = json.loads(paths[2].read_text())
    assert data["answer"] == ans.answer and "geometry" in data["regions"][0]
    # writing again replaces the files
    assert write_evidence(scene.image, ans, tmp_path / "out") == paths
    assert pyogrio.read_info(paths[1], layer="regions")["features"] == n


def test_write_evidence_without_crs(tmp_path, scene_masks):
    image = _gsd_image()
    ans = _static_answer(image, scene_masks, "How many buildings are there?", tmp_path / "c")
    paths = write_evidence(image, ans, tmp_path / "out")
    assert [p.name for p in paths] == ["evidence.gpkg", "answer.json"]
    assert not (tmp_path / "out" / "evidence.geojson").exists()
    info = pyogrio.read_info(paths[0], layer="regions")
    assert info["features"] == 3 and info["crs"] is None
    _, _, geometry, _ = read_vector(paths[0], layer="regions")
    bounds = box(0, -100, 100, 0)  # local metres: x right, y up from the top-left corner
    assert all(bounds.covers(wkb.loads(g)) for g in geometry)


def test_write_evidence_zero_regions(oracle_answers, tmp_path):
    scene, _ = oracle_answers
    ans = Answer(question="Is there a pond?", answer="no", value=False, kind="presence")
    paths = write_evidence(scene.image, ans, tmp_path / "empty")
    assert [p.name for p in paths] == ["evidence.geojson", "evidence.gpkg", "answer.json"]
    assert json.loads(paths[0].read_text()) == {"type": "FeatureCollection", "features": []}
    info = pyogrio.read_info(paths[1], layer="regions")
    assert info["features"] == 0 and CRS.from_user_input(info["crs"]) == scene.image.crs
    assert json.loads(paths[2].read_text())["regions"] == []


# ---------------------------------------------------------------------------- reply
def test_answer_markdown_ok(oracle_answers):
    _, answers = oracle_answers
    ans = answers["How many buildings are there?"]
    md = answer_markdown(ans)
    assert md.startswith("**10**")
    assert md.startswith("**10** buildings")  # the count names what it counted
    assert "10 regions: 10 building" in md and "oracle" in md and "rules" in md
    assert md.count("\n- ") == len(ans.notes)
    assert md.count("<details>") == 1 and f"<summary>Notes ({len(ans.notes)})</summary>" in md
    area = Answer(question="q", answer="1234.5 m2", value=1234.5, kind="area",
                  notes=[f"note {i} " + "x" * 500 for i in range(8)])
    md = answer_markdown(area)
    assert md.startswith("**1234.5 m2**") and "0 regions" in md
    bullets = [line for line in md.splitlines() if line.startswith("- ")]
    assert len(bullets) == 8 and "… and 3 more</summary>" in md and "Notes (8)" in md
    assert all("x" * 500 in b for b in bullets)  # every note whole (issue 22)


def test_answer_markdown_errors(oracle_answers):
    _, answers = oracle_answers
    planning = answer_markdown(answers["Is there a <img src=x onerror=alert(1)> **x**?"])
    assert planning.startswith("Could not answer:")
    assert "How many … are there?" in planning and "Is there a …?" in planning
    assert "<img" not in planning and "&lt;img" in planning and "**x**" not in planning
    tool = answer_markdown(answers["Is there a helicopter?"])
    assert tool.startswith("Could not answer:") and "helicopter" in tool and "concept" in tool
    other = Answer(question="q", answer="", value=None, kind="other",
                   error={"type": "sandbox", "message": "boom `rm` <script>x</script> & *y*"})
    md = answer_markdown(other)
    assert md.startswith("Could not answer: boom")
    for bad in ("<script", "`", "*y*"):
        assert bad not in md
    assert "&amp;" in md


def _call(tool: str, *args: object, result: object) -> ToolCall:
    """A tool call as the executor records it (kinds from the registry)."""
    from viper_rs.tools import REGISTRY

    declared = REGISTRY[tool]
    return ToolCall(tool, declared.kinds, declared.describes, tuple(args), result=result)


def _traced(kind: str, value: object, calls: list[ToolCall]) -> Answer:
    text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
    return Answer(question="q", answer=text, value=value, kind=kind, calls=calls)


def _set(*ids: int) -> RegionSet:
    return RegionSet(ids)


def test_answers_show_their_numbers():
    small, large, every = _set(3, 5, 6, 9), _set(0, 1, 2, 4), _set(*range(10))
    comparison = _traced("comparison", False, [
        _call("find", "building", result=every),
        _call("filter_size", every, "small", result=small),
        _call("filter_size", every, "large", result=large),
        _call("compare", small, large, "more", result=False),
    ])
    assert readable(comparison) == "4 small buildings vs 4 large buildings → no"
    md = answer_markdown(comparison)
    assert md.startswith("4 small buildings vs 4 large buildings → **no**")
    assert comparison.value is False and comparison.kind == "comparison"
    count = _traced("count", 3, [_call("find", "water area", result=_set(1, 2, 3)),
                                 _call("count", _set(1, 2, 3), result=3)])
    assert answer_markdown(count).startswith("**3** water areas")
    one = _traced("count", 1, [_call("find", "tree", result=_set(7)),
                               _call("count", _set(7), result=1)])
    assert readable(one) == "1 tree"
    near = _traced("presence", False, [
        _call("find", "water area", result=_set(0)),
        _call("find", "road", result=_set(1, 2)),
        _call("next_to", _set(0), _set(1, 2), result=_set()),
        _call("exists", _set(), result=False),
    ])
    assert readable(near) == "no (0 water areas next to roads)"
    area = Answer(question="q", answer="12.0 m2", value=12.0, kind="area",
                  calls=[_call("area", "tree", result=12.0)])
    assert readable(area) == "12.0 m2 of trees"
    # A program whose return is not the last tool call's result reads as before.
    other = _traced("count", 4, [_call("count", "building", result=3)])
    assert readable(other) == "4"
    # A failed last call, or a trace without calls as data, names nothing.
    failed = _traced("count", 3, [_call("find", "tree", result=_set(1, 2, 3)),
                                  ToolCall("count", ("count", "other"), None, (_set(1, 2, 3),),
                                           failed=True)])
    assert readable(failed) == "3"


def test_wording_reads_whole_region_lists():
    """The labels come from the calls' whole id lists: two lists of 13 regions that share
    their first 12 ids are told apart (the trace lists 12 ids per list, and reading the
    answer from it gave both lists the label of the later call)."""
    every = _set(*range(30))
    small, near = _set(*range(12), 20), _set(*range(12), 25)
    answer = _traced("comparison", False, [
        _call("find", "building", result=every),
        _call("filter_size", every, "small", result=small),
        _call("find", "road", result=_set(40, 41)),
        _call("next_to", every, _set(40, 41), result=near),
        _call("compare", small, near, "more", result=False),
    ])
    assert readable(answer) == "13 small buildings vs 13 buildings next to roads → no"


def test_notes_are_one_details_block_with_code_spans():
    ans = Answer(question="q", answer="yes", value=True, kind="presence", notes=[
        "detector auto -> spectral: no CLIP weights; run `python -m viper_rs weights "
        "--download clip` or pass --clip-checkpoint", "subject: *water*"])
    md = answer_markdown(ans, hide={"subject: *water*"})
    assert md.count("<details>") == 1 and "Notes (1)" in md and "water" not in md
    assert "<code>python -m viper_rs weights --download clip</code>" in md
    assert "`" not in md and "&#96;" not in md
    assert note_markdown("a `<b>` and *c*") == "a <code>&lt;b&gt;</code> and \\*c\\*"


@pytest.mark.parametrize("text", [
    "auto -> spectral", "a `pool` <b>near</b> the *road* & a_b", r"back\slash [x](y) ~z~ |t|",
    "&amp; &#96; &lt;", "**bold** _it_ `code`"])
def test_plain_text_undoes_the_chat_markup(text):
    from viper_rs.ui.evidence import escape_markdown, plain_text

    assert plain_text(escape_markdown(text)) == text
    if "`" not in text:
        assert plain_text(note_markdown(f"run `{text}` now")) == f"run {text} now"
    ans = Answer(question="q", answer="yes", value=True, kind="presence", detector=text,
                 notes=[text, "`python -m viper_rs weights --download clip`"])
    plain = plain_text(answer_markdown(ans))
    assert plain.startswith("yes\n") and f"detector {text}" in plain
    # In notes, `code` spans are markup: their text stays, the backticks go.
    assert f"- {text if '`' not in text else text.replace('`', '')}\n" in plain
    assert "- python -m viper_rs weights --download clip" in plain


def test_every_note_is_reachable_in_a_nested_block():
    from viper_rs.core.answer_json import MAX_NOTES
    from viper_rs.ui.evidence import plain_text

    notes = [f"note {i} `code {i}`" for i in range(8)]
    md = answer_markdown(Answer(question="q", answer="yes", value=True, kind="presence",
                                notes=notes))
    # One collapsed block with the first five; the other three one click further.
    assert md.count("<details>") == 2 and md.count("</details>") == 2
    assert "<summary>Notes (8)</summary>" in md and "<summary>… and 3 more</summary>" in md
    assert md.index("note 4 ") < md.index("… and 3 more") < md.index("note 5 ")
    plain = plain_text(md)
    assert all(f"- note {i} code {i}" in plain for i in range(8)), plain
    # A long note is not cut at a few hundred characters (auto's reason is ~500).
    long = "detector auto -> spectral " + "x" * 600
    assert "x" * 600 in answer_markdown(Answer(question="q", answer="yes", value=True,
                                               kind="presence", notes=[long]))
    # Past what an answer lists, the chat says how many are left out.
    many = answer_markdown(Answer(question="q", answer="yes", value=True, kind="presence",
                                  notes=[f"n{i}" for i in range(MAX_NOTES + 7)]))
    assert f"- n{MAX_NOTES - 1}\n" in many and f"- n{MAX_NOTES}\n" not in many
    assert f"7 more notes are not listed (an answer lists its first {MAX_NOTES})" in many
