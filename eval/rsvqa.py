"""``python -m eval.rsvqa``: zero-shot RSVQA-HR evaluation, scored with RSVQA's own rules.

Writes ``summary.json``, ``predictions.jsonl`` and ``report.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from eval.rsvqa_data import Record, load_split, open_tile
from eval.scoring import (
    RSVQA_LARGE_MIN,
    RSVQA_SMALL_MAX,
    PriorBaseline,
    accuracy_table,
    canonical_gt,
    mercator_area_factor,
    question_template,
    to_answer_space,
)
from viper_rs.config import Settings

log = logging.getLogger("eval.rsvqa")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsvqa_hr_mini"
TYPES = ("presence", "comp", "count", "area")


def sample(records: list[Record], n: int | None, seed: int, stratify: bool) -> list[Record]:
    """``n`` unique questions (all when n is None or larger than the split)."""
    if n is None or n >= len(records):
        return list(records)
    rng = random.Random(seed)
    if not stratify:
        return sorted(rng.sample(records, n), key=lambda r: r.question_id)
    by_type: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_type[r.type].append(r)
    out: list[Record] = []
    total = len(records)
    for _t, rs in sorted(by_type.items()):
        k = max(1, round(n * len(rs) / total))
        out.extend(rng.sample(rs, min(k, len(rs))))
    rng.shuffle(out)
    return sorted(out[:n], key=lambda r: r.question_id)


def cross_fitted_prior(records: list[Record], chosen: list[Record]) -> dict[int, str]:
    """Question-only prior per chosen question, fitted on the OTHER images of the split
    (leave-one-image-out: a question's own image never informs its prior)."""
    full = PriorBaseline().fit((r.type, r.question, canonical_gt(r.type, r.answer)) for r in records)
    own: dict[int, PriorBaseline] = defaultdict(PriorBaseline)
    for r in records:
        own[r.image_id].fit([(r.type, r.question, canonical_gt(r.type, r.answer))])
    out = {}
    for r in chosen:
        mine = own[r.image_id]
        key = question_template(r.question)
        c = full.by_question.get(key, Counter()) - mine.by_question.get(key, Counter())
        if not c:
            c = full.by_type.get(r.type, Counter()) - mine.by_type.get(r.type, Counter())
        out[r.question_id] = c.most_common(1)[0][0] if c else "no"
    return out


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation and write the outputs; returns the summary."""
    from viper_rs.agent import Agent

    if args.imagery != "original":
        raise SystemExit(
            "eval.rsvqa: --imagery naip needs NAIP chips (python -m eval.naip fetch); "
            "only --imagery original is available in this build"
        )
    records = load_split(args.data, args.split)
    chosen = sample(records, args.n, args.seed, args.stratify)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "question_ids.json").write_text(json.dumps([r.question_id for r in chosen]))
    pred_path = out / "predictions.jsonl"
    done: dict[int, dict] = {}
    if args.resume and pred_path.exists():
        for line in pred_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["question_id"]] = row
    todo = [r for r in chosen if r.question_id not in done]
    todo.sort(key=lambda r: (r.image_id, r.question_id))  # image caches stay warm
    priors = cross_fitted_prior(records, chosen)
    settings = Settings.from_env(detector=args.detector, planner=args.planner)
    t0 = time.perf_counter()
    rows = list(done.values())
    mode = "a" if args.resume else "w"
    with Agent(settings) as agent, pred_path.open(mode, encoding="utf-8") as f:
        bar = tqdm(todo, desc="rsvqa", unit="q", disable=args.quiet)
        image_cache: tuple[int, Any] | None = None
        for r in bar:
            t1 = time.perf_counter()
            error = None
            program = None
            detector = None
            prediction = None
            try:
                if image_cache is None or image_cache[0] != r.image_id:
                    image_cache = (r.image_id, open_tile(args.data, r.image))
                image = image_cache[1]
                factor = mercator_area_factor(r.lat)
                q_settings = settings.model_copy(update={
                    "small_max_m2": RSVQA_SMALL_MAX / factor,
                    "large_min_m2": RSVQA_LARGE_MIN / factor,
                })
                ans = agent.ask(image, r.question, settings=q_settings)
                program, detector = ans.program, ans.detector
                if ans.error:
                    error = ans.error
                else:
                    prediction = to_answer_space(r.type, ans.value, r.lat)
                    if prediction is None:
                        error = {"type": "answer", "message": f"value {ans.value!r} has no {r.type} form"}
            except Exception as exc:  # an image that cannot be read is a counted failure
                error = {"type": getattr(exc, "type", "error"), "message": str(exc)}
            gt = canonical_gt(r.type, r.answer)
            row = {
                "question_id": r.question_id,
                "image_id": r.image_id,
                "type": r.type,
                "question": r.question,
                "answer_gt": gt,
                "answer_raw": r.answer,
                "prediction": prediction,
                "correct": prediction is not None and prediction == gt,
                "prior": priors[r.question_id],
                "error": error,
                "program": program,
                "detector": detector,
                "ms": round((time.perf_counter() - t1) * 1000, 1),
            }
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()
            acc = sum(x["correct"] for x in rows) / len(rows)
            bar.set_postfix(acc=f"{acc:.3f}")
    elapsed = time.perf_counter() - t0
    summary = summarize(rows, args, elapsed)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown_report(summary))
    return summary


def summarize(rows: list[dict], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    """Accuracy per type/average/overall, the prior baseline, errors by type, config, timings."""
    prior_rows = [{"type": r["type"], "correct": r["prior"] == r["answer_gt"]} for r in rows]
    errors = Counter(r["error"]["type"] for r in rows if r["error"])
    return {
        "accuracy": accuracy_table(rows),
        "prior_baseline": accuracy_table(prior_rows),
        "prior_note": "question-only prior, fitted leave-one-image-out on the same split",
        "counts": dict(Counter(r["type"] for r in rows), total=len(rows)),
        "errors": dict(errors),
        "error_rate": sum(errors.values()) / len(rows) if rows else 0.0,
        "detectors": dict(Counter(r["detector"] for r in rows if r["detector"])),
        "config": {
            "data": str(args.data), "split": args.split, "n": args.n, "seed": args.seed,
            "imagery": args.imagery, "detector": args.detector or "auto",
            "planner": args.planner or "auto",
        },
        "timings": {
            "total_s": round(elapsed, 2),
            "questions_per_s": round(len(rows) / elapsed, 2) if elapsed > 0 else None,
        },
    }


def markdown_report(summary: dict[str, Any]) -> str:
    """The per-type table in Markdown."""
    acc, prior = summary["accuracy"], summary["prior_baseline"]
    cols = [c for c in (*TYPES, "average", "overall") if c in acc]
    lines = [
        "| | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
        "| viper-rs (" + ", ".join(summary["detectors"]) + ") | "
        + " | ".join(f"{acc[c]:.3f}" for c in cols) + " |",
        "| question-only prior | " + " | ".join(f"{prior.get(c, 0):.3f}" for c in cols) + " |",
        "",
        f"questions: {summary['counts']}; errors: {summary['errors'] or 'none'} "
        f"({summary['error_rate']:.1%}); {summary['timings']}",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m eval.rsvqa``."""
    p = argparse.ArgumentParser(prog="python -m eval.rsvqa", description=__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RSVQA-HR release folder")
    p.add_argument("--split", default="mini", help="test | test_phili | val | train | mini ...")
    p.add_argument("--n", type=int, default=500, help="number of unique questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stratify", action="store_true", help="sample proportionally per type")
    p.add_argument("--imagery", choices=["original", "naip"], default="original")
    p.add_argument("--detector", default=None)
    p.add_argument("--planner", default=None)
    p.add_argument("--out", type=Path, default=Path("out/rsvqa"))
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (args.data / f"USGS_split_{args.split}_questions.json").exists():
        print(f"eval.rsvqa: no split {args.split!r} in {args.data}", file=sys.stderr)
        return 2
    summary = evaluate(args)
    print(markdown_report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
