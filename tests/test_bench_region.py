"""Smoke test of ``python -m eval.bench_region`` on a tiny configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_region_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    p = subprocess.run([sys.executable, "-m", "eval.bench_region", "--km2", "0.2", "--tiles", "2",
                        "--skip-ray", "--skip-real", "--json", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "scale estimate" in p.stdout and "funnel" in p.stdout
    r = json.loads(out.read_text())
    assert {"machine", "questions", "synthetic", "runs", "funnel", "memory", "scale"} <= set(r)
    assert r["synthetic"]["tiles"] == 4 and r["synthetic"]["km2"] > 0.15
    assert {(x["backend"], x["question"]) for x in r["runs"]} == {
        (b, q) for b in ("in-process", "processes") for q in r["questions"]}
    for x in r["runs"]:
        assert {"total_s", "scan_s", "chips", "km2", "chips_per_s", "km2_per_s", "answer"} <= set(x)
        assert x["chips"] > 0 and x["error"] is None
    count = [x["value"] for x in r["runs"] if x["question"] == r["questions"][0]]
    assert len(set(count)) == 1  # every backend gives the same answer
    f = r["funnel"]
    assert f["index_chips"] > 0 and len(f["runs"]) == 2
    for x in f["runs"]:
        assert 0 < x["funnel"]["chips"] <= x["full"]["chips"]
    assert [m["tiles"] for m in r["memory"]] == [1, 4]
    for m in r["memory"]:
        assert m["peak_rss_mb"] > 0 and {"scan_rss_mb", "scan_mb_per_km2", "buildings"} <= set(m)
    s = r["scale"]
    assert s["chips_per_km2"] > 15 and s["pixels_per_km2"] > 2_000_000
    assert {x["area"] for x in s["rows"]} == {"US county", "US state"}
    assert all(set(x["hours"]) == {"1", "10", "100"} for x in s["rows"])
