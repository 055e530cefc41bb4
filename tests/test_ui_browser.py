"""Browser test: `python app.py` in a real headless Chromium driven by Playwright.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the
``playwright`` package (dev extra). It is skipped without them, unless
``VIPER_RS_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where a missing browser fails.
Screenshots go to ``artifacts/ui/`` (or ``$VIPER_RS_ARTIFACTS``).
"""

from __future__ import annotations

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

from tests.conftest import REPO

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


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory):
    """`python app.py` (README command 1's last step) on a free port."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = {**os.environ, "VIPER_RS_CACHE_DIR": str(tmp / "cache"),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
           "GRADIO_TEMP_DIR": str(tmp / "gradio"), "TMPDIR": str(tmp / "tmp")}
    (tmp / "tmp").mkdir()
    log_path = tmp / "app.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env,
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
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url} in 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
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
        (ARTIFACTS / "app.log").write_text(log_path.read_text())
    # SIGTERM closes the app like Ctrl-C: it exits and removes its evidence folder.
    assert code is not None, "app.py did not stop within 30 s of SIGTERM"
    assert not list((tmp / "tmp").glob("viper_rs_ui_*"))


@pytest.fixture(scope="module")
def page(app_url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        page.goto(app_url)
        page.locator("#question textarea").wait_for()
        try:
            yield page
        finally:
            browser.close()


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
    # The demo image is shown before any question.
    page.locator("#answer-overlay img").first.wait_for()


def test_question_with_enter_gets_answer_and_overlay(page):
    t0 = time.perf_counter()
    bot = _ask(page, "How many buildings are there?")
    seconds = time.perf_counter() - t0
    text = bot.inner_text()
    assert re.search(r"\b\d+\b", text), text
    assert "Could not" not in text, text
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
    _choose(page, "detector", "oracle")
    text = _ask(page, "How many buildings are there?").inner_text()
    assert f"Evidence: {truth} regions" in text, text
    page.screenshot(path=str(ARTIFACTS / "settings_oracle.png"), full_page=True)
    _choose(page, "detector", "auto")


@pytest.mark.data
def test_real_naip_from_the_image_list(page, shared_data):
    _choose(page, "image-picker", "data/naip/napa_naip_1m.tif")
    info = page.locator("#image-info")
    info.get_by_text("EPSG:26910").wait_for()
    text = _ask(page, "What is the area covered by trees?").inner_text()
    assert re.search(r"\d+(\.\d+)? m2", text), text
    page.screenshot(path=str(ARTIFACTS / "naip_trees.png"), full_page=True)
