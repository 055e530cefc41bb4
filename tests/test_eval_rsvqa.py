"""``python -m eval.rsvqa`` on the real mini split: outputs exist and scores recompute."""

from __future__ import annotations

import json

import pytest

from eval.rsvqa import build_parser, evaluate
from eval.rsvqa_data import load_split, tile_transform
from eval.scoring import accuracy_table, canonical_gt


def test_loader_and_georeference(shared_data):
    recs = load_split(shared_data / "rsvqa_hr_mini", "mini")
    assert len(recs) == 2501 and len({r.question_id for r in recs}) == 2501
    t = tile_transform(recs[0].image)
    assert 0.19 < t.a < 0.21 and t.e == -t.a  # 0.1524 m * sec(40.7 N) map units


def test_eval_run_writes_outputs_that_recompute(tmp_path, shared_data):
    args = build_parser().parse_args([
        "--data", str(shared_data / "rsvqa_hr_mini"), "--split", "mini", "--n", "60",
        "--seed", "3", "--out", str(tmp_path), "--quiet",
    ])
    summary = evaluate(args)
    rows = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and len({r["question_id"] for r in rows}) == 60
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["accuracy"] == summary["accuracy"]
    # recompute from predictions.jsonl under the official rules
    recs = {r.question_id: r for r in load_split(shared_data / "rsvqa_hr_mini", "mini")}
    for r in rows:
        gt = canonical_gt(r["type"], recs[r["question_id"]].answer)
        assert r["answer_gt"] == gt
        assert r["correct"] == (r["prediction"] == gt)
        if r["error"]:
            assert r["prediction"] is None and not r["correct"]
    assert accuracy_table(rows) == summary["accuracy"]
    assert "average" in summary["prior_baseline"]
    assert (tmp_path / "report.md").read_text().startswith("| |")
    # --resume with nothing left to do keeps the same rows
    args.resume = True
    again = evaluate(args)
    assert again["counts"]["total"] == 60


def _rows(path):
    return [json.loads(x) for x in (path / "predictions.jsonl").read_text().splitlines()]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "ms"} for r in rows]


def test_stratified_sample_is_exact_and_proportional(shared_data):
    from collections import Counter

    from eval.rsvqa import sample

    recs = load_split(shared_data / "rsvqa_hr_mini", "mini")
    for n in (7, 100, 2500):
        got = sample(recs, n, seed=1, stratify=True)
        assert len(got) == n and len({r.question_id for r in got}) == n
    got = Counter(r.type for r in sample(recs, 100, seed=1, stratify=True))
    full = Counter(r.type for r in recs)
    for t in full:
        assert abs(got[t] - 100 * full[t] / len(recs)) < 1
    assert sample(recs, 50, 2, False) == sample(recs, 50, 2, False)


def test_ids_file_repeats_a_run_and_resume_finishes_a_cut_one(tmp_path, shared_data):
    data = str(shared_data / "rsvqa_hr_mini")
    first = build_parser().parse_args(["--data", data, "--split", "mini", "--n", "25",
                                       "--seed", "9", "--out", str(tmp_path / "a"), "--quiet"])
    evaluate(first)
    saved = json.loads((tmp_path / "a" / "question_ids.json").read_text())
    assert saved["seed"] == 9 and len(saved["question_ids"]) == 25
    again = build_parser().parse_args(["--data", data, "--split", "mini", "--seed", "123",
                                       "--ids", str(tmp_path / "a" / "question_ids.json"),
                                       "--out", str(tmp_path / "b"), "--quiet"])
    evaluate(again)
    assert _strip(_rows(tmp_path / "b")) == _strip(_rows(tmp_path / "a"))
    # an interrupted run: 10 rows and half a line; --resume answers only the rest
    lines = (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()
    (tmp_path / "a" / "predictions.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:40])
    first.resume = True
    first.n = 999  # ignored on --resume: the saved question ids are kept
    summary = evaluate(first)
    assert summary["timings"]["questions"] == 15 and summary["counts"]["total"] == 25
    assert _strip(_rows(tmp_path / "a")) == _strip(_rows(tmp_path / "b"))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 99999999]")
    again.ids = bad
    with pytest.raises(SystemExit, match="not active questions"):
        evaluate(again)


def test_two_workers_give_the_same_predictions_as_one(tmp_path, shared_data):
    common = ["--data", str(shared_data / "rsvqa_hr_mini"), "--split", "mini", "--n", "40",
              "--seed", "4", "--quiet"]
    one = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "one")]))
    two = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "two"),
                                              "--workers", "2"]))
    assert _strip(_rows(tmp_path / "one")) == _strip(_rows(tmp_path / "two"))
    assert one["accuracy"] == two["accuracy"] and two["timings"]["workers"] == 2
    assert len({r["image_id"] for r in _rows(tmp_path / "two")}) > 2
