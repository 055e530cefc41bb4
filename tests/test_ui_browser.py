"""Browser test: `python app.py` in a real headless Chromium driven by Playwright.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the
``playwright`` package (dev extra). It is skipped without them, unless
``VIPER_RS_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where a missing browser fails.
Screenshots go to ``artifacts/ui/`` (or ``$VIPER_RS_ARTIFACTS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO

CHROMIUM = Path(os.environ.get("VIPER_RS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("VIPER_RS_ARTIFACTS", REPO / "artifacts")) / "ui"
ANSWER_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.browser


def _require_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("VIPER_RS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (VIPER_RS_REQUIRE_BROWSER=1)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(tmp: Path, *args: str) -> tuple[subprocess.Popen, str, Path]:
    """Start `python app.py ARGS` on a free port (caches and temporary files under
    ``tmp``) and wait until it serves; returns the process, its URL and its log's path.
    Fails the test when the app exits first or does not serve within 180 s."""
    port = _free_port()
    env = {**os.environ, "VIPER_RS_CACHE_DIR": str(tmp / "cache"),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
           "GRADIO_TEMP_DIR": str(tmp / "gradio"), "TMPDIR": str(tmp / "tmp")}
    (tmp / "tmp").mkdir()
    log_path = tmp / "app.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), *args], cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return proc, url, log_path
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url} in 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def _serve(tmp: Path, *args: str, log_name: str = "app.log"):
    """`python app.py ARGS` on a free port; yields its URL, stops it with SIGTERM (its log
    is kept as ``artifacts/ui/<log_name>``)."""
    proc, url, log_path = _start_app(tmp, *args)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / log_name).write_text(log_path.read_text())
    # SIGTERM closes the app like Ctrl-C: it exits and removes its evidence folder.
    assert code is not None, "app.py did not stop within 30 s of SIGTERM"
    assert not list((tmp / "tmp").glob("viper_rs_ui_*"))


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory):
    """`python app.py` (README command 1's last step) on a free port."""
    _require_browser()
    with _serve(tmp_path_factory.mktemp("app")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Playwright's sync API runs once per thread)."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                      headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _open_page(browser, url: str):
    """A new page on the app at ``url``, once the chat box is shown."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.locator("#question textarea").wait_for()
    return page


@pytest.fixture(scope="module")
def page(browser, app_url: str):
    page = _open_page(browser, app_url)
    try:
        yield page
    finally:
        page.close()


def _ask(page, question: str):
    """Type ``question``, press Enter, and return the newest bot message once it is final."""
    bots = page.locator("#chat .message-row.bot-row")
    before = bots.count()
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(
        """([sel, n]) => {
            const rows = document.querySelectorAll(sel);
            if (rows.length <= n) return false;
            const text = rows[rows.length - 1].innerText;
            return text.trim().length > 0 && !text.includes('Working on it');
        }""",
        arg=["#chat .message-row.bot-row", before], timeout=ANSWER_TIMEOUT_MS,
    )
    return bots.last


def test_page_loads_with_demo_image(page):
    picker = page.locator("#image-picker input")
    assert picker.input_value().startswith("demo: synthetic scene 0")
    assert "px" in page.locator("#image-info").inner_text()
    # A georeferenced image needs no GSD: the field is read-only and blank (not a
    # misleading "0"), showing the image's own in grey (demo scene 0: 1 m).
    gsd = page.locator("#gsd textarea, #gsd input").first
    assert gsd.input_value() == "" and gsd.is_disabled()
    assert gsd.get_attribute("placeholder") == "1 (the image's)"
    assert "georeferenced: not needed" in page.locator("#gsd").inner_text()
    # The demo image is shown before any question.
    page.locator("#answer-overlay img").first.wait_for()


def test_question_with_enter_gets_answer_and_overlay(page):
    from viper_rs.synthetic import BUILDING_CLASSES, make_scene

    t0 = time.perf_counter()
    bot = _ask(page, "How many buildings are there?")
    seconds = time.perf_counter() - t0
    text = bot.inner_text()
    assert "Could not" not in text, text
    # The first answer a newcomer sees (the default detector on demo scene 0) is the
    # scene's exact truth.
    truth = len(make_scene(0, size=384, gsd=1.0).objects_of(*BUILDING_CLASSES))
    assert re.search(rf"\b{truth} buildings\b", text) and f"Evidence: {truth} regions" in text, text
    # Overlay: the legend names the query, and mask layers sit on the base image.
    overlay = page.locator("#answer-overlay")
    overlay.get_by_text(re.compile(r"building.*\(\d+\)")).first.wait_for()
    assert overlay.locator("img").count() >= 2
    # The region table and the evidence downloads are filled in.
    assert "building" in page.locator("#regions").inner_text()
    evidence = re.sub(r"\s", "", page.locator("#evidence").inner_text())
    assert "evidence.geojson" in evidence and "evidence.gpkg" in evidence
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "answer.png"), full_page=True)
    (ARTIFACTS / "timing.json").write_text(json.dumps({"answer_s": round(seconds, 2)}))


def _answer_map(page):
    """The Playwright frame of the Chat tab's answer map (a sandboxed srcdoc iframe)."""
    return page.locator("#answer-map iframe").element_handle().content_frame()


def _region_cell(page, row: int, col: int):
    return page.locator(f'#regions [data-testid="cell-{row}-{col}"]')


def test_answer_map_draws_every_region_links_the_table_and_goes_fullscreen(page):
    text = _ask(page, "Is there a water area next to a road?").inner_text()
    n = int(re.search(r"Evidence: (\d+) regions?", text).group(1))
    assert n >= 2, text
    page.wait_for_function("n => document.querySelectorAll("
                           "'#regions [role=row].virtual-row').length === n", arg=n)
    frame = _answer_map(page)
    # One polygon per table row, on the image itself, one layer per query.
    frame.wait_for_function("""n => document.querySelectorAll('path.leaflet-interactive')
        .length === n && [...document.querySelectorAll('img.leaflet-image-layer')]
        .some(i => i.complete && i.naturalWidth > 0)""", arg=n)
    layers = frame.locator(".leaflet-control-layers-overlays").inner_text()
    assert "water area" in layers and "road" in layers, layers
    # Water is blue on the map and in the overlay's legend alike.
    strokes = frame.evaluate("""() => [...document.querySelectorAll('path.leaflet-interactive')]
        .map(p => p.getAttribute('stroke'))""")
    assert "#1f78b4" in strokes or "#9e9e9e" in strokes, strokes
    # A table row click highlights its polygon (thicker yellow outline) and zooms to it.
    region_id = _region_cell(page, n - 1, 0).inner_text().strip()
    _region_cell(page, n - 1, 1).click()
    frame.wait_for_function("""id => { const p = document.querySelector('path.viper-highlight');
        return p && p.getAttribute('data-id') === id && p.getAttribute('stroke-width') === '5'
        && document.querySelectorAll('path.viper-highlight').length === 1; }""",
                            arg=region_id)
    assert frame.locator(".leaflet-popup").inner_text().find(f"#{region_id}") >= 0
    # Fullscreen: the map frame covers the window, with every region still drawn.
    frame.locator(".viper-full-button").click()
    page.wait_for_function("""() => { const r = document.querySelector('#answer-map iframe')
        .getBoundingClientRect(); return r.left <= 0 && r.top <= 0 &&
        r.right >= document.documentElement.clientWidth &&
        r.bottom >= document.documentElement.clientHeight; }""")
    frame.wait_for_function("n => document.querySelectorAll('path.leaflet-interactive')"
                            ".length === n", arg=n)
    frame.wait_for_function("() => innerWidth > 1000 && document.querySelector("
                            "'.leaflet-overlay-pane svg').getBoundingClientRect().width"
                            " >= innerWidth")  # the map has been resized and redrawn
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # the frame (another process) repaints at its new size
    page.screenshot(path=str(ARTIFACTS / "answer_map_fullscreen.png"))
    frame.locator(".viper-full-button").click()
    page.wait_for_function("() => document.querySelector('#answer-map iframe')"
                           ".getBoundingClientRect().width < innerWidth")
    page.screenshot(path=str(ARTIFACTS / "answer_map.png"), full_page=True)


def test_unplannable_question_is_a_chat_message(page):
    text = _ask(page, "Write me a poem about the sea").inner_text()
    assert "Could not answer" in text, text
    page.screenshot(path=str(ARTIFACTS / "unplannable.png"), full_page=True)


def test_corrupt_upload_is_a_chat_message(page, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00garbage" * 64)
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    message = page.locator("#chat .message").filter(has_text="Could not use the upload")
    message.first.wait_for(timeout=60_000)
    text = message.first.inner_text()
    assert "broken.tif" in text and "not a readable image" in text, text
    page.screenshot(path=str(ARTIFACTS / "corrupt_upload.png"), full_page=True)
    # The app is still up: another question is answered.
    assert "Could not" not in _ask(page, "Is there a road?").inner_text()


def test_vrt_upload_named_tif_is_refused(page, tmp_path):
    """Issue 23: a VRT renamed .tif naming a raster on the server is refused, not read."""
    target = sorted((DATA / "naip").glob("*.tif"))[0] if (DATA / "naip").is_dir() else "/dev/zero"
    vrt = tmp_path / "innocent.tif"
    vrt.write_text('<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand '
                   'dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="0">'
                   f"{target}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>"
                   "</VRTRasterBand></VRTDataset>")
    page.locator("#upload input[type=file]").set_input_files(str(vrt))
    message = page.locator("#chat .message").filter(has_text="Could not use the upload") \
        .filter(has_text="innocent.tif")
    message.first.wait_for(timeout=60_000)
    text = message.first.inner_text()
    assert "only GeoTIFF/COG, PNG and JPEG" in text, text
    page.screenshot(path=str(ARTIFACTS / "vrt_upload.png"), full_page=True)


def test_one_band_upload_says_at_once_that_it_cannot_be_answered(page, tmp_path):
    """Issue 22: a one-band raster was "Loaded" and refused only when asked."""
    import numpy as np
    import rasterio

    dsm = tmp_path / "dsm_1band.tif"
    with rasterio.open(dsm, "w", driver="GTiff", width=32, height=32, count=1,
                       dtype="float32") as ds:
        ds.write(np.ones((1, 32, 32), dtype=np.float32))
    page.locator("#upload input[type=file]").set_input_files(str(dsm))
    message = page.locator("#chat .message").filter(has_text="Loaded dsm_1band.tif")
    message.first.wait_for(timeout=60_000)
    text = message.first.inner_text()
    assert "The current detector cannot answer questions about it" in text, text
    assert "dsm_1band.tif has 1 band; the spectral detector needs red, green and blue" in text
    assert "Ask a question about it" not in text
    _choose(page, "image-picker", "demo: synthetic scene 0 (384 px, 1 m)")


def _choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the dropdown ``elem_id`` (typing filters the list)."""
    field = page.locator(f"#{elem_id} input")
    field.click()
    field.fill(option)
    page.get_by_role("option", name=option, exact=True).click()
    assert field.input_value() == option


def test_program_and_trace_are_shown(page):
    _ask(page, "Is there a water area next to a road?")
    page.locator("#program-trace").get_by_text("Program and trace").click()
    code = page.locator("#program-trace .cm-content").first
    code.wait_for()
    assert "def execute_command" in code.inner_text()
    assert "find" in page.locator("#program-trace").inner_text()


def test_settings_panel_oracle_detector_gives_the_exact_count(page):
    from viper_rs.synthetic import BUILDING_CLASSES, make_scene

    truth = len(make_scene(0, size=384, gsd=1.0).objects_of(*BUILDING_CLASSES))
    page.locator("#settings").get_by_text("Settings", exact=True).click()
    assert "auto -> spectral" in page.locator("#weights").inner_text()
    # The weights table is readable: no word of its model, role and status columns is
    # broken over two lines ("mis/sin/g" before issue 22).
    page.locator("#weights td").first.wait_for()
    broken = page.evaluate("""() => { const out = [];
        for (const td of document.querySelectorAll('#weights td:not(:nth-child(4))')) {
            const walk = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
            for (let node = walk.nextNode(); node; node = walk.nextNode()) {
                for (const m of node.data.matchAll(/\\S+/g)) {
                    const range = document.createRange();
                    range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
                    if (range.getClientRects().length > 1) out.push(m[0]);
                } } }
        return out; }""")
    assert not broken, broken
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#weights").screenshot(path=str(ARTIFACTS / "weights_table.png"))
    _choose(page, "detector", "oracle")
    text = _ask(page, "How many buildings are there?").inner_text()
    assert f"Evidence: {truth} regions" in text, text
    page.screenshot(path=str(ARTIFACTS / "settings_oracle.png"), full_page=True)
    _choose(page, "detector", "auto")


@pytest.mark.data
def test_real_naip_from_the_image_list(page, shared_data):
    from viper_rs.ui.catalog import Catalog

    # The open list shows every image without typing (with the real data there are more
    # than the 100 entries Gradio shows by default), and the NAIP tile is picked from it.
    keys = Catalog([shared_data.resolve()]).keys
    assert len(keys) > 100, f"the real data should list more than 100 images, got {len(keys)}"
    field = page.locator("#image-picker input")
    field.click()
    listbox = page.get_by_role("listbox")
    listbox.wait_for()
    shown = listbox.get_by_role("option").evaluate_all(
        "os => os.map(o => o.innerText.replace(/^\u2713\\s*/, '').trim())")  # selected: a tick
    assert not set(keys) - set(shown), f"{len(shown)} shown, {len(set(keys) - set(shown))} missing"
    listbox.get_by_role("option", name="data/naip/napa_naip_1m.tif", exact=True).click()
    assert field.input_value() == "data/naip/napa_naip_1m.tif"
    info = page.locator("#image-info")
    info.get_by_text("EPSG:26910").wait_for()
    text = _ask(page, "What is the area covered by trees?").inner_text()
    assert re.search(r"\d+(\.\d+)? m2", text), text
    page.screenshot(path=str(ARTIFACTS / "naip_trees.png"), full_page=True)


# ---------------------------------------------------------------------------- region search
@pytest.fixture(scope="module")
def naip_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spectral index of ../shared/data's NAIP and aerial tiles (512 m chips), via the CLI."""
    _require_browser()
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent (it sits beside the clone in CI)")
    out = tmp_path_factory.mktemp("naip_index") / "index"
    subprocess.run(
        [sys.executable, "-m", "viper_rs", "index", "build", str(DATA / "naip"),
         str(DATA / "aerial"), "--out", str(out), "--embedder", "spectral", "--chip-m", "512",
         "--quiet"], cwd=REPO, check=True, capture_output=True, timeout=600,
    )
    return out


@pytest.fixture(scope="module")
def region_page(tmp_path_factory: pytest.TempPathFactory, browser, naip_index: Path):
    """A browser page on `python app.py --index <naip_index>`."""
    tmp = tmp_path_factory.mktemp("region_app")
    with _serve(tmp, "--index", str(naip_index), "--no-warmup",
                log_name="region_app.log") as url:
        page = _open_page(browser, url)
        try:
            yield page
        finally:
            page.close()


def _map_frame(page):
    """The Playwright frame of the results map (a sandboxed srcdoc iframe)."""
    handle = page.locator("#region-map iframe").element_handle()
    return handle.content_frame()


def _cell(page, row: int, col: int | str):
    """A body cell of the results table (Gradio's virtual table: grid cells, not <td>);
    ``col`` is an index or a column name of ``RESULT_COLUMNS``."""
    from viper_rs.ui.search import RESULT_COLUMNS

    if isinstance(col, str):
        col = RESULT_COLUMNS.index(col)
    return page.locator(f'#region-results [data-testid="cell-{row}-{col}"]')


def _open_chip(page, rank: int, click) -> str:
    """``click()`` (which opens result ``rank``), then wait for the Chat tab with the chip
    selected and a new "Opened chip #rank" message; returns the picker's value."""
    opened = page.locator("#chat .message").filter(has_text="Opened chip #")
    before = opened.count()
    click()
    page.get_by_role("tab", name="Chat", selected=True).wait_for()
    page.wait_for_function("([n]) => document.querySelectorAll('#chat .message').length && "
                           "[...document.querySelectorAll('#chat .message')].filter("
                           "m => m.innerText.includes('Opened chip #')).length > n",
                           arg=[before])
    assert f"Opened chip #{rank} " in opened.last.inner_text()
    page.wait_for_function(
        "() => document.querySelector('#image-picker input').value.startsWith('chip: ')")
    return page.locator("#image-picker input").input_value()


@pytest.mark.data
def test_region_search_for_water_on_the_map_then_ask_about_a_chip(region_page):
    page = region_page
    page.get_by_role("tab", name="Region search").click()
    assert "364 chips" in page.locator("#region-status").inner_text()
    query = page.locator("#region-query textarea")
    query.fill("water")
    t0 = time.perf_counter()
    query.press("Enter")
    page.locator("#region-status").get_by_text("best of 364 chips").wait_for()
    frame = _map_frame(page)
    # Leaflet (inlined, no CDN) drew a footprint, a dot and a rank label for each of the 10
    # hits, over the tiles' own imagery (offline: the OpenStreetMap background fails here).
    frame.wait_for_function(
        """() => [...document.querySelectorAll('path.leaflet-interactive')]
                 .filter(p => (p.getAttribute('d') || 'M0 0') !== 'M0 0').length >= 20""")
    frame.wait_for_function("""() => document.querySelectorAll('.viper-rank').length === 10
        && [...document.querySelectorAll('img.leaflet-image-layer')]
           .some(i => i.complete && i.naturalWidth > 0)""")
    seconds = time.perf_counter() - t0
    view = _map_view(frame)
    assert view["zoom"] >= 12 and view["inside"] == view["polygons"] == 10, view
    assert page.locator("#region-results [role=row].virtual-row").count() == 10
    sources = [_cell(page, row, "source").inner_text().strip() for row in range(10)]
    assert all(s.startswith("m_4709963_") or s == "ms2.tif" for s in sources), sources
    geojson = re.sub(r"\s", "", page.locator("#region-geojson").inner_text())
    assert "water.geojson" in geojson
    # The first hit's callout: rank, score, source and a thumbnail of the chip.
    frame.locator(".viper-rank", has_text=re.compile(r"^1$")).click()
    callout = frame.locator(".viper-callout")
    callout.wait_for()
    assert "#1" in callout.inner_text() and sources[0] in callout.inner_text()
    assert frame.locator(".viper-callout img.viper-thumb").evaluate("i => i.naturalWidth") > 0
    frame.wait_for_function("() => getComputedStyle(document.querySelector("
                            "'.leaflet-popup')).opacity === '1'")  # faded in
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "region_search.png"), full_page=True)
    (ARTIFACTS / "region_timing.json").write_text(json.dumps({"search_s": round(seconds, 2)}))
    # "Ask about this chip" in the callout opens chip #1 in the Chat tab...
    button = callout.get_by_role("button", name="Ask about this chip")
    first = _open_chip(page, 1, button.click)
    # ... and so does clicking its row in the results table.
    region_tab = page.get_by_role("tab", name="Region search")
    region_tab.click()
    assert _open_chip(page, 1, _cell(page, 0, "source").click) == first
    region_tab.click()
    chip = _open_chip(page, 2, _cell(page, 1, "source").click)
    assert chip != first and chip.startswith(("chip: m_4709963_", "chip: ms2.tif")), chip
    # The chip opens in its tile (934 x 723 px at 5 m), outlined; answers count inside it.
    assert "EPSG:" in page.locator("#image-info").inner_text()
    assert re.search(r"\b(9\d\d×7\d\d|300×300) px", page.locator("#image-info").inner_text())
    assert "outlined in orange" in page.locator("#chat .message").filter(
        has_text="Opened chip #2 ").last.inner_text()
    text = _ask(page, "Is there a water area?").inner_text()
    assert "Could not" not in text and "yes" in text.lower(), text
    page.screenshot(path=str(ARTIFACTS / "region_chip_chat.png"), full_page=True)


def _map_view(frame) -> dict:
    """The results map's zoom, and how many footprints it has and shows whole."""
    return frame.evaluate("""() => { const map = window.viperMap, view = map.getBounds();
        const polys = []; map.eachLayer(l => { if (l instanceof L.Polygon) polys.push(l); });
        return {zoom: map.getZoom(), polygons: polys.length,
                inside: polys.filter(p => view.contains(p.getBounds())).length}; }""")


@pytest.mark.data
def test_region_search_hits_in_two_places_open_on_the_best(region_page):
    """"parking" finds chips in North Dakota and in Rotterdam, 7,000 km apart: the map opens
    on #1's place with the imagery (not on two dots at continent scale) and a box goes to
    the other place or to all hits."""
    page = region_page
    page.get_by_role("tab", name="Region search").click()
    query = page.locator("#region-query textarea")
    query.fill("parking")
    query.press("Enter")
    page.locator("#region-status").get_by_text("for parking").wait_for()
    frame = _map_frame(page)
    frame.wait_for_function("() => window.viperMap && "
                            "document.querySelectorAll('.viper-rank').length === 10")
    places = frame.locator(".viper-places")
    places.get_by_text(re.compile(r"Hits in \d places")).wait_for()
    frame.wait_for_function("""() => [...document.querySelectorAll('img.leaflet-image-layer')]
                               .some(i => i.complete && i.naturalWidth > 0)""")
    view = _map_view(frame)
    assert view["zoom"] >= 12 and 0 < view["inside"] < 10, view  # #1's place, zoomed in
    page.screenshot(path=str(ARTIFACTS / "region_parking.png"), full_page=True)
    places.get_by_role("button", name="All hits").click()
    frame.wait_for_function("() => !window.viperMap._animatingZoom")
    view = _map_view(frame)
    assert view["inside"] == 10 and view["zoom"] < 8, view
    places.get_by_role("button").nth(1).click()  # the second place
    frame.wait_for_function("() => window.viperMap.getZoom() >= 12")
    page.locator("#region-map").screenshot(path=str(ARTIFACTS / "region_parking_place2.png"))


def _open_settings(page) -> None:
    if not page.locator("#min-region input").is_visible():
        page.locator("#settings").get_by_text("Settings", exact=True).click()
    page.locator("#min-region input").wait_for(state="visible")


def test_out_of_range_setting_is_a_chat_message_without_error_badges(page):
    _open_settings(page)
    # The default (auto -> spectral) detector has no score threshold: the field says so.
    threshold = page.locator("#score-threshold textarea, #score-threshold input").first
    assert threshold.is_disabled()
    assert "no score threshold" in page.locator("#score-threshold").inner_text()
    field = page.locator("#min-region input")
    old = field.input_value()
    field.fill("-5")
    text = _ask(page, "How many buildings are there?").inner_text()
    assert "Smallest region (m2) must be 0 or more, got -5" in text, text
    # No red error badge or toast anywhere on the page.
    assert page.locator(".toast-body.error, [data-testid='toast-body']").count() == 0
    assert page.locator(".error").filter(has_text=re.compile("Error")).count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "settings_out_of_range.png"), full_page=True)
    field.fill(old)
    text = _ask(page, "Are there more small buildings than large buildings?").inner_text()
    assert re.search(r"\d+ small buildings? vs \d+ large buildings? → (yes|no)", text), text
    assert "`" not in text and re.search(r"Notes \(\d+\)", text), text
    page.locator("#chat .message-row.bot-row").last.get_by_text(
        re.compile(r"Notes \(\d+\)")).click()
    page.screenshot(path=str(ARTIFACTS / "answer_numbers_notes.png"), full_page=True)


def test_upload_with_a_hostile_name_is_shown_escaped(page, tmp_path):
    """Issue 23: an upload's name keeps a bidi override and C1 controls through Gradio
    (it strips only C0); the chat and the picker show them as escapes, never raw."""
    import numpy as np
    from PIL import Image

    path = tmp_path / "bidi\u202egnp.exe\u009b31m.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(path, "PNG")
    page.locator("#upload input[type=file]").set_input_files(str(path))
    message = page.locator("#chat .message").filter(has_text="Loaded bidi")
    message.first.wait_for(timeout=60_000)
    text = message.first.inner_text()
    assert "\\u202egnp.exe\\x9b31m.png" in text, text
    assert "\u202e" not in text and "\u009b" not in text, text
    picked = page.locator("#image-picker input").first.input_value()
    assert "\u202e" not in picked and "\\u202e" in picked, picked
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "hostile_name_upload.png"), full_page=True)
