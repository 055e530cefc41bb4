"""Browser test of the Region search tab on synthetic GeoTIFFs (no data folder needed):
`python app.py --folder <scenes> --index <idx>` in headless Chromium driven by Playwright.

What a person sees: the status refreshed on page load, the folders' own imagery on the map
(offline: the OpenStreetMap background does not load here), the map fitted to the hits,
rank labels that stay apart when hits overlap, a failed search that clears the results, a
GeoJSON without server paths, and a chip opened in the Chat tab as its tile with the chip
outlined. Same markers and fixtures as tests/test_ui_browser.py; screenshots go to
``artifacts/ui/``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_ui_browser import (
    ARTIFACTS,
    _cell,
    _map_frame,
    _open_page,
    _require_browser,
    _serve,
    browser,  # noqa: F401 - the module's Chromium (a fixture)
)

pytestmark = pytest.mark.browser

CHIP_M = 128
#: The Leaflet map object of the results page.
_MAP = "window.viperMap"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic 384 m scenes 600 m apart: three in UTM (EPSG:32618), one in WGS84."""
    _require_browser()
    import rasterio
    from rasterio.transform import from_bounds
    from rasterio.warp import transform_bounds

    from viper_rs.core.raster_write import write_geotiff
    from viper_rs.synthetic import make_scene

    folder = tmp_path_factory.mktemp("scenes")
    for seed in (0, 1, 2):
        write_geotiff(make_scene(seed, size=384).image, folder / f"scene{seed}.tif")
    image = make_scene(3, size=384).image
    bounds = transform_bounds("EPSG:32618", "EPSG:4326", *image.pixel_to_crs(0, 384),
                              *image.pixel_to_crs(384, 0))
    profile = {"driver": "GTiff", "width": 384, "height": 384, "count": image.data.shape[0],
               "dtype": image.data.dtype.name, "crs": "EPSG:4326",
               "transform": from_bounds(*bounds, 384, 384)}
    with rasterio.open(folder / "scene3_wgs84.tif", "w", **profile) as ds:
        ds.write(image.data)
    return folder


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory, browser, scenes: Path):  # noqa: F811
    """(page, index path, scenes folder): a page on the app, whose index is not built."""
    tmp = tmp_path_factory.mktemp("search_app")
    index = tmp / "index"
    with _serve(tmp, "--folder", str(scenes), "--index", str(index), "--detector", "spectral",
                "--index-chip-m", str(CHIP_M), "--no-warmup",
                log_name="region_synthetic_app.log") as url:
        page = _open_page(browser, url)
        try:
            yield page, index, scenes
        finally:
            page.close()


def _search(page, query: str, expect: str) -> None:
    box = page.locator("#region-query textarea")
    box.fill(query)
    box.press("Enter")
    page.locator("#region-status").get_by_text(expect).first.wait_for(timeout=120_000)


def _labels(frame) -> list[dict]:
    """Rank labels on the map: text and centre (px in the frame)."""
    return frame.evaluate("""() => [...document.querySelectorAll('.viper-rank')].map(e => {
        const r = e.getBoundingClientRect();
        return {rank: e.innerText.trim(), x: r.x + r.width / 2, y: r.y + r.height / 2}; })""")


def _closest_pair(labels: list[dict]) -> float:
    return min(((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5
               for i, a in enumerate(labels) for b in labels[i + 1:])


def test_status_is_read_again_when_the_page_loads(region):
    page, index, scenes = region
    page.get_by_role("tab", name="Region search").click()
    assert "not built yet" in page.locator("#region-status").inner_text()
    # Someone builds the index outside the app; a reload shows it.
    subprocess.run([sys.executable, "-m", "viper_rs", "index", "build", str(scenes), "--out",
                    str(index), "--embedder", "spectral", "--chip-m", str(CHIP_M), "--quiet"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    page.reload()
    page.locator("#question textarea").wait_for()
    page.get_by_role("tab", name="Region search").click()
    status = page.locator("#region-status")
    status.get_by_text("map imagery of").wait_for()
    text = status.inner_text()
    assert "Index: " in text and "map imagery of 4 sources" in text, text


def test_map_shows_the_imagery_fits_the_hits_and_keeps_them_apart(region):
    page = region[0]
    page.get_by_role("tab", name="Region search").click()
    _search(page, "water", "best of")
    frame = _map_frame(page)
    # The folders' own imagery, drawn offline under the footprints.
    frame.wait_for_function("""() => [...document.querySelectorAll('img.leaflet-image-layer')]
                               .some(i => i.complete && i.naturalWidth > 0)""")
    frame.wait_for_function("() => document.querySelectorAll('.viper-rank').length === 10")
    layers = frame.locator(".leaflet-control-layers")
    assert "OpenStreetMap" in layers.inner_text() and "Imagery (offline)" in layers.inner_text()
    # Fitted to the hits (all within 2 km): every footprint is inside the view, zoomed in.
    fit = frame.evaluate(f"""() => {{ const map = {_MAP}; const view = map.getBounds();
        const polys = []; map.eachLayer(l => {{ if (l instanceof L.Polygon) polys.push(l); }});
        return {{zoom: map.getZoom(), polygons: polys.length,
                 inside: polys.every(p => view.contains(p.getBounds())),
                 images: document.querySelectorAll('img.leaflet-image-layer').length}}; }}""")
    assert fit["polygons"] == 10 and fit["inside"] and fit["zoom"] >= 12, fit
    assert fit["images"] >= 1, fit
    # Hits that overlap (neighbouring chips share 25 %) keep their labels apart...
    assert _closest_pair(_labels(frame)) >= 20, _labels(frame)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "region_search_synthetic.png"), full_page=True)
    # ... also zoomed out until the hits pile up: each label can still be clicked.
    frame.evaluate(f"() => {_MAP}.setZoom({_MAP}.getZoom() - 4, {{animate: false}})")
    frame.wait_for_function("() => document.querySelectorAll('path.viper-leader').length > 0")
    labels = _labels(frame)
    assert len(labels) == 10 and _closest_pair(labels) >= 20, labels
    frame.locator(".viper-rank", has_text="7").first.click()
    callout = frame.locator(".viper-callout")
    callout.wait_for()
    assert "#7" in callout.inner_text()
    frame.wait_for_function("() => getComputedStyle(document.querySelector("
                            "'.leaflet-popup')).opacity === '1'")  # faded in
    page.locator("#region-map").screenshot(path=str(ARTIFACTS / "region_map_zoomed_out.png"))


def test_geojson_names_sources_by_file_name(region):
    page, _, scenes = region
    link = page.locator("#region-geojson a").first
    link.wait_for()
    text = page.request.get(link.get_attribute("href")).text()
    assert str(scenes) not in text and str(scenes.resolve()) not in text
    features = json.loads(text)["features"]
    assert len(features) == 10
    for feature in features:
        props = feature["properties"]
        assert props["source"] == props["source_name"] and "/" not in props["source"]
        assert props["source"].startswith("scene")


def test_failed_search_clears_the_results(region):
    page = region[0]
    rows = page.locator("#region-results [role=row].virtual-row")
    assert rows.count() == 10
    _search(page, "unicorns", "Cannot search for that")
    page.wait_for_function(
        "() => document.querySelectorAll('#region-results [role=row].virtual-row').length === 0")
    page.locator("#region-map-empty").wait_for()
    assert page.locator("#region-map iframe").count() == 0
    assert page.locator("#region-geojson a").count() == 0
    page.screenshot(path=str(ARTIFACTS / "region_search_failed.png"), full_page=True)


def test_a_result_opens_as_its_tile_with_the_chip_outlined(region):
    from PIL import Image

    from viper_rs.ui.evidence import ROI_RGB

    page = region[0]
    _search(page, "water", "best of")
    opened = page.locator("#chat .message").filter(has_text="Opened chip #1 ")
    _cell(page, 0, 3).click()
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
    opened.first.wait_for()
    assert "outlined in orange" in opened.first.inner_text()
    picker = page.locator("#image-picker input")
    page.wait_for_function(
        "() => document.querySelector('#image-picker input').value.startsWith('chip: ')")
    assert picker.input_value().startswith("chip: scene")
    assert "384×384 px" in page.locator("#image-info").inner_text()  # the whole tile
    shown = page.locator("#answer-overlay img").first
    shown.wait_for()
    page.wait_for_function("""() => { const i = document.querySelector('#answer-overlay img');
                               return i && i.complete && i.naturalWidth > 0; }""")

    def orange_pixels() -> tuple[int, int]:
        picture = Image.open(io.BytesIO(page.request.get(shown.get_attribute("src")).body()))
        rgb = np.asarray(picture.convert("RGB"), dtype=int)  # the picture may be WebP (lossy)
        return (int((np.abs(rgb - np.array(ROI_RGB)) <= 40).all(axis=-1).sum()),
                rgb.shape[0] * rgb.shape[1])

    # the plain tile may show for a moment before the outlined picture replaces it
    for _ in range(40):
        orange, size = orange_pixels()
        if orange > 100:
            break
        page.wait_for_timeout(500)
    assert 100 < orange < 0.2 * size, orange  # an outline, not a fill
    page.screenshot(path=str(ARTIFACTS / "region_chip_in_tile.png"), full_page=True)


# ---------------------------------------------------------------------------- the map alone
def _grid_hits(n: int = 3, far: bool = True) -> list:
    """Hits on an n x n grid (#1 at its south-west corner, the corner the places box sits
    in) and, with ``far``, one more hit 13,000 km away (a second place)."""
    from viper_rs.index.store import Hit

    def hit(rank: int, lon: float, lat: float, d: float = 0.0012) -> Hit:
        corners = (lon - d, lat + d, lon + d, lat + d, lon + d, lat - d, lon - d, lat - d)
        return Hit(rank=rank, score=1 - rank / 100, id=f"c{rank}", source=f"/x/s{rank}.tif",
                   source_name=f"s{rank}.tif", datetime="2020-08-31", crs="EPSG:4326",
                   window=(0, 0, 256, 256), bbox=(lon - d, lat - d, lon + d, lat + d),
                   corners=corners, white_point=255.0, valid=1.0)

    points = sorted(((-100.0 + 0.03 * i, 47.0 + 0.02 * j) for j in range(n) for i in range(n)),
                    key=lambda p: p[0] + p[1])
    hits = [hit(k + 1, *p) for k, p in enumerate(points)]
    if far:
        hits.append(hit(len(hits) + 1, 30.0, 0.0))
    return hits


def _thumb() -> str:
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (160, 160), (40, 120, 60)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _map_page(browser, hits, width: int, height: int, thumbs: dict | None = None):  # noqa: F811
    """A page holding the results map of ``hits`` alone, fitted."""
    from viper_rs.ui.search_map import map_document

    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_content(map_document(hits, thumbs or {}, map_id="test"))
    page.wait_for_function(f"() => {_MAP} && document.querySelectorAll('.viper-rank').length"
                           f" === {len(hits)}")
    page.wait_for_timeout(300)  # the fit runs on the frame's first resize callback
    return page


def _overlaps(page, selector: str) -> list[dict]:
    """Rank labels and hit dots that ``selector`` (a map control) covers, with the
    labels and dots that lie inside the map at all (nothing covered must be vacuous)."""
    return page.evaluate("""(selector) => {
        const box = document.querySelector(selector).getBoundingClientRect();
        const map = document.querySelector('.leaflet-container').getBoundingClientRect();
        const hit = r => r.left < box.right && r.right > box.left && r.top < box.bottom
                         && r.bottom > box.top;
        const inside = r => r.left >= map.left && r.right <= map.right
                            && r.top >= map.top && r.bottom <= map.bottom;
        const marks = [...document.querySelectorAll('.viper-rank'),
                       ...document.querySelectorAll('path.leaflet-interactive')];
        const shown = marks.map(e => ({e: e, r: e.getBoundingClientRect()}))
                           .filter(m => m.r.width > 0 && inside(m.r));
        return {shown: shown.length, covered: shown.filter(m => hit(m.r)).map(m =>
                (m.e.innerText || m.e.getAttribute('class') || '').trim())};
    }""", selector)


@pytest.mark.parametrize(("width", "height"), [(760, 560), (560, 560), (1000, 420)])
def test_the_places_box_covers_no_hit(browser, width: int, height: int):  # noqa: F811
    """Issue 22: the places box hid hit #3. Fitted to #1's place (and to all hits), no
    rank label or hit outline lies under the box or the layer list."""
    _require_browser()
    hits = _grid_hits()
    page = _map_page(browser, hits, width, height)
    try:
        assert page.locator(".viper-places").count() == 1
        found = _overlaps(page, ".viper-places")
        assert found["shown"] >= 18 and not found["covered"], found  # 9 labels, 9+ outlines
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"region_places_{width}x{height}.png"))
        page.get_by_role("button", name="All hits").click()
        page.wait_for_timeout(300)
        found = _overlaps(page, ".viper-places")
        assert found["shown"] >= 2 and not found["covered"], found
    finally:
        page.close()


def test_a_callout_near_the_top_stays_inside_the_map(browser):  # noqa: F811
    """Issue 22: the callout of a hit near the top edge was cut off (its picture, loaded
    after the callout opened, made it taller than the room the map had panned for)."""
    _require_browser()
    hits = _grid_hits(far=False)
    page = _map_page(browser, hits, 760, 560, thumbs={h.rank: _thumb() for h in hits})
    try:
        top = max(hits, key=lambda h: (h.center[1], -h.center[0]))
        page.locator(".viper-rank", has_text=str(top.rank)).first.click()
        page.locator(".viper-callout img").wait_for()
        page.wait_for_function("() => getComputedStyle(document.querySelector("
                               "'.leaflet-popup')).opacity === '1'")
        page.wait_for_timeout(500)  # the picture loaded, the map panned
        inside = page.evaluate("""() => {
            const p = document.querySelector('.leaflet-popup').getBoundingClientRect();
            const m = document.querySelector('.leaflet-container').getBoundingClientRect();
            return {popup: [p.left, p.top, p.right, p.bottom],
                    map: [m.left, m.top, m.right, m.bottom]}; }""")
        p, m = inside["popup"], inside["map"]
        page.screenshot(path=str(ARTIFACTS / "region_callout_top.png"))
        assert p[0] >= m[0] and p[1] >= m[1] and p[2] <= m[2] and p[3] <= m[3], inside
        assert f"#{top.rank}" in page.locator(".viper-callout").inner_text()
    finally:
        page.close()
