"""``python -m eval.buildings``: the metrics on hand-made numbers, and the harness on a few
real labelled tiles with the spectral detector and a tiny random-init BuildingNet (the fold
training monkeypatched, so the test trains nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval import buildings as eb
from eval import buildings_folds as folds
from eval.buildings_metrics import (
    PAN_GROUP,
    RGB_GROUP,
    TileAnswer,
    goal_checks,
    mask_iou,
    rel_error,
    score_tile,
    summarize,
    within,
)
from eval.buildings_report import markdown_report, print_report


@pytest.fixture
def labeled(shared_data):
    root = shared_data / "labeled"
    if not (root / "oam_osm_buildings").is_dir():
        pytest.skip(f"labelled tiles {root} are absent (they sit beside the clone in CI)")
    return root


def test_within_rule():
    # |err| <= max(2, 0.2 * truth)
    assert within(0, 2) and within(4, 2) and not within(5, 2) and not within(0, 3)
    assert within(12, 10) and not within(13, 10)  # 0.2 * 10 = 2
    assert within(80, 100) and within(120, 100) and not within(79, 100) and not within(121, 100)
    assert within(0, 0) and within(2, 0) and not within(3, 0)


def test_rel_error_and_iou():
    assert rel_error(150.0, 100.0) == 0.5 and rel_error(0.0, 40.0) == 1.0
    assert rel_error(5.0, 0.0) is None
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, 10 shared
    iou, inter, union = mask_iou(a, b)
    assert (inter, union) == (10, 30) and iou == pytest.approx(1 / 3)
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == (None, 0, 0)


def test_score_tile_and_summary_by_hand():
    truth = np.zeros((4, 4), bool)
    truth[:2] = True  # 8 px
    pred = np.zeros((4, 4), bool)
    pred[1:3] = True  # 8 px, 4 shared
    rows = [
        score_tile(10, 200.0, truth, TileAnswer(12, 260.0, True, mask=pred)),  # within, +30%
        score_tile(10, 200.0, truth, TileAnswer(13, 100.0, True)),  # outside, -50%, no mask
        score_tile(0, 0.0, None, TileAnswer(1, 30.0, True)),  # empty tile, presence wrong
        score_tile(5, 50.0, None, TileAnswer(errors={"count": "image: 1 band",
                                                     "area": "x", "presence": "x"})),
    ]
    r0 = rows[0]
    assert r0["count_err"] == 2 and r0["count_within"] and not r0["count_exact"]
    assert r0["area_rel_err"] == pytest.approx(0.3) and r0["presence_correct"]
    assert r0["iou"] == pytest.approx(4 / 12) and (r0["inter_px"], r0["union_px"]) == (4, 12)
    assert rows[1]["iou"] == 0.0 and rows[1]["union_px"] == 8  # no regions: empty prediction
    assert rows[2]["area_rel_err"] is None and not rows[2]["presence_correct"]
    err = rows[3]  # an error is wrong, and 0 in the errors
    assert err["count_err"] == -5 and not err["count_within"] and not err["presence_correct"]
    assert err["area_rel_err"] == 1.0 and err["pred_count"] is None
    s = summarize(rows)
    assert s["n"] == 4 and s["errors"] == 1
    assert s["count_within"] == 0.5 and s["count_exact"] == 0.0  # rows 0 and 2 (1 vs 0)
    assert s["count_mae"] == pytest.approx((2 + 3 + 1 + 5) / 4)
    assert s["area_n"] == 3  # the empty tile has no relative error
    assert s["area_median_rel_err"] == pytest.approx(0.5)  # median of 0.3, 0.5, 1.0
    assert s["area_mean_rel_err"] == pytest.approx(0.6)
    assert s["presence"] == 0.5
    assert s["iou_mean"] == pytest.approx((1 / 3 + 0.0) / 2)
    assert s["iou_pooled"] == pytest.approx(4 / 20)
    assert s["empty_tiles"] == 1 and s["empty_pred_area_m2"] == 30.0


def test_presence_falls_back_to_count():
    r = score_tile(3, 10.0, None, TileAnswer(count=2, errors={"presence": "x"}))
    assert r["pred_exists"] is True and r["presence_correct"]


def test_fold_config_copies_the_recipe_but_not_the_data_selection(tmp_path):
    pytest.importorskip("torch")
    recipe = {"steps": 700, "batch": 6, "crop_px": 128, "places": ["kampala_ug"],
              "exclude_places": [], "val_fraction": 0.2, "data": "/elsewhere",
              "scales_m": [0.3, 0.5], "unknown_key": 1}
    cfg = folds.fold_config(tmp_path, "kavre_np", None, None, recipe)
    assert (cfg.steps, cfg.batch, cfg.crop_px, cfg.scales_m) == (700, 6, 128, (0.3, 0.5))
    assert cfg.exclude_places == ("kavre_np",) and cfg.places is None
    assert cfg.val_fraction == 0.0 and cfg.data == tmp_path and cfg.out is None
    short = folds.fold_config(tmp_path, "kavre_np", 5, 3, recipe)
    assert (short.steps, short.seed) == (5, 3)
    assert folds.fold_key(cfg) != folds.fold_key(short)
    assert folds.fold_key(cfg) == folds.fold_key(folds.fold_config(tmp_path, "kavre_np", None, None, recipe))
    assert folds.fold_key(cfg) != folds.fold_key(folds.fold_config(tmp_path, "kampala_ug", None, None,
                                                          recipe))


def test_goal_checks():
    s = {"spectral": {RGB_GROUP: {"n": 3, "count_within": 0.6, "area_median_rel_err": 0.31,
                                     "presence": 0.96}}}
    g = goal_checks(s)["spectral"]
    assert g["within"]["pass"] and not g["area_median_rel_err"]["pass"] and g["presence"]["pass"]


def test_building_questions():
    assert eb.is_building_question("How many residential buildings are there?")
    assert eb.is_building_question("Is there a house?")
    assert eb.is_building_question("What is the area covered by commercial areas?")
    assert not eb.is_building_question("Is there a road next to a water area?")


def test_harness_on_real_tiles(labeled, monkeypatch, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from viper_rs.vision.buildings.model import BuildingNet, BuildingNetConfig

    tiles = eb.find_tiles(labeled, ["zanzibar_tz", "nairobi_ke"], limit=1)
    assert [t.place for t in tiles] == ["nairobi_ke", "zanzibar_tz"]
    assert all(t.truth["building_count"] >= 0 for t in tiles)

    def tiny() -> BuildingNet:
        torch.manual_seed(0)
        return BuildingNet(BuildingNetConfig(widths=(4, 8))).eval()

    trained: list[tuple] = []

    def fake_fold(root, place, steps, seed, cache, progress=True, recipe=None):
        trained.append((place, steps, seed))
        return tiny(), {"path": f"tiny-{place}", "held_out": place}

    monkeypatch.setattr(eb, "train_fold", fake_fold)
    monkeypatch.setattr(eb, "load_shipped", lambda: (tiny(), {"path": "tiny"}))
    monkeypatch.setattr(eb, "shipped_recipe", lambda: {"steps": 900, "batch": 8})
    res = eb.evaluate(labeled, ["spectral", "learned", "lopo"], ["zanzibar_tz", "nairobi_ke"],
                      limit=1, steps=2, seed=5, cache=tmp_path, quiet=True)
    assert sorted(trained) == [("nairobi_ke", 2, 5), ("zanzibar_tz", 2, 5)]
    assert set(res["summary"]) == {"spectral", "learned", "lopo"}
    for det, rows in res["tiles"].items():
        assert [r["tile"] for r in rows] == [t.name for t in tiles], det
        for r, t in zip(rows, tiles, strict=True):
            assert r["truth_count"] == t.truth["building_count"]
            assert not r["errors"], (det, r["errors"])  # RGB tiles are answered
            assert isinstance(r["pred_count"], int) and r["iou"] is not None
            # the recorded figures follow the rules from the recorded answer
            assert r["count_within"] == within(r["pred_count"], r["truth_count"])
            if r["truth_area_m2"]:
                assert r["area_rel_err"] == pytest.approx(
                    abs(r["pred_area_m2"] - r["truth_area_m2"]) / r["truth_area_m2"], abs=1e-3)
        s = res["summary"][det][RGB_GROUP]
        assert s["n"] == 2 and s["count_within"] == sum(r["count_within"] for r in rows) / 2
    assert res["tiles"]["learned"][0]["detector"].startswith("buildingnet")
    assert res["tiles"]["spectral"][0]["detector"] == "spectral"
    assert set(res["goals"]) == {"spectral", "learned", "lopo"}
    json.dumps(res)  # plain data
    print_report(res, per_tile=True)
    out = capsys.readouterr().out
    assert "leave-one-place-out" in out and "IN-SAMPLE" in out and RGB_GROUP in out
    md = markdown_report(res)
    assert "| spectral | 2 |" in md and "| learned (leave-one-place-out) | 2 |" in md


def test_single_band_tile_is_a_counted_error(labeled, monkeypatch, tmp_path):
    if not (labeled / "spacenet4_atlanta_pan").is_dir():
        pytest.skip("the single-band Atlanta tiles are absent")
    res = eb.evaluate(labeled, ["spectral"], ["atlanta"], limit=1, cache=tmp_path, quiet=True)
    (row,) = res["tiles"]["spectral"]
    assert row["group"] == PAN_GROUP and row["errors"]
    assert not row["count_within"] and not row["presence_correct"]
    assert res["summary"]["spectral"][PAN_GROUP]["errors"] == 1
    assert "spectral" not in res["goals"]  # the goals are on RGB tiles


def test_cli_json(labeled, capsys, tmp_path):
    assert eb.main(["--data", str(labeled), "--detectors", "spectral", "--places", "kavre_np",
                    "--limit", "1", "--rsvqa", "0", "--cache", str(tmp_path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["summary"]["spectral"][RGB_GROUP]["n"] == 1
    assert "all zero" in res["baselines"]
