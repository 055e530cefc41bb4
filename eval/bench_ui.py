"""``python -m eval.bench_ui``: what the app adds to an answer, and how fast it starts.

Times the app's own work around the agent (no browser): listing the image folders,
warm-up (default agent + demo image), the first and later questions on the demo scene
through the controller, and the share of each answer spent on the evidence (overlay,
region table, GeoJSON + GeoPackage + JSON files). Then the overlay alone on a large image,
and the answer map (Leaflet page with the image and the regions' polygons) next to the
overlay: on a demo answer and on a 4000 x 3000 px image with 400 regions.
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
from typing import Any

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.timing import ms_since

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUESTIONS = [
    "How many buildings are there?",
    "Is there a water area next to a road?",
    "What is the area covered by trees?",
    "Are there more buildings than parkings?",
    "Is there a large building?",
    "How many roads are there?",
]


def run(rounds: int = 3, large_px: tuple[int, int] = (3000, 4000),
        n_regions: int = 400) -> dict:
    """The figures as a dict (milliseconds unless named otherwise)."""
    from viper_rs.core.geo import GeoImage
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
            demo_answer = controller.ask(key, "Is there a water area next to a road?",
                                         options).answer
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
        out["map"] = {"demo": _map_cost(catalog.open(key), demo_answer, rounds),
                      "large": _map_cost(big, _many_regions(big, n_regions), rounds)}
    return out


def _map_cost(image: Any, answer: Any, rounds: int) -> dict:
    """The answer map's cost next to the overlay's: median ms of :func:`evidence.overlay`
    and of :func:`answer_map.map_html` (given the overlay's picture), the map's size."""
    from viper_rs.ui import answer_map, evidence

    overlay_ms, map_ms = [], []
    for _ in range(max(1, rounds)):
        t0 = time.perf_counter()
        base, _ = evidence.overlay(image, answer)
        overlay_ms.append(ms_since(t0, 1))
        t0 = time.perf_counter()
        doc = answer_map.map_html(image, answer, base)
        map_ms.append(ms_since(t0, 1))
    data = answer_map.map_data(image, answer, base)
    return {"image_px": [image.width, image.height], "regions": len(answer.regions),
            "drawn": len(data["regions"]), "overlay_ms": statistics.median(overlay_ms),
            "map_ms": statistics.median(map_ms), "map_kb": round(len(doc) / 1024, 1)}


def _many_regions(image: Any, n: int) -> Any:
    """An answer with ``n`` blob regions (irregular, some with holes) spread over
    ``image``, vectorised as the detectors do."""
    from viper_rs.core.answer import Answer
    from viper_rs.core.regions import Region
    from viper_rs.vision.components import mask_polygon

    rng = np.random.default_rng(1)
    h, w = image.shape
    yy, xx = np.mgrid[-40:41, -40:41]
    regions = []
    for i in range(n):
        r0, c0 = int(rng.integers(0, h - 81)), int(rng.integers(0, w - 81))
        radius = 20 + 18 * np.sin(np.arctan2(yy, xx) * rng.integers(3, 8) + rng.random() * 6)
        crop = (np.hypot(yy, xx) < radius) & (rng.random(yy.shape) > 0.05)
        regions.append(Region(crop=crop, origin=(r0, c0), image_shape=(h, w),
                              label="building", query=("building", "water", "tree")[i % 3],
                              score=float(rng.random()), area_m2=float(crop.sum() * 0.25),
                              polygon=mask_polygon(image, crop, (r0, c0)), id=i + 1))
    return Answer(question="bench", answer="yes", value=True, kind="bool", regions=regions)


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
    for name, m in r["map"].items():
        print(f"answer map, {name} ({m['image_px'][0]}x{m['image_px'][1]} px, "
              f"{m['regions']} regions, {m['drawn']} drawn): map {m['map_ms']} ms, "
              f"{m['map_kb']} KB HTML; overlay {m['overlay_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
