"""``python -m eval.rsvqa`` on the real mini split: outputs exist and scores recompute."""

from __future__ import annotations

import json

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
