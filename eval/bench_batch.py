"""``python -m eval.bench_batch``: questions per second of batch mode on one image.

Asks every RSVQA-HR mini question of one image (or, without the shared data, the
synthetic scene's questions) in one process, as ``ask --questions-file`` does, and
prints first-question (cold) time, median per-question time and questions/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from viper_rs.core.config import Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _questions(image_id: int, n: int):
    mini = DATA / "rsvqa_hr_mini"
    if (mini / "USGS_split_mini_questions.json").exists():
        from eval.rsvqa_data import load_split, open_tile

        recs = [r for r in load_split(mini, "mini") if r.image_id == image_id][:n]
        return f"rsvqa_hr_mini image {image_id}", open_tile(mini, recs[0].image), [r.question for r in recs]
    from viper_rs.synthetic import make_questions, make_scene

    scene = make_scene(seed=image_id)
    qs = [q.question for q in make_questions(scene, n=n, seed=image_id)]
    return f"synthetic scene seed {image_id}", scene.image, qs


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m eval.bench_batch", description=__doc__)
    p.add_argument("--image-id", type=int, default=0)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from viper_rs.agent import Agent

    what, image, questions = _questions(args.image_id, args.n)
    times, errors = [], 0
    t_start = time.perf_counter()
    with Agent(Settings.from_env()) as agent:
        t_ready = time.perf_counter()
        for q in questions:
            t0 = time.perf_counter()
            ans = agent.ask(image, q)
            times.append(time.perf_counter() - t0)
            errors += ans.error is not None
    total = time.perf_counter() - t_ready
    out = {
        "image": what,
        "size_px": [image.width, image.height],
        "questions": len(questions),
        "errors": errors,
        "agent_start_s": round(t_ready - t_start, 3),
        "first_question_s": round(times[0], 4),
        "median_question_s": round(statistics.median(times[1:] or times), 4),
        "questions_per_s": round(len(questions) / total, 2),
        "first_over_median": round(times[0] / statistics.median(times[1:] or times), 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
