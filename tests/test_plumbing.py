"""Shared plumbing (issue 14, part 5): the LRU cache, the input-file check, ms_since, sandbox
limits from the settings, and the flag / settings-panel table."""

from __future__ import annotations

import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest

from viper_rs.cli import build_parser
from viper_rs.core.config import Settings
from viper_rs.core.errors import ImageError
from viper_rs.core.files import require_file
from viper_rs.core.lru import LRU
from viper_rs.core.overrides import INDEX_FIELDS, OVERRIDES, args_overrides, panel_overrides
from viper_rs.core.timing import ms_since
from viper_rs.sandbox import Limits
from viper_rs.ui.session import Options


def test_lru_keeps_the_most_recent_and_returns_the_evicted():
    lru: LRU[str, int] = LRU(2)
    assert lru.put("a", 1) == [] and lru.put("b", 2) == []
    assert lru.get("a") == 1  # a is now the most recent
    assert lru.put("c", 3) == [2]  # b goes
    assert lru.keys() == ["a", "c"] and lru.values() == [1, 3] and len(lru) == 2
    assert "b" not in lru and lru.get("b") is None
    assert lru.put("a", 10) == [] and lru.keys() == ["c", "a"]  # replacing refreshes
    assert lru.pop("c") == 3 and lru.pop("c") is None and list(lru) == ["a"]
    lru.clear()
    assert len(lru) == 0


def test_lru_is_safe_across_threads():
    lru: LRU[int, int] = LRU(50)

    def work(base: int) -> None:
        for i in range(2000):
            lru.put(base + i % 100, i)
            lru.get(base + (i * 7) % 100)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lru) == 50


def test_require_file_names_the_problem(tmp_path: Path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    full = tmp_path / "full.tif"
    full.write_bytes(b"x")
    assert require_file(full, ImageError) == full
    cases = {tmp_path / "missing.tif": "missing.tif: no such file",
             tmp_path: "is a directory, not an image", empty: "empty.tif: file is empty"}
    for path, text in cases.items():
        with pytest.raises(ImageError, match=text):
            require_file(path, ImageError, "an image")
    with pytest.raises(ImageError, match=r"^SAM checkpoint .*: no such file$"):
        require_file(tmp_path / "x.pth", ImageError, name=f"SAM checkpoint {tmp_path / 'x.pth'}")


def test_ms_since_rounds_milliseconds():
    t0 = time.perf_counter() - 0.5
    ms = ms_since(t0)
    assert 500 <= ms < 5000 and ms == round(ms, 3)
    assert ms_since(t0, 1) == round(ms_since(t0, 1), 1)


def test_limits_defaults_are_the_settings_defaults():
    s = Settings()
    assert Limits() == Limits.from_settings(s)
    custom = Settings(sandbox_wall_s=3, sandbox_cpu_s=2, sandbox_memory_mb=256,
                      sandbox_max_output_chars=100, sandbox_max_tool_calls=7)
    limits = Limits.from_settings(custom)
    assert (limits.wall_s, limits.cpu_s, limits.memory_mb, limits.max_output_chars,
            limits.max_tool_calls) == (3, 2, 256, 100, 7)


def test_every_cli_flag_maps_to_its_setting():
    args = build_parser().parse_args([
        "ask", "x.tif", "q", "--detector", "clip", "--planner", "llm", "--small-max-m2", "5",
        "--large-min-m2", "50", "--timeout", "3", "--llm-base-url", "http://h/v1",
        "--llm-model", "m", "--llm-timeout", "9", "--llm-repairs", "1", "--no-cache",
        "--graft-checkpoint", "g.ckpt", "--clip-checkpoint", "c.pt", "--clip-model", "RN50",
        "--clip-pretrained", "openai", "--sam-checkpoint", "s.pth", "--no-sam",
        "--device", "cpu", "--calibration", "cal.json", "--threshold", "0.3",
        "--cache-dir", "cache", "--no-disk-cache", "--image-max-memory-mb", "900",
        "--image-max-time", "30",
    ])
    fields_ = [o.field for o in OVERRIDES.values() if o.flag and o.field not in INDEX_FIELDS]
    assert args_overrides(args, fields_) == {
        "detector": "clip", "planner": "llm", "small_max_m2": 5.0, "large_min_m2": 50.0,
        "sandbox_wall_s": 3.0, "llm_base_url": "http://h/v1", "llm_model": "m",
        "llm_timeout_s": 9.0, "llm_repair_attempts": 1, "llm_cache": False,
        "graft_checkpoint": Path("g.ckpt"), "clip_checkpoint": Path("c.pt"),
        "clip_model": "RN50", "clip_pretrained": "openai", "sam_checkpoint": Path("s.pth"),
        "sam": False, "device": "cpu", "calibration_file": Path("cal.json"),
        "score_threshold": 0.3, "cache_dir": Path("cache"), "disk_cache": False,
        "image_max_memory_mb": 900, "image_max_time_s": 30.0,
    }
    bare = build_parser().parse_args(["ask", "x.tif", "q"])
    assert set(args_overrides(bare, fields_).values()) == {None}
    index = build_parser().parse_args(["index", "build", "t.tif", "--out", "ix",
                                       "--max-chips", "9", "--max-time-s", "60"])
    assert args_overrides(index, INDEX_FIELDS) == {"index_max_chips": 9,
                                                   "index_max_time_s": 60.0}


def test_every_panel_field_is_a_setting_in_the_table():
    names = [f.name for f in fields(Options)]
    assert all(n in OVERRIDES for n in names)
    assert panel_overrides({"detector": "", "planner": "rules", "llm_model": "  ",
                            "llm_base_url": " u ", "score_threshold": None,
                            "next_to_m": 3, "sam": False}) == {
        "planner": "rules", "llm_base_url": "u", "next_to_m": 3.0, "sam": False}
