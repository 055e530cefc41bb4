"""``python -m eval.rsvqa``: zero-shot RSVQA-HR evaluation, scored with RSVQA's own rules.

Writes ``summary.json``, ``predictions.jsonl`` and ``report.md`` into ``--out``, plus
``question_ids.json`` (``--ids`` repeats a run on exactly those questions). Images are the
dataset's own (``--imagery original``) or NAIP chips over each footprint (``--imagery naip``,
fetched beforehand with ``python -m eval.naip fetch``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from eval.rsvqa_data import Record, load_split, open_tile, read_question_ids
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
from viper_rs.core.answer_json import dumps_strict
from viper_rs.core.config import Settings

log = logging.getLogger("eval.rsvqa")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsvqa_hr_mini"
TYPES = ("presence", "comp", "count", "area")


def sample(records: list[Record], n: int | None, seed: int, stratify: bool) -> list[Record]:
    """``n`` unique questions (all when n is None or larger than the split); with
    ``stratify`` each type gets its share of ``n`` (largest remainders), exactly ``n`` in all."""
    if n is None or n >= len(records):
        return list(records)
    rng = random.Random(seed)
    if not stratify:
        return sorted(rng.sample(records, n), key=lambda r: r.question_id)
    by_type: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_type[r.type].append(r)
    total = len(records)
    quota = {t: n * len(rs) / total for t, rs in by_type.items()}
    take = {t: int(q) for t, q in quota.items()}
    for t in sorted(quota, key=lambda t: (-(quota[t] - take[t]), t))[: n - sum(take.values())]:
        take[t] += 1
    out: list[Record] = []
    for t, rs in sorted(by_type.items()):
        out.extend(rng.sample(rs, take[t]))
    return sorted(out, key=lambda r: r.question_id)


def choose_questions(records: list[Record], args: argparse.Namespace) -> list[Record]:
    """The run's questions: those of ``--ids``, else (on ``--resume``) those saved in
    ``--out``, else a fresh sample; saved to ``{out}/question_ids.json`` either way."""
    saved = Path(args.out) / "question_ids.json"
    ids_file = args.ids or (saved if args.resume and saved.exists() else None)
    if ids_file is not None:
        ids = read_question_ids(ids_file)
        by_id = {r.question_id: r for r in records}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise SystemExit(
                f"eval.rsvqa: {len(unknown)} question ids of {ids_file} are not active questions "
                f"of split {args.split!r} (first: {unknown[:5]})"
            )
        chosen = [by_id[i] for i in sorted(set(ids))]
        if args.ids is None and args.n is not None and len(chosen) != min(args.n, len(records)):
            log.warning("--resume keeps the %d questions saved in %s (--n %s ignored)",
                        len(chosen), saved, args.n)
    else:
        chosen = sample(records, args.n, args.seed, args.stratify)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({
        "split": args.split, "n": args.n, "seed": args.seed, "stratify": args.stratify,
        "source": str(ids_file) if ids_file is not None else "sample",
        "question_ids": [r.question_id for r in chosen],
    }))
    return chosen


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


@dataclass(frozen=True)
class TileSource:
    """Where a question's image comes from: the dataset's own tile or a NAIP chip."""

    data: Path
    imagery: str = "original"
    chips: Path | None = None
    context_m: float = 0.0

    def open(self, record: dict[str, Any]) -> Any:
        """The GeoImage questions about ``record`` are asked on."""
        if self.imagery == "naip":
            from eval.naip import open_naip_tile

            return open_naip_tile(self.chips, record, self.context_m)
        return open_tile(self.data, record)


def answer_group(
    agent: Any,
    source: TileSource,
    group: list[Record],
    settings: Settings,
    priors: dict[int, str],
) -> Iterator[dict[str, Any]]:
    """Prediction rows for questions about one image (opened once), in order."""
    image = None
    open_error = None
    for r in group:
        t1 = time.perf_counter()
        error = program = detector = prediction = None
        try:
            if image is None and open_error is None:
                try:
                    image = source.open(r.image)
                except Exception as exc:  # an image that cannot be read is a counted failure
                    open_error = {"type": getattr(exc, "type", "image"), "message": str(exc)}
            if open_error is not None:
                error = open_error
            else:
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
                        error = {"type": "answer",
                                 "message": f"value {ans.value!r} has no {r.type} form"}
        except Exception as exc:  # never lose the run to one question
            error = {"type": getattr(exc, "type", "error"), "message": str(exc)}
        gt = canonical_gt(r.type, r.answer)
        yield {
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


def group_by_image(records: list[Record]) -> list[list[Record]]:
    """Questions grouped per image (image order, then question order)."""
    groups: dict[int, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.image_id, r.question_id)):
        groups[r.image_id].append(r)
    return list(groups.values())


def _serial_rows(settings: Settings, source: TileSource, groups: list[list[Record]],
                 priors: dict[int, str]) -> Iterator[dict[str, Any]]:
    from viper_rs.agent import Agent

    with Agent(settings) as agent:
        for group in groups:
            yield from answer_group(agent, source, group, settings, priors)


def _worker_main(tasks: Any, results: Any, settings: Settings, source: TileSource) -> None:
    """Worker process: one Agent, whole images taken from ``tasks`` until a None arrives."""
    from viper_rs.agent import Agent

    logging.basicConfig(level=logging.WARNING)
    try:
        with Agent(settings) as agent:
            while True:
                task = tasks.get()
                if task is None:
                    break
                group, priors = task
                for row in answer_group(agent, source, group, settings, priors):
                    results.put(("row", row))
    except BaseException as exc:
        results.put(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        results.put(("done", None))


def _parallel_rows(settings: Settings, source: TileSource, groups: list[list[Record]],
                   priors: dict[int, str], workers: int) -> Iterator[dict[str, Any]]:
    """Rows from ``workers`` processes, each with its own Agent, as they arrive."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for g in sorted(groups, key=len, reverse=True):  # big images first: better balance
        tasks.put((g, {r.question_id: priors[r.question_id] for r in g}))
    procs = [ctx.Process(target=_worker_main, args=(tasks, results, settings, source),
                         name=f"rsvqa-worker-{i}") for i in range(workers)]
    for _ in procs:
        tasks.put(None)
    for p in procs:
        p.start()
    done = 0
    failures: list[str] = []
    try:
        while done < len(procs):
            try:
                kind, payload = results.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    failures.append("worker processes exited without finishing")
                    break
                continue
            if kind == "row":
                yield payload
            elif kind == "failed":
                failures.append(payload)
            else:
                done += 1
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    if failures:
        raise RuntimeError(
            f"eval.rsvqa: {len(failures)} worker(s) failed ({failures[0]}); the rows received "
            "are saved, continue with --resume"
        )


def _read_rows(path: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            rows[int(row["question_id"])] = row
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by an interruption: that question runs again
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps_strict(row) + "\n")
    tmp.replace(path)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation and write the outputs; returns the summary."""
    records = load_split(args.data, args.split)
    chosen = choose_questions(records, args)
    out: Path = args.out
    source = TileSource(Path(args.data), args.imagery, getattr(args, "chips", None),
                        float(getattr(args, "context_m", 0.0) or 0.0))
    if args.imagery == "naip":
        from eval.naip import DEFAULT_MARGIN_M, default_chips_dir, missing_chips

        if source.chips is None:
            source = replace(source, chips=default_chips_dir())
        images = {r.image_id: r.image for r in chosen}.values()
        missing = missing_chips(source.chips, images, source.context_m)
        if missing:
            raise SystemExit(
                f"eval.rsvqa: {len(missing)} of {len(images)} images have no NAIP chip with "
                f">= {source.context_m:g} m of context in {source.chips} (first: {missing[:5]}). "
                "Fetch them (needs internet) with:\n  python -m eval.naip fetch "
                f"--data {args.data} --split {args.split} --chips {source.chips} "
                f"--ids {out / 'question_ids.json'}"
                + (f" --margin-m {source.context_m:g}" if source.context_m > DEFAULT_MARGIN_M else "")
            )
    pred_path = out / "predictions.jsonl"
    wanted = {r.question_id for r in chosen}
    done = {q: row for q, row in _read_rows(pred_path).items() if q in wanted} if args.resume else {}
    _write_rows(pred_path, sorted(done.values(), key=lambda r: r["question_id"]))
    todo = [r for r in chosen if r.question_id not in done]
    priors = cross_fitted_prior(records, chosen)
    settings = Settings.from_env(detector=args.detector, planner=args.planner)
    workers = max(1, int(getattr(args, "workers", 1) or 1))
    groups = group_by_image(todo)
    workers = min(workers, max(1, len(groups)))
    t0 = time.perf_counter()
    rows = list(done.values())
    correct = sum(bool(x["correct"]) for x in rows)
    errors = sum(bool(x["error"]) for x in rows)
    if workers == 1:
        stream = _serial_rows(settings, source, groups, priors)
    else:
        stream = _parallel_rows(settings, source, groups, priors, workers)
    with pred_path.open("a", encoding="utf-8") as f, tqdm(
        total=len(todo), desc="rsvqa", unit="q", disable=args.quiet, smoothing=0.1
    ) as bar:
        for row in stream:
            rows.append(row)
            f.write(dumps_strict(row) + "\n")
            f.flush()
            correct += bool(row["correct"])
            errors += bool(row["error"])
            bar.update(1)
            bar.set_postfix(acc=f"{correct / len(rows):.3f}", err=errors, refresh=False)
    elapsed = time.perf_counter() - t0
    rows.sort(key=lambda r: r["question_id"])
    _write_rows(pred_path, rows)
    summary = summarize(rows, args, elapsed, n_new=len(todo), workers=workers)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown_report(summary))
    return summary


def summarize(
    rows: list[dict],
    args: argparse.Namespace,
    elapsed: float,
    n_new: int | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Accuracy per type/average/overall, the prior baseline, errors by type, config, timings
    (``n_new``: questions answered in this invocation, the rest came from ``--resume``)."""
    n_new = len(rows) if n_new is None else n_new
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
            "stratify": bool(args.stratify), "ids": str(args.ids) if args.ids else None,
            "imagery": args.imagery, "detector": args.detector or "auto",
            "planner": args.planner or "auto",
            **({"chips": str(args.chips) if args.chips else "default",
                "context_m": args.context_m} if args.imagery == "naip" else {}),
        },
        "timings": {
            "total_s": round(elapsed, 2),
            "questions": n_new,
            "workers": workers,
            "questions_per_s": round(n_new / elapsed, 2) if elapsed > 0 and n_new else None,
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
    p.add_argument("--ids", type=Path, default=None,
                   help="question ids to run (a JSON list or a run's question_ids.json)")
    p.add_argument("--imagery", choices=["original", "naip"], default="original",
                   help="the dataset's own images, or NAIP chips (python -m eval.naip fetch)")
    p.add_argument("--chips", type=Path, default=None,
                   help="NAIP chip cache (default: settings.cache_dir/naip_chips)")
    p.add_argument("--context-m", type=float, default=0.0,
                   help="NAIP only: metres of context shown around the footprint; answers "
                        "still count the footprint only")
    p.add_argument("--detector", default=None)
    p.add_argument("--planner", default=None)
    p.add_argument("--out", type=Path, default=Path("out/rsvqa"))
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--workers", type=int, default=1,
                   help="processes, each with its own agent; questions grouped by image")
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
