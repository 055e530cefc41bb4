"""``python -m eval.synthetic``: how a detector answers the synthetic scenes' questions.

Usage::

    python -m eval.synthetic [--seeds 100-129] [--n 60] [--detector auto]
                             [--size 384] [--gsd 1.0] [--examples] [--json]

For each seed, :func:`viper_rs.synthetic.make_scene` draws a scene and
:func:`~viper_rs.synthetic.make_questions` writes ``--n`` questions with exact answers;
the agent (rule planner, sandbox) answers them with ``--detector`` and each answer is
scored as ``python -m viper_rs demo`` scores it (:func:`~viper_rs.synthetic.answer_matches`:
yes/no and counts exactly, areas within 10 % or 1 m2). The report gives the accuracy per
question family (presence, count, comparison, area), counts and presence together, and
the same without the questions that name a building use (residential / commercial).

``--examples`` also asks the app's example questions (``viper_rs.ui.app.EXAMPLES``) on
the app's demo scenes (``viper_rs.ui.catalog.DEMO_SCENES``) and compares each answer
with the oracle's (the ground truth).

The demo scenes are seeds 0-2; held-out figures use other seeds (default 100-129).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from viper_rs.core.config import Settings
from viper_rs.core.detector import Detector
from viper_rs.synthetic import (
    COMMERCIAL,
    QUESTION_CONCEPTS,
    QUESTION_TYPES,
    RESIDENTIAL,
    SceneQuestion,
    answer_matches,
    make_questions,
    make_scene,
)

#: Question families as docs/synthetic.md names them.
FAMILIES = {"presence": "presence", "count": "count", "comp": "comparison", "area": "area"}


def parse_seeds(text: str) -> list[int]:
    """``"100-129"``, ``"0,1,2"`` or a mix (``"0-2,7"``) -> the seeds."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    if not out:
        raise ValueError(f"no seeds in {text!r}")
    return out


def names_use(q: SceneQuestion) -> bool:
    """Whether the question names a building use (residential / commercial building)."""
    use = {c for c, classes in QUESTION_CONCEPTS.items()
           if set(classes) <= {RESIDENTIAL, COMMERCIAL} and len(classes) == 1}
    objs = [q.spec.get("first", {}), q.spec.get("second", {})]
    words = {o.get(k) for o in objs for k in ("concept", "other") if o}
    return bool(words & use)


def _score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy per family, counts + presence, overall, with and without use questions."""

    def acc(sel: list[dict[str, Any]]) -> dict[str, float | int]:
        return {"right": sum(r["correct"] for r in sel), "n": len(sel),
                "accuracy": round(sum(r["correct"] for r in sel) / len(sel), 4) if sel else 0.0}

    out: dict[str, Any] = {}
    for label, keep in (("all", lambda r: True), ("without_use", lambda r: not r["use"]),
                        ("use_only", lambda r: r["use"])):
        sel = [r for r in rows if keep(r)]
        by = {FAMILIES[t]: acc([r for r in sel if r["type"] == t]) for t in QUESTION_TYPES}
        by["count_and_presence"] = acc([r for r in sel if r["type"] in ("count", "presence")])
        by["overall"] = acc(sel)
        out[label] = by
    return out


def evaluate(seeds: list[int], n: int = 60, detector: str = "auto", size: int = 384,
             gsd: float = 1.0, settings: Settings | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Answer ``n`` questions on each seed's scene with ``detector``; rows and scores."""
    from viper_rs.agent import Agent
    from viper_rs.vision.factory import build_detector
    from viper_rs.vision.oracle import OracleDetector

    settings = settings or Settings()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    oracle = detector == "oracle"  # the ground truth of each scene: built per scene
    det: Detector | None = None if oracle else build_detector(detector, settings)
    name = det.name if det is not None else "oracle"
    with Agent(settings, detector=det, planner="rules") if not oracle else _nothing() as shared:
        for seed in tqdm(seeds, desc="scenes", disable=not progress):
            scene = make_scene(seed, size=size, gsd=gsd)
            agent = shared or Agent(settings, detector=OracleDetector(scene, settings),
                                    planner="rules")
            for q in make_questions(scene, n=n, seed=seed, settings=settings):
                answer = agent.ask(scene.image, q.question)
                rows.append({
                    "seed": seed, "question": q.question, "type": q.type, "truth": q.answer,
                    "value": answer.value if answer.error is None else None,
                    "error": None if answer.error is None else str(answer.error),
                    "correct": answer_matches(answer.value, q) if answer.error is None else False,
                    "use": names_use(q),
                })
            if agent is not shared:
                agent.close()
    return {"config": {"seeds": seeds, "n": n, "detector": name,
                       "size": size, "gsd": gsd},
            "scores": _score(rows), "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1)}


@contextmanager
def _nothing() -> Iterator[None]:
    """A context that holds nothing (the oracle's agents are made per scene)."""
    yield None


def examples(detector: str = "auto", settings: Settings | None = None) -> list[dict[str, Any]]:
    """The app's example questions on the app's demo scenes: the detector's answer next to
    the ground truth's (the oracle detector's) and whether they agree."""
    from viper_rs.agent import Agent
    from viper_rs.ui.app import EXAMPLES
    from viper_rs.ui.catalog import DEMO_SCENES
    from viper_rs.vision.factory import build_detector
    from viper_rs.vision.oracle import OracleDetector

    settings = settings or Settings()
    det = build_detector(detector, settings)
    out = []
    with Agent(settings, detector=det, planner="rules") as agent:
        for seed, size, gsd in DEMO_SCENES:
            scene = make_scene(seed, size=size, gsd=gsd)
            with Agent(settings, detector=OracleDetector(scene, settings),
                       planner="rules") as oracle:
                for text in EXAMPLES:
                    truth = oracle.ask(scene.image, text)
                    got = agent.ask(scene.image, text)
                    out.append({
                        "scene": f"{seed} ({size} px, {gsd:g} m)", "question": text,
                        "truth": truth.value, "answer": got.value,
                        "correct": got.error is None and values_agree(got.value, truth.value),
                    })
    return out


def values_agree(value: Any, truth: Any) -> bool:
    """An answer agrees with the truth's value: booleans and counts exactly, areas (floats)
    within 10 % or 1 m2 (the demo's rule)."""
    if isinstance(truth, float) and not isinstance(truth, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return abs(float(value) - truth) <= max(1.0, 0.1 * abs(truth))
    return type(value) is type(truth) and value == truth


def _table(scores: dict[str, Any]) -> str:
    cols = ["presence", "count", "comparison", "area", "count_and_presence", "overall"]
    lines = ["| questions | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, by in scores.items():
        cells = [f"{by[c]['accuracy']:.3f} ({by[c]['right']}/{by[c]['n']})" for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m eval.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="100-129", help="e.g. 100-129 or 0,1,2")
    p.add_argument("--n", type=int, default=60, help="questions per scene")
    p.add_argument("--detector", default="auto")
    p.add_argument("--size", type=int, default=384, help="scene size (px)")
    p.add_argument("--gsd", type=float, default=1.0, help="scene ground resolution (m)")
    p.add_argument("--examples", action="store_true",
                   help="also ask the app's example questions on its demo scenes")
    p.add_argument("--wrong", action="store_true", help="list the wrong answers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    result = evaluate(parse_seeds(args.seeds), args.n, args.detector, args.size, args.gsd,
                      progress=not args.json)
    if args.examples:
        result["examples"] = examples(args.detector)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "rows" or args.wrong}))
        return 0
    cfg = result["config"]
    print(f"{len(cfg['seeds'])} scenes ({cfg['size']} px, {cfg['gsd']:g} m), {cfg['n']} questions "
          f"each, detector {cfg['detector']}, {result['seconds']} s\n")
    print(_table(result["scores"]))
    errors = defaultdict(int)
    for r in result["rows"]:
        if r["error"]:
            errors[r["error"].split(":")[0]] += 1
    if errors:
        print(f"\nerrors: {dict(errors)}")
    if args.wrong:
        print()
        for r in result["rows"]:
            if not r["correct"]:
                print(f"seed {r['seed']}: {r['question']} truth {r['truth']} got {r['value']}")
    if args.examples:
        print("\napp examples on the demo scenes (truth = oracle):")
        for r in result["examples"]:
            mark = "ok " if r["correct"] else "WRONG"
            print(f"  {mark} scene {r['scene']}: {r['question']} -> {r['answer']!r} "
                  f"(truth {r['truth']!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
