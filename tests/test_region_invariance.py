"""Spectral answers about a region do not depend on how it is cut (issue 16.3): a real
NAIP tile asked whole, and the same tile cut into 2 x 2 GeoTIFFs asked as a region at
several chip sizes, give the same areas and counts (within a small tolerance)."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from viper_rs.agent import Agent
from viper_rs.core.config import Settings
from viper_rs.region import RegionOptions, ask_region

QUESTIONS = (
    "What is the area covered by trees?",
    "What is the area covered by buildings?",
    "What is the area covered by roads?",
    "How many buildings are there?",
    "How many trees are there?",
)
CHIP_SIZES = (48.0, 96.0, 144.0, 256.0)
TILES = {"napa": ("naip", "napa_naip_1m.tif"), "ms1": ("aerial", "ms1.tif")}


def cut_2x2(path: Path, folder: Path) -> list[Path]:
    """``path`` as four GeoTIFF quarters with the same CRS, pixel grid, dtype and nodata."""
    import rasterio
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with rasterio.open(path) as ds:
        h, w = ds.height, ds.width
        for i, (r0, r1) in enumerate(((0, h // 2), (h // 2, h))):
            for j, (c0, c1) in enumerate(((0, w // 2), (w // 2, w))):
                win = Window(c0, r0, c1 - c0, r1 - r0)
                profile = {**ds.profile, "height": r1 - r0, "width": c1 - c0,
                           "transform": ds.window_transform(win), "tiled": False}
                profile.pop("blockxsize", None)
                profile.pop("blockysize", None)
                q = folder / f"{path.stem}_{i}{j}.tif"
                with rasterio.open(q, "w", **profile) as dst:
                    dst.write(ds.read(window=win))
                    dst.colorinterp = ds.colorinterp
                out.append(q)
    return out


def settings() -> Settings:
    return Settings(detector="spectral", planner="rules")


@cache
def whole_answers(path: Path) -> dict[str, float]:
    from viper_rs.core.geo import GeoImage

    agent = Agent(settings=settings(), planner="rules")
    try:
        img = GeoImage.open(path)
        return {q: agent.ask(img, q).value for q in QUESTIONS}
    finally:
        agent.close()


def within(question: str, got: float, want: float) -> bool:
    """Areas within 3%, counts within 5% (or 1 below 20)."""
    if question.startswith("How many"):
        return abs(got - want) <= (1 if want < 20 else math.ceil(0.05 * want))
    return math.isclose(got, want, rel_tol=0.03, abs_tol=1.0)


#: Still off by more than the tolerance: ms1 at 256 m chips, buildings -8% (58 of 720 m2:
#: one building). The chip below the first row of chips reads the tile from its 4th row
#: down; a rule over a whole paved component (hole filling or speck removal on the paved
#: surface, before segments exist) sees that component cut by those 4 rows. Chips grow
#: their halo for cut paved *segments* (run_chip, ContextSensitive), not for cut
#: components: a road network is one component that meets nearly every chip's edge.
KNOWN_OFF = {("ms1", 256.0, "What is the area covered by buildings?")}

#: A larger tile (5 m NAIP, 3.6 x 4.7 km): there the halo is a small part of the tile, so a
#: chip really sees less than the whole image does. Paved-object questions only (land cover
#: matches exactly at every size, above). 256 and 1024 m chips were 8-9% off on buildings
#: before chips grew their halo for paved segments cut by the read window.
LARGE = ("naip", "north_dakota", "m_4709963_se_14_1_20140720.tif")
LARGE_QUESTIONS = (
    "What is the area covered by buildings?",
    "What is the area covered by roads?",
    "How many buildings are there?",
)


@pytest.fixture(scope="module")
def quarters(tmp_path_factory) -> dict[str, list[Path]]:
    from tests.conftest import DATA

    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    folder = tmp_path_factory.mktemp("quarters")
    return {t: cut_2x2(DATA.joinpath(*path), folder / t)
            for t, path in {**TILES, "large": LARGE}.items()}


@pytest.mark.data
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("chip_m", CHIP_SIZES)
@pytest.mark.parametrize("tile", list(TILES))
def test_cut_tile_answers_like_the_whole(shared_data, quarters, tile, chip_m, question,
                                         request) -> None:
    if (tile, chip_m, question) in KNOWN_OFF:
        request.applymarker(pytest.mark.xfail(reason="a paved component cut by the "
                                              "read window changes a segment's class", strict=True))
    want = float(whole_answers(shared_data.joinpath(*TILES[tile]))[question])
    answer, report = ask_region(quarters[tile], question,
                                RegionOptions(chip_m=chip_m, settings=settings(), planner="rules",
                                              progress=False))
    assert answer.error is None, answer.error
    assert not report.coverage["partial"]
    got = float(answer.value)
    print(f"{tile} chip {chip_m:g} m  {question!r}: whole {want:.6g} region {got:.6g} "
          f"({100 * (got - want) / max(abs(want), 1e-9):+.2f}%)")
    assert within(question, got, want), f"whole {want} region {got}"


@pytest.mark.data
@pytest.mark.parametrize("question", LARGE_QUESTIONS)
@pytest.mark.parametrize("chip_m", (256.0, 1024.0))
def test_cut_large_tile_answers_like_the_whole(shared_data, quarters, chip_m, question) -> None:
    want = float(whole_answers(shared_data.joinpath(*LARGE))[question])
    answer, report = ask_region(quarters["large"], question,
                                RegionOptions(chip_m=chip_m, settings=settings(), planner="rules",
                                              progress=False))
    assert answer.error is None, answer.error
    assert len(report.chips) > 16  # many chips, each seeing much less than the tile
    got = float(answer.value)
    print(f"large chip {chip_m:g} m  {question!r}: whole {want:.6g} region {got:.6g} "
          f"({100 * (got - want) / max(abs(want), 1e-9):+.2f}%)")
    assert within(question, got, want), f"whole {want} region {got}"


def test_quarters_are_exact(shared_data, tmp_path) -> None:
    """The quarters hold exactly the tile's pixels, nodata and georeferencing."""
    import rasterio

    path = shared_data.joinpath(*TILES["napa"])
    with rasterio.open(path) as ds:
        whole, nodata, tr = ds.read(), ds.nodata, ds.transform
    for q in cut_2x2(path, tmp_path):
        with rasterio.open(q) as part:
            c0, r0 = ~tr * (part.transform.c, part.transform.f)
            r0, c0 = round(r0), round(c0)
            assert part.nodata == nodata and part.crs is not None
            np.testing.assert_array_equal(part.read(), whole[:, r0:r0 + part.height,
                                                             c0:c0 + part.width])
