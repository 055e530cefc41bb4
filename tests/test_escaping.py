"""Hostile file names (issue 23, point 5): escape sequences, an OSC 8 hyperlink, BEL, CR, a
newline and a bidi override in a file name reach neither the terminal, nor a log line, nor
the app's HTML raw; an error naming such a file stays one line."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from viper_rs.core.textsafe import SafeFormatter, safe_html, safe_text

#: Every hostile piece a name holds: CSI colour, an OSC 8 hyperlink (no "/" can be in a
#: name), BEL, CR, a newline and a right-to-left override.
HOSTILE = ("evil\x1b[31mred\x1b]8;;https:evil.example\x07link\x1b]8;;\x07"
           "\rCR\nNL\u202eabc")
#: What must never be printed raw: C0 controls but for the line ends of our own lines,
#: DEL, C1, bidi controls.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _clean(text: str) -> None:
    assert not RAW.search(text), f"raw control characters in {text!r}"


def _name(tmp_path: Path, suffix: str = ".tif", content: bytes = b"not a raster") -> Path:
    path = tmp_path / (HOSTILE + suffix)
    path.write_bytes(content)
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "VIPER_RS_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "viper_rs", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8",
                          errors="surrogateescape", timeout=120)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    _clean(proc.stdout)
    _clean(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("viper-rs: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # The name is there, escaped, on the error line itself: its newline did not split it.
    assert "evil\\x1b[31mred" in errors[0] and "\\rCR\\nNL\\u202eabc" in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("command", [
    ("ask", "{f}", "How many buildings are there?"),
    ("region", "{f}", "-q", "How many buildings are there?", "--no-progress"),
    ("index", "build", "{f}", "--out", "ix", "--quiet", "--embedder", "spectral"),
], ids=["ask", "region", "index-build"])
def test_cli_error_naming_a_hostile_file_is_one_escaped_line(tmp_path: Path, command) -> None:
    path = _name(tmp_path)
    proc = _cli(*(a.format(f=path) for a in command), cwd=tmp_path)
    _one_error_line(proc)


def test_index_build_log_lines_escape_a_hostile_folder_name(tmp_path: Path) -> None:
    """A folder with no rasters is logged (a warning naming it) and refused; every line is
    one record, the name escaped in it."""
    folder = tmp_path / HOSTILE
    folder.mkdir()
    proc = _cli("-v", "index", "build", str(folder), "--out", "ix", "--quiet",
                "--embedder", "spectral", cwd=tmp_path)
    _clean(proc.stderr)
    for line in proc.stderr.splitlines():  # no line is a piece of a split name
        assert not line.startswith(("NL", "CR")), proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING") and "evil" in ln]
    assert all("evil\\x1b[31mred" in ln and "\\u202eabc" in ln for ln in warned), proc.stderr
    _one_error_line(proc)


def test_safe_formatter_makes_each_record_one_safe_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("viper_rs.test_escaping")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("%s: cannot read", HOSTILE)
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            logger.exception("reading %s failed", HOSTILE)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    _clean(text)
    first = text.splitlines()[0]
    assert first.startswith("WARNING viper_rs.test_escaping: evil\\x1b[31mred")
    assert first.endswith("\\u202eabc: cannot read")
    assert "Traceback (most recent call last):" in text  # tracebacks keep their lines


def test_configure_logging_installs_the_safe_formatter_once() -> None:
    code = ("import logging, sys\n"
            "from viper_rs.core.textsafe import configure_logging\n"
            "assert configure_logging(logging.WARNING)\n"
            "assert not configure_logging(logging.WARNING)\n"
            "logging.getLogger('x').warning('name %s', sys.argv[1])\n")
    proc = subprocess.run([sys.executable, "-c", code, HOSTILE], capture_output=True,
                          text=True, encoding="utf-8", timeout=60)
    assert proc.returncode == 0, proc.stderr
    _clean(proc.stderr)
    assert proc.stderr.count("\n") == 1 and "evil\\x1b[31mred" in proc.stderr


def test_an_unexpected_error_prints_a_safe_traceback(monkeypatch, capsys) -> None:
    """An exception no command expected still cannot print a file name raw."""
    from viper_rs import cli

    def boom(args):
        raise RuntimeError(f"{HOSTILE}: unexpected")

    monkeypatch.setattr(cli, "_run_image_command", boom)
    assert cli.main(["ask", "x.tif", "q"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "evil\\x1b[31mred" in err
    _clean(err)


def test_safe_helpers() -> None:
    assert safe_text("a\nb\x1b[0m\u202e") == "a\\nb\\x1b[0m\\u202e"
    assert safe_html('<b x="1">\x07') == "&lt;b x=&quot;1&quot;&gt;\\x07"
    assert "\\x1b" in safe_text(HOSTILE) and not RAW.search(safe_html(HOSTILE))


# ---------------------------------------------------------------------------- the app
def _rgb_png(path: Path) -> Path:
    from viper_rs.synthetic import make_scene

    data = make_scene(0, size=64).image.data
    Image.fromarray(np.ascontiguousarray(np.moveaxis(data[:3], 0, -1))).save(path, "PNG")
    return path


@pytest.fixture
def controller(tmp_path: Path):
    from viper_rs.core.config import Settings
    from viper_rs.ui.catalog import Catalog
    from viper_rs.ui.session import Controller

    settings = Settings.from_env(cache_dir=tmp_path / "cache", sandbox_workers=1)
    c = Controller(Catalog(demo=()), settings, out_dir=tmp_path / "out")
    yield c
    c.close()


def test_app_upload_with_a_hostile_name_renders_escaped(controller, tmp_path: Path) -> None:
    from viper_rs.ui.evidence import plain_text

    path = _rgb_png(tmp_path / (HOSTILE + ".png"))
    key, message = controller.load_upload(path, gsd=1.0)
    assert key is not None, message
    _clean(message)
    _clean(key)
    shown = plain_text(message)  # what the chat shows
    assert "evil\\x1b[31mred" in shown and "\\u202eabc.png" in shown, shown
    assert key in controller.catalog.keys  # the picker lists it by its safe key
    assert controller.catalog.open(key).width == 64  # ...and it opens the real file
    bad = _name(tmp_path, ".png", b"\x89PNG\r\n\x1a\n broken")
    key, message = controller.load_upload(bad)
    assert key is None and message.startswith("Could not use the upload")
    _clean(message)
    assert "\\u202eabc.png" in plain_text(message)


def test_app_folder_listing_keys_are_safe(tmp_path: Path) -> None:
    from viper_rs.ui.catalog import Catalog

    root = tmp_path / "imgs"
    root.mkdir()
    _rgb_png(root / (HOSTILE + ".png"))
    _rgb_png(root / "plain.png")
    catalog = Catalog([root], demo=())
    assert len(catalog.keys) == 2
    for key in catalog.keys:
        _clean(key)
        assert catalog.open(key, 1.0).width == 64


def test_search_hit_html_escapes_the_source_name() -> None:
    from viper_rs.ui.search import result_rows
    from viper_rs.ui.search_map import callout_html

    hit = SimpleNamespace(rank=1, score=0.5, center=(10.0, 50.0), window=(0, 0, 64, 64),
                          source_name=f"<img src=x onerror=alert(1)>{HOSTILE}.tif",
                          datetime=None)
    html = callout_html(hit)
    _clean(html)
    assert "<img src=x" not in html and "&lt;img src=x" in html
    rows = result_rows([hit])
    _clean(str(rows))
