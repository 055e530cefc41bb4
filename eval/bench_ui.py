"""``python -m eval.bench_ui``: what the app adds to an answer, and how fast it starts.

Times the app's own work around the agent (no browser): listing the image folders,
warm-up (default agent + demo image), the first and later questions on the demo scene
through the controller, and the share of each answer spent on the evidence (overlay,
region table, GeoJSON + GeoPackage + JSON files). Then the overlay alone on a large image.
Offline stack: spectral detector, rule planner.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from viper_rs.config import Settings
from viper_rs.timing import ms_since

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUESTIONS = [
    "How many buildings are there?",
    "Is there a water area next to a road?",
    "What is the area covered by trees?",
    "Are there more buildings than parkings?",
    "Is there a large building?",
    "How many roads are there?",
]


def run(rounds: int = 3, large_px: tuple[int, int] = (4000, 3000)) -> dict:
    """The figures as a dict (milliseconds unless named otherwise)."""
    from viper_rs.geo import GeoImage
    from viper_rs.ui import evidence
    from viper_rs.ui.catalog import Catalog
    from viper_rs.ui.session import Controller, Options

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(cache_dir=Path(tmp) / "cache")
        folders = [DATA] if DATA.is_dir() else []
        t0 = time.perf_counter()
        catalog = Catalog(folders)
        out["catalog_ms"] = ms_since(t0, 1)
        out["images_listed"] = len(catalog.keys)
        controller = Controller(catalog, settings, out_dir=Path(tmp) / "out")
        options = Options(detector="spectral", planner="rules")
        try:
            t0 = time.perf_counter()
            controller.warm_up(options)
            out["warm_up_ms"] = ms_since(t0, 1)
            key = catalog.default_key
            first = []
            later, share = [], []
            for r in range(rounds):
                for q in QUESTIONS:
                    t0 = time.perf_counter()
                    turn = controller.ask(key, q, options)
                    total = time.perf_counter() - t0
                    if not turn.ok:
                        raise SystemExit(f"{q!r} failed: {turn.message}")
                    agent_s = turn.answer.timings["total_ms"] / 1000
                    (first if r == 0 else later).append(total)
                    share.append(max(0.0, total - agent_s) / total)
            out["first_round_ms"] = [round(s * 1000, 1) for s in first]
            out["later_median_ms"] = round(statistics.median(later) * 1000, 1) if later else None
            out["app_share_median"] = round(statistics.median(share), 3)
        finally:
            controller.close()
        h, w = large_px
        rng = np.random.default_rng(0)
        big = GeoImage.from_array(rng.integers(0, 255, (3, h, w), dtype=np.uint8), gsd=0.5)
        t0 = time.perf_counter()
        base, _ = evidence.overlay(big, None)
        out["large_overlay"] = {"image_px": [w, h], "display_px": list(base.shape[1::-1]),
                                "ms": ms_since(t0, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m eval.bench_ui", description=__doc__)
    p.add_argument("--rounds", type=int, default=3, help="times each question is asked")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = run(rounds=args.rounds)
    if args.json:
        print(json.dumps(r))
        return 0
    firsts = r["first_round_ms"]
    print(f"catalog: {r['images_listed']} images listed in {r['catalog_ms']} ms")
    print(f"warm-up (agent + demo image): {r['warm_up_ms']} ms")
    print(f"first question: {firsts[0]} ms; first round median "
          f"{statistics.median(firsts):.1f} ms over {len(firsts)} questions")
    print(f"later questions: median {r['later_median_ms']} ms")
    print(f"app's share of an answer (overlay, table, evidence files): "
          f"{r['app_share_median'] * 100:.0f}% (median)")
    lo = r["large_overlay"]
    print(f"overlay of a {lo['image_px'][0]}x{lo['image_px'][1]} px image -> "
          f"{lo['display_px'][0]}x{lo['display_px'][1]}: {lo['ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
