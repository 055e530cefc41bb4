"""``python -m eval.buildings_postproc``: the nested choice of post-processing on hand-made
out-of-fold probabilities (no model, no data); ``python -m eval.bench_buildings`` on small
synthetic tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.buildings import Tile
from eval.buildings_postproc import OutOfFold, choose, figures


def _oof(place: str, i: int, n_true: int, edge: float) -> OutOfFold:
    """A 60 x 60 px tile at 1 m2 per pixel with ``n_true`` 8 x 8 m roofs: a confident
    4 x 4 core and a ring whose building probability is ``edge``."""
    probs = np.zeros((3, 60, 60), np.float32)
    probs[0] = 1.0
    truth = np.zeros((60, 60), bool)
    for k in range(n_true):
        y, x = 4 + 14 * (k // 4), 4 + 14 * (k % 4)
        probs[:, y:y + 8, x:x + 8] = np.array([1 - edge, edge, 0.0])[:, None, None]
        probs[:, y + 2:y + 6, x + 2:x + 6] = np.array([0.05, 0.95, 0.0])[:, None, None]
        truth[y:y + 8, x:x + 8] = True
    tile = Tile(f"{place}_{i}", place, Path("x.tif"), Path("x_buildings.tif"),
                {"building_count": n_true, "building_area_m2": 64.0 * n_true,
                 "tile_area_m2": 3600.0})
    return OutOfFold(tile, probs, truth, 1.0)


def test_figures_by_hand():
    a, b = _oof("p", 0, 4, 0.9), _oof("p", 1, 0, 0.9)
    f = figures([(a, 4, 256.0), (b, 3, 20.0)])
    assert f["count_within"] == 0.5 and f["area_median_rel_error"] == 0.0
    assert f["presence"] == 0.5 and f["count_mae"] == 1.5


def test_nested_choice_never_sees_the_place_it_scores():
    # places a and b have faint roof edges (0.42): growing over p >= 0.4 recovers them.
    # Place c's edges are fainter still (0.22): only its own tiles could ask for 0.2, and
    # they are not asked when c is scored.
    oofs = ([_oof("a", i, 4 + i, 0.42) for i in range(3)]
            + [_oof("b", i, 5, 0.42) for i in range(2)] + [_oof("c", 0, 6, 0.22)])
    res = choose(oofs, quiet=True)
    assert res["candidates"]["None"]["area_median_rel_error"] == 0.75  # 4x4 of 8x8
    assert res["chosen"] == 0.4
    per = res["nested_per_place"]
    assert per["a"]["chosen_on_others"] == 0.4 and per["a"]["area_median_rel_error"] == 0.0
    assert per["c"]["chosen_on_others"] == 0.4 and per["c"]["area_median_rel_error"] == 0.75
    # growth adds no building: every candidate counts the same
    assert {f["count_within"] for f in res["candidates"].values()} == {1.0}
    assert res["nested"]["tiles"] == 6


def test_bench_buildings_times_each_resolution():
    from eval.bench_buildings import run

    rows = run(gsds=(0.3, 0.6), size=128, rounds=1)
    assert [r["gsd_m"] for r in rows] == [0.3, 0.6]
    assert rows[0]["model_px"] == [128, 128] and rows[1]["model_px"] == [256, 256]
    assert all(r["cold_s"] > 0 and r["cached_ms"] < 1000 * r["cold_s"] for r in rows)
