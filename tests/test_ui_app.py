"""The Gradio layer without a browser: layout, settings-panel parsing, weights, folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.ui import app as ui
from viper_rs.ui.catalog import Catalog
from viper_rs.ui.session import Controller, Options, Turn, app_text, threshold_control


@pytest.fixture
def controller(tmp_path: Path):
    c = Controller(Catalog(demo=((0, 128, 1.0),)),
                   Settings.from_env(cache_dir=tmp_path / "cache", sandbox_workers=1),
                   out_dir=tmp_path / "out")
    yield c
    c.close()


def test_layout_has_every_part(controller: Controller):
    import gradio as gr

    blocks = ui.build_app(controller)
    assert isinstance(blocks, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    for part in ("image-picker", "gsd", "answer-overlay", "upload", "chat", "question",
                 "regions", "evidence", "program-trace", "settings", "weights"):
        assert part in ids, part
    picker = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "image-picker")
    assert picker.value == controller.catalog.default_key


def test_settings_panel_values_become_options():
    values = ("oracle", "rules", " http://x/v1 ", "m", "k", "0.4", 10, "", 50, 900.0, False)
    opts = ui._options(values)
    assert opts == Options(detector="oracle", planner="rules", llm_base_url=" http://x/v1 ",
                           llm_model="m", llm_api_key="k", score_threshold=0.4,
                           min_region_m2=10.0, next_to_m=None, small_max_m2=50.0,
                           large_min_m2=900.0, sam=False)
    settings = opts.settings(Settings())
    assert settings.llm_base_url == "http://x/v1" and settings.score_threshold == 0.4
    assert settings.llm_api_key.get_secret_value() == "k"
    assert "k" not in repr(opts)


@pytest.mark.parametrize("field, value, message", [
    (5, "abc", "Score threshold must be a number"),
    (7, "nan", "'next to' distance \\(m\\) must be a finite number"),
])
def test_bad_panel_numbers_are_named(field: int, value: str, message: str):
    values = ["auto", "auto", "", "", "", "", 4, 10, 100, 500, True]
    values[field] = value
    with pytest.raises(InputError, match=message):
        ui._options(tuple(values))


@pytest.mark.parametrize("field, value, message", [
    (5, "0.95", None),
    (5, "1.5", "Score threshold must be from 0 to 1, got 1.5"),
    (5, "-0.1", "Score threshold must be from 0 to 1, got -0.1"),
    (6, -5, "Smallest region (m2) must be 0 or more, got -5"),
    (7, -1, "'next to' distance (m) must be 0 or more, got -1"),
    (8, 600, "small < (m2) must be less than large ≥ (m2), got 600 and 500"),
    (9, 100, "small < (m2) must be less than large ≥ (m2), got 100 and 100"),
    (9, -2, "large ≥ (m2) must be 0 or more, got -2"),
])
def test_out_of_range_panel_values_are_named(field: int, value: object, message: str | None):
    values: list = ["auto", "auto", "", "", "", "", 4, 10, 100, 500, True]
    values[field] = value
    options = ui._options(tuple(values))
    problems = options.problems(Settings())
    assert problems == ([] if message is None else [message])
    if message is not None:
        with pytest.raises(InputError, match=re.escape(message)):
            options.check(Settings())


def test_gsd_field():
    assert ui._gsd("") is None and ui._gsd(None) is None and ui._gsd("0") is None
    assert ui._gsd(" 0.3 ") == 0.3 and ui._gsd(0.3) == 0.3
    with pytest.raises(InputError, match="GSD"):
        ui._gsd("thirty cm")
    for bad in (-1, 0.001, 20000):
        with pytest.raises(InputError, match=r"GSD \(m/px\) must be from 0.01 to 10000"):
            ui._gsd(bad)


def test_score_threshold_is_disabled_for_detectors_without_scores(tmp_path: Path):
    settings = Settings(cache_dir=tmp_path)  # no weights: auto resolves to spectral
    usable, info = threshold_control("spectral", settings)
    assert not usable and "spectral detector has no score threshold" in info
    usable, info = threshold_control("auto", settings)
    assert not usable and "spectral" in info
    assert not threshold_control("oracle", settings)[0]
    assert threshold_control("clip", settings) == (True, "0-1; blank: calibrated per concept")


def test_cli_flags_read_as_the_apps_fields():
    from viper_rs.core.wording import format_area
    from viper_rs.planning import _NOT_CONFIGURED

    for text in (format_area(12.0, "px"), _NOT_CONFIGURED,
                 "run `python -m viper_rs weights --download clip` or pass --clip-checkpoint",
                 "x: --gsd must be a positive number of metres"):
        out = app_text(text)
        assert not re.search(r"--(gsd|llm-base-url|llm-model|clip-checkpoint)\b", out), out
    assert "GSD (m/px) field, e.g. 0.3" in app_text(format_area(12.0, "px"))
    assert "Settings › LLM endpoint (base URL)" in app_text(_NOT_CONFIGURED)
    assert format_area(12.0, "px").count("--gsd 0.3") == 1  # the CLI keeps its flag


def test_weights_table_says_found_or_missing(tmp_path: Path):
    settings = Settings(cache_dir=tmp_path)
    text = ui.weights_markdown(settings)
    assert text.count("**missing**") == 3 and "auto -> spectral" in text
    # Short cells (a long text squeezed the status column to "mis/sin/g"): how to get each
    # missing model is a list under the table.
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [c.strip() for row in rows for c in row.strip("|").split("|")]
    assert max(map(len, cells)) <= 40, max(cells, key=len)
    assert "- GRAFT ViT-B/16 (NAIP, pixel-level): GRAFT weights are released" in text
    assert "- SAM ViT-B: get it with `python -m viper_rs weights --download sam`" in text
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "ViT-B-16.pt").write_bytes(b"x")
    text = ui.weights_markdown(settings)
    assert text.count("**found**") == 1 and str(weights / "ViT-B-16.pt") in text
    assert "auto -> clip" in text


def test_image_folders(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("VIPER_RS_IMAGE_FOLDER", raising=False)
    repo = tmp_path / "main"
    repo.mkdir()
    assert ui.default_folders(repo) == []
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert ui.default_folders(repo) == [(tmp_path / "shared" / "data").resolve()]
    monkeypatch.setenv("VIPER_RS_IMAGE_FOLDER", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert ui.default_folders(repo) == [tmp_path / "a", tmp_path / "b"]


def test_command_line():
    args = ui.parse_args(["--port", "9000", "--folder", "x", "--folder", "y",
                          "--detector", "spectral"])
    assert args.port == 9000 and args.folder == [Path("x"), Path("y")]
    assert args.detector == "spectral" and args.planner is None and args.host == "127.0.0.1"
    with pytest.raises(SystemExit):
        ui.parse_args(["--detector", "magic"])


def test_chat_messages_of_a_turn(controller: Controller):
    turn = controller.ask(controller.catalog.default_key, "Is there a road?",
                          Options(detector="spectral", planner="rules"))
    program, reply = ui._messages(turn)
    assert program["metadata"]["title"] == "Program (rules)"
    assert program["content"].startswith("```python\ndef execute_command")
    assert reply == {"role": "assistant", "content": turn.message}
    assert ui._messages(Turn("Type a question")) == [
        {"role": "assistant", "content": "Type a question"}]


# ---------------------------------------------------------------------- issue 22: weights texts
#: A variable named twice in one clause ("set VIPER_RS_X … or set VIPER_RS_X").
_TWICE = re.compile(r"(VIPER_RS_\w+)\b[^;]*?(?: or |, | / )(?:set )?\1\b")
#: Model settings and the flag the CLI names them by.
_WEIGHT_FLAGS = {"VIPER_RS_GRAFT_CHECKPOINT": "--graft-checkpoint",
                 "VIPER_RS_CLIP_CHECKPOINT": "--clip-checkpoint",
                 "VIPER_RS_CLIP_PRETRAINED": "--clip-pretrained",
                 "VIPER_RS_SAM_CHECKPOINT": "--sam-checkpoint"}
_WEIGHT_SCENARIOS = {
    "nothing": {}, "graft path broken": {"graft_checkpoint": "/nope/g.ckpt"},
    "clip path broken": {"clip_checkpoint": "/nope/c.pt"},
    "sam path broken": {"sam_checkpoint": "/nope/s.pth"},
    "building path broken": {"building_checkpoint": "/nope/b.pt"},
    "other clip model": {"clip_model": "ViT-L-14"},
}


def _weights_texts(settings: Settings) -> list[str]:
    """Every weights message of the CLI for ``settings`` (notes, auto's reason, the GRAFT,
    CLIP and building model errors)."""
    from viper_rs.core import weights as wts
    from viper_rs.core.errors import ConfigError
    from viper_rs.vision.build import NO_GRAFT_CHECKPOINT, WEIGHTS_HINT

    texts = [e["note"] for e in wts.find_weights(settings).values() if e["note"]]
    texts += [wts.auto_reason(settings), WEIGHTS_HINT, NO_GRAFT_CHECKPOINT,
              wts.building_weights(settings)[1]]
    with pytest.raises(ConfigError) as graft:
        wts.download("graft", settings.cache_dir)
    return [*texts, str(graft.value)]


@pytest.mark.parametrize("scenario", list(_WEIGHT_SCENARIOS))
def test_weights_texts_name_each_setting_once_as_the_app_calls_it(tmp_path: Path, scenario: str):
    """Issue 22: the GRAFT text said "set VIPER_RS_GRAFT_CHECKPOINT … or set
    VIPER_RS_GRAFT_CHECKPOINT" in the app, the CLIP one named --clip-pretrained. CLI texts
    name the flags, app texts the variables (once) or fields, never a flag outside a
    command to run."""
    settings = Settings(cache_dir=tmp_path, **_WEIGHT_SCENARIOS[scenario])
    cli = [t for t in _weights_texts(settings) if t]
    for text in cli:
        assert not _TWICE.search(text), text
        for env in set(re.findall(r"VIPER_RS_\w+", text)) & set(_WEIGHT_FLAGS):
            assert _WEIGHT_FLAGS[env] in text, (env, text)  # the CLI names its flag
    for text in [*map(app_text, cli), ui.weights_markdown(settings)]:
        outside_code = re.sub(r"`[^`]*`", "", text)
        assert not re.search(r"(?<![\w-])--[a-z]", outside_code), text
        assert not _TWICE.search(text), text
    hints = [app_text(t) for t in cli if "PATH or set" in t]
    assert hints and all("before starting the app" in t for t in hints), hints


def test_every_progress_tracker_reaches_its_handler(controller: Controller):
    """Gradio hands a gr.Progress only to a parameter before ``*values``: one declared after
    it (keyword-only) is never bound, and the user sees no progress bar. The chat's answer
    handler had it so."""
    import inspect

    import gradio as gr

    blocks = ui.build_app(controller)
    tracked = set()
    for fn in blocks.fns.values():
        if fn.fn is None:
            continue
        for p in inspect.signature(fn.fn).parameters.values():
            if isinstance(p.default, gr.Progress):
                assert p.kind is p.POSITIONAL_OR_KEYWORD, (fn.fn.__name__, p.kind)
                tracked.add(fn.fn.__name__)
    assert {"on_ask", "on_area", "on_search", "on_build"} <= tracked
