"""*Ask about this area* without a browser: a question over the app's image folders inside a
W,S,E,N box, answered chip by chip on a synthetic 2 x 2 mosaic (objects straddle the tile
borders), with the chips table, the per-chip values, the map and the downloads; every
failure (no area, a box beside the sources, too many chips, a question the planner cannot
run, no folders) is a message."""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path

import pytest
from affine import Affine

from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.core.geo import GeoImage
from viper_rs.core.raster_write import write_geotiff
from viper_rs.synthetic import Scene, make_scene
from viper_rs.ui import area as ar
from viper_rs.ui import search as rs
from viper_rs.ui.catalog import Catalog
from viper_rs.ui.session import Controller, Options

SIZE, TILE, SEED = 512, 256, 5


@cache
def scene() -> Scene:
    return make_scene(SEED, size=SIZE, gsd=1.0)


def write_mosaic(folder: Path) -> Path:
    """The scene as 2 x 2 adjacent GeoTIFF tiles in ``folder``."""
    img = scene().image
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(SIZE // TILE):
        for j in range(SIZE // TILE):
            r0, c0 = i * TILE, j * TILE
            tile = GeoImage.from_array(img.data[:, r0:r0 + TILE, c0:c0 + TILE], "R,G,B,NIR",
                                       crs=img.crs,
                                       transform=img.transform @ Affine.translation(c0, r0))
            write_geotiff(tile, folder / f"tile_{i}_{j}.tif")
    return folder


def mosaic_bbox(margin: float = 0.0) -> list[float]:
    """The mosaic's WGS84 W,S,E,N (grown by ``margin`` degrees)."""
    from rasterio.warp import transform_bounds

    img = scene().image
    x0, y1 = img.pixel_to_crs(0, 0)
    x1, y0 = img.pixel_to_crs(SIZE, SIZE)
    w, s, e, n = transform_bounds(img.crs, "EPSG:4326", x0, y0, x1, y1)
    return [w - margin, s - margin, e + margin, n + margin]


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mosaic(tmp_path_factory.mktemp("mosaic") / "tiles")


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, mosaic: Path):
    root = tmp_path_factory.mktemp("area")
    settings = Settings.from_env(cache_dir=root / "cache", sandbox_workers=1,
                                 detector="spectral", planner="rules")
    region = rs.RegionSearch.for_folders([mosaic], settings, chip_m=128.0)
    c = Controller(Catalog([mosaic], demo=()), settings, out_dir=root / "out", region=region)
    yield c
    c.close()


OPTIONS = Options(detector="spectral", planner="rules")


def test_parse_area():
    assert ar.parse_area("  ") is None and ar.parse_area(None) is None
    assert ar.parse_area("-74.0, 40.7, -73.9, 40.8") == [-74.0, 40.7, -73.9, 40.8]
    assert ar.parse_area("[-74 40.7 -73.9 40.8]") == [-74.0, 40.7, -73.9, 40.8]
    assert ar.parse_area((1, 2, 3, 4)) == [1.0, 2.0, 3.0, 4.0]
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,5", "3,2,1,4", "0,95,1,96", "1,2,3,4 km"):
        with pytest.raises(InputError):
            ar.parse_area(bad)


def test_view_text():
    assert ar.view_text([-74.1, 40.7, -73.9, 40.8]) == "-74.100000,40.700000,-73.900000,40.800000"
    assert ar.view_text([-200, -95, 200, 95]) == "-180.000000,-90.000000,180.000000,90.000000"
    assert ar.view_text(None) == "" and ar.view_text([1, 2]) == "" and ar.view_text("abcd") == ""
    assert ar.view_text([-74.5, 40.9, -74.5, 40.9]) == ""  # a map of no size


def test_buildings_in_the_area_chip_by_chip(ctl: Controller):
    seen: list[tuple[float, str]] = []
    view = ctl.ask_area("How many buildings are there?", ",".join(map(str, mosaic_bbox())),
                        OPTIONS, progress=lambda f, what: seen.append((f, what)))
    assert view.ok, view.message
    n = view.answer.value
    assert isinstance(n, int) and n == len(view.answer.regions) > 0
    assert "4 of 4 chips" in view.message
    # Progress: chips read of the total.
    assert any("Reading chips (4/4)" in what for _, what in seen), seen
    assert all(0 <= f <= 1 for f, _ in seen)
    # The table: one row per chip, the objects adding up to the answer (each region once).
    assert [r[0] for r in view.rows] == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert all(r[2] == "ok" and r[1].startswith("tile_") for r in view.rows)
    assert sum(r[3] for r in view.rows) == n
    # Downloads: GeoJSON (regions and chips, WGS84) and the GPKG.
    names = [Path(f).name for f in view.files]
    assert names == ["area.geojson", "evidence.gpkg"], names
    fc = json.loads(Path(view.files[0]).read_text())
    kinds = [f["properties"]["kind"] for f in fc["features"]]
    assert kinds.count("region") == n and kinds.count("chip") == 4
    w, s, e, nn = mosaic_bbox(1e-4)
    for f in fc["features"]:
        for x, y in f["geometry"]["coordinates"][0]:
            assert w <= x <= e and s <= y <= nn
    assert str(ctl.out_dir) not in json.dumps(fc)
    # The map: chips coloured by their number of buildings, the regions in building red.
    doc = html.unescape(view.map_html)
    assert 'class="viper-area-map"' in view.map_html and "unpkg" not in doc
    data = json.loads(doc.split("const d = ", 1)[1].split(";\n", 1)[0])
    assert len(data["cells"]) == 4 and len(data["polys"]) == n
    from viper_rs.ui.answer_map import colour_for

    assert {p["c"] for p in data["polys"]} == {colour_for("building")}
    busiest = max(range(4), key=lambda i: view.rows[i][3])
    assert data["cells"][busiest]["c"] == ar._RAMP[-1]
    assert ar.VIEW_TYPE in doc


def test_area_question_colours_chips_by_area(ctl: Controller):
    view = ctl.ask_area("What is the area covered by trees?", mosaic_bbox(), OPTIONS)
    assert view.ok, view.message
    assert isinstance(view.answer.value, float) and view.answer.value > 0
    total = sum(r[4] for r in view.rows)
    assert total == pytest.approx(view.answer.value, rel=0.02)
    assert "area_m2" in html.unescape(view.map_html)


def test_part_of_the_mosaic(ctl: Controller):
    w, s, e, n = mosaic_bbox()
    view = ctl.ask_area("How many buildings are there?", [w, s, (w + e) / 2, (s + n) / 2],
                        OPTIONS)
    assert view.ok, view.message
    assert 1 <= len(view.rows) <= 2  # the quarter, and a sliver of its neighbour


def test_the_whole_world_box_is_the_folders_imagery(ctl: Controller):
    """``-180,-90,180,90`` holds every image: answered as the mosaic's own box is (before
    issue 22 it 'met none of the folders' imagery')."""
    world = ctl.ask_area("How many buildings are there?", "-180,-90,180,90", OPTIONS)
    own = ctl.ask_area("How many buildings are there?", mosaic_bbox(), OPTIONS)
    assert world.ok and own.ok, (world.message, own.message)
    assert world.answer.value == own.answer.value and len(world.rows) == len(own.rows) == 4


@pytest.mark.parametrize(("question", "area", "expected"), [
    ("", "1,2,3,4", "Type a question"),
    ("How many buildings are there?", "", "No area to ask about"),
    ("How many buildings are there?", "1,2,3", "Area problem"),
    ("How many buildings are there?", "10,10,10.01,10.01", "meets none of the folders' imagery"),
])
def test_failures_are_messages(ctl: Controller, question: str, area: str, expected: str):
    view = ctl.ask_area(question, area, OPTIONS)
    assert not view.ok and expected in view.message, view.message
    assert "Traceback" not in view.message


def test_a_question_outside_the_planner_is_a_message(ctl: Controller):
    view = ctl.ask_area("Compose a sonnet about the moon", mosaic_bbox(), OPTIONS)
    assert not view.ok and view.message and "Traceback" not in view.message


def test_a_large_area_is_refused(ctl: Controller):
    view = ctl.ask_area("How many buildings are there?", mosaic_bbox(), OPTIONS, max_chips=3)
    assert not view.ok and "Not asked" in view.message and "4 chips of 256 m" in view.message
    assert "at most 3 chips" in view.message and "smaller box" in view.message
    assert "coarser Resolution (m/px)" in view.message


def test_no_folders_is_a_message(tmp_path: Path):
    settings = Settings.from_env(cache_dir=tmp_path / "cache", detector="spectral")
    c = Controller(Catalog([], demo=()), settings, out_dir=tmp_path / "out")
    try:
        view = c.ask_area("How many buildings are there?", "1,2,3,4", OPTIONS)
        assert "No image folders" in view.message
    finally:
        c.close()


def test_oracle_is_refused_as_a_message(ctl: Controller):
    view = ctl.ask_area("How many buildings are there?", mosaic_bbox(),
                        Options(detector="oracle"))
    assert not view.ok and "oracle" in view.message


def test_view_tracker_shows_the_last_view_of_a_shown_map():
    views = ar.ViewTracker()
    world, fitted, panned = [-122.34, -69.66, 122.34, 69.66], [1, 2, 3, 4], [1.5, 2, 3.5, 4]
    assert views.show("search", "m1") == "" and views.text == ""
    # Posts handled out of order: the older one (a lower number) is ignored.
    assert views.post("m1", 2, fitted) == ar.view_text(fitted)
    assert views.post("m1", 1, world) is None
    assert views.text == ar.view_text(fitted)
    assert views.post("m1", 3, panned) == ar.view_text(panned)
    # A post of a map no longer shown, or not a box, is ignored.
    assert views.post("old", 9, world) is None and views.post("m1", 4, [1, 2]) is None
    assert views.post("m1", "x", fitted) is None and views.post(None, 5, fitted) is None
    # The area map is shown and moved: the field follows it; cleared, it is the search map's.
    assert views.show("area", "a1") == ar.view_text(panned)
    assert views.post("a1", 1, fitted) == ar.view_text(fitted)
    assert views.show("area", None) == ar.view_text(panned)
    # A failed search clears the search map: no map shown, no view.
    assert views.show("search", None) == "" and views.text == ""
    # A new search map: its views only (the old map's late posts are ignored).
    assert views.show("search", "m2") == ""
    assert views.post("m1", 10, world) is None
    assert views.post("m2", 1, fitted) == ar.view_text(fitted)


def test_the_maps_post_their_view_from_the_first_fit_on():
    js = ar.view_post_js()
    assert "if (!started) return;" in js and "seq: ++seq" in js and "map: id" in js
    doc = ar.area_map_document(ar.area_map_data([], [], {"features": []}, [0, 0, 1, 1]),
                               map_id="abc123")
    assert 'viperWatchView(map, "abc123")' in doc
    start, fit = doc.index("view.start();"), doc.index("map.fitBounds(d.bounds, {padding")
    assert start < fit  # the visible fit is the first view posted
    assert "trigger('select', {view: data.bounds, map: data.map, seq: data.seq})" in \
        ar.VIEW_LISTENER
