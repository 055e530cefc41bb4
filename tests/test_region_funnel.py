"""Retrieval first, then verify (issue 16, point 4), and "where" answers (places).

A spectral chip index over the synthetic mosaic of tests/test_region.py picks the chips a
region question analyses; the objects found there must be the full scan's objects of that
area. Programs returning regions are answered with their places, largest first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_region import big_scene, cut, region_detector
from viper_rs.agent import Agent
from viper_rs.agent.loop import program_queries as program_concepts
from viper_rs.agent.places import MAX_PLACES, rank_places
from viper_rs.core.config import Settings
from viper_rs.core.raster_write import write_geotiff
from viper_rs.index import ChipGrid, build_index
from viper_rs.region import RegionOptions, ask_region, open_region
from viper_rs.region.oracle import MosaicOracle
from viper_rs.synthetic import WATER

CHIP_M = 64.0  # 12 x 12 region chips over the 768 m mosaic
TOP = 2


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    return cut(big_scene(), tmp_path_factory.mktemp("fmosaic"))


@pytest.fixture(scope="module")
def index(mosaic, tmp_path_factory):
    out = tmp_path_factory.mktemp("fix") / "index"
    build_index([mosaic[0].parent], out, embedder="spectral", grid=ChipGrid(chip_m=96, overlap=0.25),
                progress=False, overlays=False, settings=Settings(building_model=False))
    return out


@pytest.fixture(scope="module")
def agent():
    a = Agent(settings=Settings(), detector=MosaicOracle(big_scene()), planner="rules")
    yield a
    a.close()


def ask(image, question, agent, **kw):
    return ask_region(image, question,
                      RegionOptions(chip_m=CHIP_M, halo_m=0.0, detector=MosaicOracle(big_scene()),
                                    **kw), agent=agent)


def test_program_concepts() -> None:
    prog = ('def execute_command(image):\n    a = find("large building")\n'
            '    b = find("water area")\n    return compare(a, "road", "more") or exists("water area")\n')
    assert program_concepts(prog) == ["building", "water area", "road"]
    assert program_concepts("not python (") == []


def test_top_restricts_the_chips_and_says_so(mosaic, index, agent) -> None:
    image = open_region(mosaic)
    answer, report = ask(image, "How many water areas are there?", agent, index=index, top=TOP)
    status = [c["status"] for c in report.chips]
    assert len(status) == 144
    ok = status.count("ok")
    assert 0 < ok <= TOP * 9 * 4 and ok < len(status) / 2
    skipped = [c for c in report.chips if c.get("reason") == f"not in the top {TOP} of the index"]
    assert len(skipped) == len(status) - ok
    cov = report.coverage
    assert cov["partial"] is True and 0 < cov["share"] < 0.5
    assert cov["funnel"]["concepts"] == ["water area"] and cov["funnel"]["selected_chips"] == ok
    note = next(n for n in answer.notes if n.startswith("partial scan:"))
    assert f"{ok} of 144 chips (the index's top {TOP} for 'water area' and their neighbours)" in note
    assert "% of the area" in note
    assert answer.error is None and isinstance(answer.value, int) and answer.value >= 1


def test_the_budget_checks_the_partial_scan(mosaic, index, agent) -> None:
    """Issue 22: a question over its time budget as a full scan is refused; with the index
    (the refusal's way out) the budget is checked on the partial scan's estimate, which
    fits, and the report's estimate counts only the chips the index chose."""
    from viper_rs.core.cost import Budget
    from viper_rs.region import RegionTooLarge, estimate_region

    image = open_region(mosaic)
    q = "How many water areas are there?"
    full = estimate_region(image, MosaicOracle(big_scene()), chip_m=CHIP_M, halo_m=0.0,
                           concepts=["water area"])
    budget = Budget(memory_bytes=full.memory_bytes,
                    seconds=full.seconds - 0.4 * full.seconds_parts["scan"])
    with pytest.raises(RegionTooLarge) as info:
        ask(image, q, agent, budget=budget)
    assert "--index PATH --top K" in str(info.value)
    answer, report = ask(image, q, agent, index=index, top=TOP, budget=budget)
    assert answer.error is None and report.coverage["partial"] is True
    assert report.estimate["chips"] == report.coverage["funnel"]["selected_chips"] < full.chips
    assert report.estimate["seconds"] <= budget.seconds


def test_partial_objects_equal_the_full_scan_in_that_area(mosaic, index, agent) -> None:
    """Oracle: every full-scan object touching an index-chosen chip lies in the analysed
    chips (objects are smaller than a chip) and is found whole; nothing else appears that
    the full scan does not hold the same way."""
    image = open_region(mosaic)
    full = {r.extra["instance"]: r for r in region_detector(image, CHIP_M).find(image, "water")}
    answer, report = ask(image, 'How many water areas are there?', agent, index=index, top=TOP)
    core = {c.id: c for c in _layout(image)}
    top_ids = report.coverage["funnel"]["top_chips"]
    ok_ids = [c["id"] for c in report.chips if c["status"] == "ok"]
    top_mask, ok_mask = _cores(image, [core[i] for i in top_ids]), _cores(image, [core[i] for i in ok_ids])
    partial = {r.extra["instance"]: r for r in answer.regions}
    # Objects whose masks lie inside the analysed chips: the same, mask for mask.
    inside = {k for k, r in full.items() if not (r.mask & ~ok_mask).any()}
    assert inside and inside <= set(partial)
    for k in inside:
        assert np.array_equal(partial[k].mask, full[k].mask)
        assert partial[k].area_m2 == pytest.approx(full[k].area_m2, rel=1e-9)
    # Objects meeting the index's chips that fit in 3 x 3 chips are whole (neighbours).
    small = {k for k, r in full.items() if (r.mask & top_mask).any()
             and max(r.crop.shape) <= CHIP_M}
    assert small <= inside
    # Nothing is found outside the analysed chips; cut objects are the full ones' parts.
    for k, r in partial.items():
        assert not (r.mask & ~ok_mask).any()
        assert np.array_equal(r.mask, full[k].mask & ok_mask)
    assert answer.value == len(partial)


def _layout(image):
    from viper_rs.region.chips import layout

    return layout(image, CHIP_M, 0.0)


def _cores(image, chips) -> np.ndarray:
    m = np.zeros(image.shape, dtype=bool)
    for c in chips:
        r0, c0, r1, c1 = c.core
        m[r0:r1, c0:c1] = True
    return m


def test_cli_index_top(mosaic, index, capsys) -> None:
    from viper_rs.cli import main

    code = main(["region", *map(str, mosaic), "-q", "Is there a water area?", "--detector", "spectral",
                 "--planner", "rules", "--chip-m", "96", "--index", str(index), "--top", "1",
                 "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    ok = sum(c["status"] == "ok" for c in out["chips"])
    assert 0 < ok < len(out["chips"]) / 2
    assert out["coverage"]["partial"] is True
    assert any(n.startswith("partial scan:") for n in out["notes"])
    assert out["places"] == [] and out["places_total"] == 0


WHERE = 'def execute_command(image):\n    return find("water area")\n'


def _check_places(places, total, georeferenced=True) -> None:
    assert places and len(places) == min(total, MAX_PLACES)
    areas = [p["area_m2"] for p in places]
    assert areas == sorted(areas, reverse=True)
    assert [p["rank"] for p in places] == list(range(1, len(places) + 1))
    for p in places:
        assert {"rank", "region_id", "label", "area_m2", "centroid_px"} <= set(p)
        if georeferenced:
            assert -80 < p["lon"] < -60 and 30 < p["lat"] < 50


def test_where_on_a_single_image(tmp_path, capsys) -> None:
    from viper_rs.cli import main

    scene = big_scene()
    path = tmp_path / "scene.tif"
    write_geotiff(scene.image, path)
    prog = tmp_path / "prog.py"
    prog.write_text(WHERE)
    code = main(["run", str(path), str(prog), "--detector", "spectral", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    n = out["value"]
    assert out["kind"] == "other" and isinstance(n, int) and n == out["places_total"] >= 1
    _check_places(out["places"], n)
    assert out["answer"].startswith(f"{n} water area")
    if n > 1:
        assert "; largest: 1. " in out["answer"] and " m2 at " in out["answer"]


def test_where_on_a_region(mosaic, agent) -> None:
    image = open_region(mosaic)
    answer, report = ask(image, "", agent, program=WHERE)
    truth = big_scene().objects_of(WATER)
    assert answer.error is None and answer.value == len(truth) == answer.places_total
    _check_places(answer.places, len(truth))
    assert all(p["chip"] and p["chips"] for p in answer.places)
    assert answer.answer.startswith(f"{len(truth)} water area")
    d = json.loads(answer.to_json())
    assert d["places"] == answer.places and d["places_total"] == len(truth)


def test_where_with_the_index(mosaic, index, agent) -> None:
    image = open_region(mosaic)
    answer, report = ask(image, "", agent, program=WHERE, index=index, top=TOP)
    assert report.coverage["partial"] is True
    assert answer.places_total == answer.value == len(answer.regions)
    assert any(n.startswith("partial scan:") for n in answer.notes)


def test_places_are_capped() -> None:
    from viper_rs.core.regions import Region

    regions = [Region(crop=np.ones((1, 1), bool), origin=(i, i), image_shape=(300, 300), label="x",
                      query="x", score=1.0, area_m2=float(i), id=i) for i in range(250)]
    places = rank_places(regions, image=None)
    assert len(places) == MAX_PLACES and places[0]["area_m2"] == 249 and "lon" not in places[0]
