"""``python -m eval.bench_buildings``: how long the learned building model takes per
512 x 512 px RGB tile, by ground resolution (issue 17 asks about 1 s on this CPU).

Each case is one cold ``find(image, "buildings")`` (a fresh detector, so nothing is cached)
on a 512 x 512 px tile of the synthetic scene at that ground resolution, after one warm-up
run; then the same call again, answered from the per-image cache. Prints the seconds, the
model-grid size (inputs are resampled to the model's 0.3 m) and the ratio to 1 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

#: Ground resolutions (m/px) timed by default: drone / RSVQA-HR, aerial, NAIP, 1 m imagery.
GSDS_M: tuple[float, ...] = (0.15, 0.3, 0.6, 1.0)
GOAL_S = 1.0


def run(gsds: Sequence[float] = GSDS_M, size: int = 512, rounds: int = 3) -> list[dict[str, Any]]:
    """One row per ground resolution: median cold seconds over ``rounds``, cached ms."""
    import torch

    from viper_rs.core.config import Settings
    from viper_rs.synthetic import make_scene
    from viper_rs.vision.buildings.checkpoint import load_building_model
    from viper_rs.vision.buildings.detector import BuildingDetector

    model, _ = load_building_model()
    settings = Settings()
    rows = []
    for gsd in gsds:
        image = make_scene(seed=1, size=size, gsd=gsd).image
        BuildingDetector(settings, model=model).find(image, "buildings")  # warm-up
        cold = []
        for _ in range(rounds):
            det = BuildingDetector(settings, model=model)
            t0 = time.perf_counter()
            found = det.find(image, "buildings")
            cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        det.find(image, "buildings")
        cached_ms = (time.perf_counter() - t0) * 1000
        stats = det.result(image).stats
        s = statistics.median(cold)
        rows.append({"gsd_m": gsd, "px": size, "model_px": stats["model_px"],
                     "cold_s": round(s, 3), "model_s": round(stats["model_ms"] / 1000, 3),
                     "cached_ms": round(cached_ms, 2), "x_goal": round(s / GOAL_S, 2),
                     "buildings": len(found), "threads": torch.get_num_threads()})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench_buildings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gsd", type=float, action="append", default=None,
                   help="ground resolution(s) in m/px (default 0.15, 0.3, 0.6, 1.0)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = run(args.gsd or GSDS_M, rounds=max(1, args.rounds))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"BuildingNet find() on one 512 x 512 px RGB tile (cold; median of {args.rounds}):")
    for r in rows:
        h, w = r["model_px"]
        print(f"  {r['gsd_m']:>5g} m/px: {r['cold_s']:.2f} s ({r['x_goal']:.2f}x the {GOAL_S:g} s "
              f"goal; model {r['model_s']:.2f} s on {w}x{h} px at 0.3 m), cached "
              f"{r['cached_ms']:.1f} ms, {r['buildings']} buildings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
