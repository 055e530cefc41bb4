"""The app's Region search without a browser: index location, map page (Leaflet inlined,
the sources' imagery, one footprint, dot and rank label per hit, thumbnails, places),
results table, GeoJSON without server paths, chips opened in their surroundings with the
chip as region of interest, and searches through the controller on an index of synthetic
GeoTIFFs (and of the real data)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from viper_rs.core.config import Settings
from viper_rs.index import Hit
from viper_rs.synthetic import WATER, make_scene
from viper_rs.ui import app as ui
from viper_rs.ui import search as rs
from viper_rs.ui import search_map as sm
from viper_rs.ui.catalog import Catalog
from viper_rs.ui.leaflet import leaflet_assets
from viper_rs.ui.session import Controller, Options

SEEDS = (0, 1, 2)
CHIP_M = 128.0
CDN = re.compile(r"(cdn\.jsdelivr|unpkg\.com|cdnjs|code\.jquery|bootstrapcdn)", re.I)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three synthetic 384 m GeoTIFF scenes (each has a pond)."""
    from viper_rs.core.raster_write import write_geotiff

    folder = tmp_path_factory.mktemp("scenes")
    for seed in SEEDS:
        write_geotiff(make_scene(seed, size=384).image, folder / f"scene{seed}.tif")
    return folder


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, scenes: Path):
    """A controller whose region search indexes ``scenes`` (not built yet) with the spectral
    embedder and 128 m chips."""
    root = tmp_path_factory.mktemp("region")
    settings = Settings.from_env(cache_dir=root / "cache", sandbox_workers=1,
                                 detector="spectral", building_model=False)
    region = rs.RegionSearch.for_folders([scenes], settings, chip_m=CHIP_M)
    c = Controller(Catalog([scenes], demo=()), settings, out_dir=root / "out", region=region)
    yield c
    c.close()


def _hit(rank: int, lon: float = 5.0, lat: float = 45.0, source: str = "/x/a.tif",
         name: str = "a.tif", window: tuple[int, int, int, int] = (0, 0, 10, 10)) -> Hit:
    d = 0.01
    corners = (lon, lat + d, lon + d, lat + d, lon + d, lat, lon, lat)
    return Hit(rank=rank, score=1.0 / rank, id=f"id{rank}", source=source, source_name=name,
               datetime="2020-08-31", crs="EPSG:4326", window=window,
               bbox=(lon, lat, lon + d, lat + d), corners=corners, white_point=255.0, valid=1.0)


def _water_in(hit: Hit) -> float:
    """True fraction of water in a hit's window of a synthetic scene."""
    seed = int(re.search(r"scene(\d+)", hit.source_name).group(1))
    col, row, w, h = hit.window
    return float(make_scene(seed, size=384).class_mask(WATER)[row:row + h, col:col + w].mean())


# ---------------------------------------------------------------------------- map
def test_map_inlines_leaflet_and_draws_every_hit():
    hits = [_hit(r, lon=5 + r / 10) for r in (1, 2, 3)]
    thumbs = {1: "data:image/png;base64,AAAA", 3: "data:image/png;base64,BBBB"}
    doc = sm.map_document(hits, thumbs)
    js, css = leaflet_assets()
    assert js[:2000] in doc and css[:500] in doc  # Leaflet inlined
    assert not CDN.search(doc), CDN.search(doc)
    assert not re.search(r"<(script|link)[^>]+(src|href)=", doc)  # nothing fetched but tiles
    body = doc.split("</head>", 1)[1]  # the page's own script, after the inlined Leaflet
    assert "$(" not in body  # no jQuery needed
    assert body.count("L.polygon(") == 3 and body.count("L.circleMarker(") == 3
    assert body.count(".bindPopup(") == 3 and body.count("data:image/png;base64,") == 2
    assert body.count("L.marker(") == 3 and body.count('class=\\"viper-rank\\"') == 3
    assert "tile.openstreetmap.org" in doc and "ResizeObserver" in doc
    # no imagery: no image overlays, no layer control; one place: no places box
    assert "L.imageOverlay(" not in body and "L.control.layers(" not in body
    assert "viper-places" not in body
    frame = sm.map_html(hits, thumbs)
    assert frame.startswith("<iframe") and 'sandbox="allow-scripts allow-popups"' in frame
    assert "<script" not in frame and html.unescape(frame).count("L.polygon(") == 3
    assert sm.map_html([]) == sm.EMPTY_MAP


def _overlay(tmp: Path, key: str, bounds: tuple[float, float, float, float], kb: int = 1):
    from viper_rs.index.overlays import Overlay

    png = tmp / (Path(key).stem + ".png")
    png.write_bytes(b"\x89PNG" + b"\0" * (kb * 1024))
    return Overlay(key=key, name=Path(key).name, png=png, bounds=bounds, fingerprint="f",
                   width=10, height=10)


def test_map_draws_the_sources_imagery_under_the_hits(tmp_path: Path):
    hits = [_hit(1), _hit(2, lon=5.02)]
    own = _overlay(tmp_path, "/x/a.tif", (4.99, 44.99, 5.05, 45.03))
    body = sm.map_document(hits, imagery=[own]).split("</head>", 1)[1]
    assert body.count("L.imageOverlay(") == 1 and '"pane": "viper-imagery"' in body
    assert own.data_uri() in body
    assert "L.control.layers(" in body and sm.OSM_LAYER in body and sm.IMAGERY_LAYER in body
    assert body.count(".bringToFront()") == 2  # a click shows the hit's own source on top
    assert "tile.openstreetmap.org" in body  # the online background stays


def test_far_apart_hits_are_places_and_the_map_opens_on_the_best(tmp_path: Path):
    hits = [_hit(1), _hit(2, lon=100.0, lat=10.0), _hit(3, lon=5.05), _hit(4, lon=100.1,
                                                                              lat=10.0)]
    groups = sm.places(hits)
    assert [[h.rank for h in g] for g in groups] == [[1, 3], [2, 4]]
    assert [[h.rank for h in g] for g in sm.places(hits, km=1.0)] == [[1], [2], [3], [4]]
    body = sm.map_document(hits).split("</head>", 1)[1]
    assert "Hits in 2 places" in body and "All hits" in body
    fit = re.search(r"let target = (.*?), shown", body, re.S).group(1)
    s, w, n, e = (float(v) for v in re.findall(r"-?\d+\.?\d*", fit))
    assert w == pytest.approx(5.0) and e == pytest.approx(5.06) and n < 46  # #1's place only
    assert "viperSpread" not in body and "latLngToLayerPoint" in body  # labels spread by zoom


def test_map_imagery_prefers_the_hits_sources_within_the_budget(tmp_path: Path):
    hits = [_hit(1, source="/x/a.tif"), _hit(2, lon=5.02, source="/x/b.tif", name="b.tif")]
    a = _overlay(tmp_path, "/x/a.tif", (4.99, 44.99, 5.02, 45.02), kb=40)
    b = _overlay(tmp_path, "/x/b.tif", (5.02, 44.99, 5.04, 45.02), kb=40)
    near = _overlay(tmp_path, "/x/near.tif", (5.04, 44.99, 5.05, 45.02), kb=40)
    far = _overlay(tmp_path, "/x/far.tif", (50.0, 0.0, 50.1, 0.1), kb=1)
    pictures = {o.key: o for o in (a, b, near, far)}
    assert [o.key for o in sm.map_imagery(hits, pictures)] == [near.key, b.key, a.key]
    assert [o.key for o in sm.map_imagery(hits, pictures, max_bytes=90_000)] == [b.key, a.key]
    assert [o.key for o in sm.map_imagery(hits, pictures, max_bytes=10)] == [a.key]
    assert sm.map_imagery([], pictures) == [] and sm.map_imagery(hits, {}) == []


def test_callouts_escape_source_names():
    evil = 'x<img src=y onerror=alert(1)>`${z}`.tif'
    doc = sm.map_document([_hit(1, name=evil)])
    assert "<img src=y" not in doc and "\\u003cimg src=y" not in doc
    callout = sm.callout_html(_hit(1, name=evil), "data:image/png;base64,AA")
    assert "&lt;img src=y onerror=alert(1)&gt;" in callout
    assert 'data-rank="1"' in callout and "Ask about this chip" in callout


def test_results_table_rows():
    rows = rs.result_rows([_hit(1, lon=-99.15684, lat=47.017), _hit(2)])
    assert rows[0] == [1, 1.0, "", "47.02200, -99.15184", "a.tif", "2020-08-31"]
    assert rows[1][:2] == [2, 0.5]
    assert len(rs.RESULT_COLUMNS) == len(rows[0])
    assert list(ui._results_frame(rows).columns) == rs.RESULT_COLUMNS


# ---------------------------------------------------------------------------- index location
def test_index_location(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(rs.INDEX_ENV, raising=False)
    settings = Settings(cache_dir=tmp_path / "cache")
    a, b = tmp_path / "a", tmp_path / "b"
    path = rs.default_index_path([a, b], settings)
    assert path.parent == tmp_path / "cache" / "index" and path.name.startswith("folders-")
    assert rs.default_index_path([b, a], settings) == path  # same folders, same index
    assert rs.default_index_path([a], settings) != path
    assert rs.default_index_path([a, b], settings, chip_m=512) != path
    monkeypatch.setenv(rs.INDEX_ENV, str(tmp_path / "env"))
    assert rs.default_index_path([a], settings) == tmp_path / "env"
    assert rs.default_index_path([a], settings, given=tmp_path / "x") == tmp_path / "x"
    assert [rs.index_embedder(d) for d in ("graft", "clip", "spectral", "auto", "oracle")] == [
        "graft", "clip", "spectral", "auto", "auto"]


def test_command_line_and_layout(ctl: Controller):
    import gradio as gr

    args = ui.parse_args(["--index", "idx", "--index-chip-m", "512"])
    assert args.index == Path("idx") and args.index_chip_m == 512.0
    assert ui.parse_args([]).index is None and ui.parse_args([]).index_chip_m == 256.0
    blocks = ui.build_app(ctl)
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    for part in ("chat-tab", "region-search", "region-query", "region-button", "region-k",
                 "region-status", "region-map", "region-results", "region-geojson",
                 "region-index", "region-build", "image-picker", "chat", "question"):
        assert part in ids, part
    tabs = [b for b in blocks.blocks.values() if isinstance(b, gr.Tabs)]
    assert len(tabs) == 1 and tabs[0].selected == ui.CHAT_TAB


# ---------------------------------------------------------------------------- searching
def test_first_search_builds_the_index_then_ranks_water_chips_first(ctl: Controller):
    assert not ctl.region.exists() and "not built yet" in ctl.region.status()
    steps: list[tuple[float, str]] = []
    view = ctl.search_region("water", k=5, progress=lambda f, what: steps.append((f, what)))
    assert view.ok, view.message
    assert ctl.region.exists() and "Indexed" in view.message and "best of" in view.message
    assert any("Indexing chips" in what for _, what in steps)
    assert [h.rank for h in view.hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in view.hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert _water_in(view.hits[0]) > 0.02  # the best chip holds part of a pond
    # table, map with thumbnails, GeoJSON download
    assert [r[0] for r in view.rows] == [1, 2, 3, 4, 5]
    doc = html.unescape(view.map_html)
    assert doc.count("L.polygon(") == 5 and doc.count("viper-thumb") == 5
    # the three scenes' pictures, built with the index, under an imagery layer
    assert doc.count("L.imageOverlay(") == 3 and "L.control.layers(" in doc
    assert sm.IMAGERY_LAYER in doc and sm.OSM_LAYER in doc
    fc = json.loads(Path(view.files[0]).read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 5
    assert fc["features"][0]["geometry"]["type"] == "Polygon"
    assert "Index: **" in ctl.region.status() and "map imagery of 3 sources" in \
        ctl.region.status()
    assert "Map imagery: 3 sources drawn" in view.message


def test_results_name_sources_by_file_name_only(ctl: Controller, scenes: Path):
    view = ctl.search_region("water", k=5)
    text = Path(view.files[0]).read_text()
    folder = str(scenes.resolve())
    assert folder not in text and folder not in html.unescape(view.map_html)
    for feature in json.loads(text)["features"]:
        props = feature["properties"]
        assert props["source"] == props["source_name"] and "/" not in props["source"]
    assert all("/" not in row[3] for row in view.rows)
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "source": "https://x.org/a/b.tif?sig=SECRET"}}]}
    assert rs.public_geojson(fc)["features"][0]["properties"]["source"] == "b.tif"
    assert fc["features"][0]["properties"]["source"].endswith("SECRET")  # not changed


def test_build_again_adds_nothing(ctl: Controller):
    ctl.search_region("water", k=1)
    message = ctl.build_region()
    assert "0 added" in message and "Indexed" in message


def test_thumbnail_is_a_small_png_of_the_chip(ctl: Controller):
    hit = ctl.search_region("water", k=1).hits[0]
    uri = sm.thumbnail(hit, side=64)
    assert uri.startswith("data:image/png;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert picture.format == "PNG" and max(picture.size) == 64 and picture.mode == "RGB"
    gone = _hit(1, source="/no/such/file.tif")
    assert sm.thumbnail(gone) is None and sm.thumbnails([gone]) == {}


@pytest.mark.parametrize("query, expected", [
    ("", "Type what to look for"),
    ("   ", "Type what to look for"),
    ("unicorns", "unknown concept 'unicorns'"),
    ("w" * 201, "the limit is 200"),
    ("[unicorns](http://x)", "unknown concept"),
])
def test_bad_queries_are_messages(ctl: Controller, query: str, expected: str):
    view = ctl.search_region(query, k=5)
    assert not view.ok and expected in view.message and not view.files
    assert "Internal error" not in view.message
    assert not re.search(r"(?<!\\)\]\(", view.message)  # no Markdown link
    if "unknown" in expected:
        assert "water" in view.message  # the vocabulary is named


def test_control_characters_in_queries_are_spaces(ctl: Controller):
    view = ctl.search_region("\x00wa\x1bter", k=1)
    assert view.ok is False and "wa ter" in view.message
    assert ctl.search_region(" water\x00 ", k=1).ok


def test_no_imagery_and_missing_folders_are_messages(tmp_path: Path):
    settings = Settings(cache_dir=tmp_path / "cache", detector="spectral")
    nothing = rs.RegionSearch(tmp_path / "idx", [], settings)
    assert "no image folders" in nothing.search("water").message
    assert "no image folders" in nothing.status()
    missing = rs.RegionSearch(tmp_path / "idx", [tmp_path / "gone"], settings)
    assert "do not exist" in missing.search("water").message
    (tmp_path / "empty").mkdir()
    empty = rs.RegionSearch(tmp_path / "idx", [tmp_path / "empty"], settings)
    assert "no indexable imagery" in empty.search("water").message
    c = Controller(Catalog(demo=()), settings, out_dir=tmp_path / "out", region=nothing)
    try:
        assert c.build_region().startswith("Could not build the index: no image folders")
    finally:
        c.close()


def test_unexpected_errors_keep_the_app_up(ctl: Controller, monkeypatch):
    ctl.search_region("water", k=1)

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ctl.region, "searcher", boom)
    view = ctl.search_region("water")
    assert "Internal error (RuntimeError): disk on fire" in view.message and not view.ok


# ---------------------------------------------------------------------------- chips
def test_a_hit_opens_as_its_tile_with_the_chip_as_region_of_interest(ctl: Controller,
                                                                      scenes: Path):
    from viper_rs.ui.evidence import ROI_RGB, overlay

    hit = ctl.search_region("water", k=3).hits[0]
    key, message = ctl.open_hit(hit)
    assert key.startswith("chip: scene") and f"[{hit.window[0]},{hit.window[1]} " in key
    assert "Opened chip **#1**" in message and "EPSG:32618" in message
    assert ctl.catalog.add_chip(hit) == key  # listed once
    image = ctl.catalog.open(key)
    col, row, w, h = hit.window
    with rasterio.open(hit.source) as ds:  # a 384 px scene: the whole tile is the context
        whole, transform = ds.read(), ds.transform
    assert np.array_equal(image.data, whole)
    assert image.transform.almost_equals(transform) and image.area_unit == "m2"
    assert image.white_point == pytest.approx(hit.white_point)
    # the chip is the region of interest: answers count only there
    assert image.roi is not None and image.roi.sum() == w * h
    assert image.roi[row:row + h, col:col + w].all()
    assert np.array_equal(image.data[:, image.roi].reshape(-1, h, w),
                          whole[:, row:row + h, col:col + w])
    # the picture shown in the chat outlines the chip (just outside it), nothing else
    picture, _ = overlay(image, None)
    outlined = (picture == ROI_RGB).all(axis=-1)
    assert outlined[max(0, row - 2), col + w // 2] or outlined[row + h, col + w // 2]
    assert not outlined[image.roi].any() and outlined.sum() < 4 * 3 * (w + h + 12)
    other = Hit(**{**hit.__dict__, "window": (0, 0, w, h), "rank": 2})
    assert ctl.catalog.add_chip(other) != key
    turn = ctl.ask(key, "Is there a water area?", Options(detector="spectral", planner="rules"))
    assert turn.ok and turn.answer.answer == "yes", turn.message
    area = ctl.ask(key, "What is the area covered by water?",
                   Options(detector="spectral", planner="rules"))
    assert area.ok and 0 < area.answer.value <= w * h, area.message  # m2 inside the chip


def test_a_chip_of_a_large_source_opens_in_a_bounded_window():
    from viper_rs.ui.catalog import CHIP_CONTEXT_PX, context_window, window_mask

    assert context_window((100, 50, 51, 51), 934, 724) == (0, 0, 934, 724)
    big = context_window((5000, 10, 427, 427), 10_000, 8_000)
    c0, r0, cw, ch = big
    assert (cw, ch) == (CHIP_CONTEXT_PX, CHIP_CONTEXT_PX) and r0 == 0
    assert c0 <= 5000 and 5000 + 427 <= c0 + cw and abs((c0 + cw / 2) - 5213) <= 1
    assert context_window((9900, 7900, 100, 100), 10_000, 8_000)[:2] == (
        10_000 - CHIP_CONTEXT_PX, 8_000 - CHIP_CONTEXT_PX)
    assert context_window((0, 0, 3000, 3000), 10_000, 8_000) == (0, 0, 3000, 3000)
    mask = window_mask((100, 200, 50, 40), (110, 210, 5, 4))
    assert mask.shape == (40, 50) and mask.sum() == 20 and mask[10:14, 10:15].all()


def test_an_unreadable_chip_is_a_message_and_not_listed(ctl: Controller):
    key, message = ctl.open_hit(_hit(4, source="/no/such/file.tif", name="file.tif"))
    assert key is None and "Could not open chip #4" in message
    assert not any(k.startswith("chip: file.tif") for k in ctl.catalog.keys)


# ---------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_tiles_water_comes_from_ponds_and_harbour(shared_data: Path, tmp_path: Path):
    settings = Settings(cache_dir=tmp_path / "cache", detector="spectral")
    region = rs.RegionSearch.for_folders([shared_data / "naip", shared_data / "aerial"],
                                         settings, index=tmp_path / "idx", chip_m=512)
    view = region.search("water", k=5)
    assert view.ok, view.message
    names = [h.source_name for h in view.hits]
    assert all(n.startswith("m_4709963_") or n == "ms2.tif" for n in names), names
    assert view.hits[0].score > 0.5
    assert html.unescape(view.map_html).count("L.circleMarker(") == 5


def test_the_map_keeps_hits_clear_of_its_controls_and_callouts_inside():
    hits = [_hit(1), _hit(2, lon=100.0, lat=10.0)]
    body = sm.map_document(hits, {1: "data:image/png;base64,AAAA"}, map_id="m42").split(
        "</head>", 1)[1]
    assert "viperFitPadding(map, L.latLngBounds(target), 30)" in body
    assert "paddingTopLeft: pad[0], paddingBottomRight: pad[1]" in body
    assert 'viperWatchView(map, "m42")' in body and "e.popup.update()" in body
    assert "autoPanPadding" in body
    # The thumbnail's size is known before it loads (the callout is laid out once).
    assert sm.thumb_size(_hit(1, window=(0, 0, 512, 256))) == (160, 80)
    assert sm.thumb_size(_hit(1, window=(0, 0, 100, 120))) == (100, 120)
    callout = sm.callout_html(_hit(1, window=(0, 0, 512, 256)), "data:image/png;base64,AA")
    assert 'width="160" height="80"' in callout


def test_each_map_has_an_id_its_views_carry():
    first, second = sm.map_html([_hit(1)]), sm.map_html([_hit(1)])
    a, b = rs.SearchView("", map_html=first).map_id, rs.SearchView("", map_html=second).map_id
    assert a and b and a != b
    assert f'viperWatchView(map, "{a}")' in html.unescape(first)
    assert rs.SearchView("").map_id == "" and sm.map_html([]) == sm.EMPTY_MAP
