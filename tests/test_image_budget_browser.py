"""Browser test (issue 23.3): a pixel-bomb upload is refused in the chat from its header, with
the estimate, the budget and the ways out, and the app goes on answering. Same markers and
fixtures as tests/test_ui_browser.py; the screenshot goes to ``artifacts/ui/``."""

from __future__ import annotations

import pytest

from tests.test_image_budget import bomb_png
from tests.test_ui_browser import (  # noqa: F401 - fixtures
    ARTIFACTS,
    _ask,
    app_url,
    browser,
    page,
)

pytestmark = pytest.mark.browser


def test_pixel_bomb_upload_is_refused_before_decoding(page, tmp_path):  # noqa: F811
    bomb = bomb_png(tmp_path / "bomb.png")  # 10,000 x 10,000 px in 0.3 MB
    page.locator("#upload input[type=file]").set_input_files(str(bomb))
    message = page.locator("#chat .message").filter(has_text="Could not use the upload")
    message.first.wait_for(timeout=60_000)
    text = message.first.inner_text()
    assert "bomb.png" in text and "10,000 x 10,000 px" in text, text
    assert "over the 6.0 GB budget" in text and "VIPER_RS_IMAGE_MAX_MEMORY_MB" in text, text
    assert "crop it" in text, text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pixel_bomb_upload.png"), full_page=True)
    # the app is still up: another question is answered
    assert "Could not" not in _ask(page, "Is there a road?").inner_text()
