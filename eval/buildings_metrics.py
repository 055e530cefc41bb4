"""The figures of ``python -m eval.buildings``: the scoring of one tile's answers against
its labels, their summaries per group of tiles, and the goals they are checked against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Detector keys of ``--detectors`` and their labels in the tables.
DETECTORS: dict[str, str] = {
    "spectral": "spectral",
    "learned": "learned (shipped, IN-SAMPLE)",
    "lopo": "learned (leave-one-place-out)",
}
#: The issue's goals (on the RGB tiles) and the figures measured before the work.
GOALS = {"within": 0.60, "area_median_rel_err": 0.30, "presence": 0.95}
BEFORE = {"within": 0.34, "area_median_rel_err": 0.72, "presence": 0.83}
#: The within rule: |pred - truth| <= max(WITHIN_ABS, WITHIN_REL * truth).
WITHIN_REL, WITHIN_ABS = 0.2, 2
#: Name of the group of single-band tiles (reported apart from the RGB places).
PAN_GROUP = "atlanta (pan)"
RGB_GROUP = "RGB tiles"


# ---------------------------------------------------------------------------- metrics
def within(pred: float, truth: float, rel: float = WITHIN_REL, abs_: float = WITHIN_ABS) -> bool:
    """Whether a count is within ``rel`` of the truth or ``abs_`` buildings of it."""
    return abs(pred - truth) <= max(abs_, rel * truth)


def rel_error(pred: float, truth: float) -> float | None:
    """``|pred - truth| / truth``; None when the truth is 0."""
    return None if truth == 0 else abs(pred - truth) / truth


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float | None, int, int]:
    """(IoU or None when both masks are empty, intersection pixels, union pixels)."""
    inter = int(np.count_nonzero(pred & truth))
    union = int(np.count_nonzero(pred | truth))
    return (None if union == 0 else inter / union), inter, union


def _median(xs: Sequence[float]) -> float | None:
    return float(np.median(xs)) if len(xs) else None


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


@dataclass
class TileAnswer:
    """What the pipeline answered on one tile (None where the answer was an error)."""

    count: int | None = None
    area_m2: float | None = None
    exists: bool | None = None
    errors: dict[str, str] = field(default_factory=dict)
    mask: np.ndarray | None = None  # union of the answer's building regions
    detector: str | None = None
    ms: float = 0.0


def score_tile(tile_count: int, tile_area_m2: float, truth_mask: np.ndarray | None,
               ans: TileAnswer) -> dict[str, Any]:
    """Per-tile figures of one answer (an error counts as wrong, and as 0 in the errors)."""
    pred_count = ans.count if ans.count is not None else 0
    pred_area = ans.area_m2 if ans.area_m2 is not None else 0.0
    truth_present = tile_count > 0
    if ans.exists is not None:
        present = ans.exists
    elif ans.count is not None:
        present = ans.count > 0
    else:
        present = None
    row: dict[str, Any] = {
        "truth_count": tile_count,
        "pred_count": ans.count,
        "count_err": pred_count - tile_count,
        "count_exact": ans.count is not None and ans.count == tile_count,
        "count_within": ans.count is not None and within(ans.count, tile_count),
        "truth_area_m2": round(tile_area_m2, 1),
        "pred_area_m2": None if ans.area_m2 is None else round(ans.area_m2, 1),
        "area_rel_err": (None if tile_area_m2 == 0 else
                         (1.0 if ans.area_m2 is None else rel_error(pred_area, tile_area_m2))),
        "pred_exists": present,
        "presence_correct": present is not None and present == truth_present,
        "iou": None, "inter_px": 0, "union_px": 0,
        "errors": dict(ans.errors),
        "detector": ans.detector,
        "ms": round(ans.ms, 1),
    }
    if truth_mask is not None:
        pred = ans.mask if ans.mask is not None else np.zeros(truth_mask.shape, bool)
        row["iou"], row["inter_px"], row["union_px"] = mask_iou(pred, truth_mask)
    return row


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-tile rows (see :func:`score_tile`) into rates and errors."""
    n = len(rows)
    if n == 0:
        return {"n": 0}
    area = [r["area_rel_err"] for r in rows if r["area_rel_err"] is not None]
    empty = [r for r in rows if r["truth_count"] == 0]
    ious = [r["iou"] for r in rows if r["iou"] is not None]
    union = sum(r["union_px"] for r in rows)
    return {
        "n": n,
        "errors": sum(1 for r in rows if r["errors"]),
        "truth_count": sum(r["truth_count"] for r in rows),
        "pred_count": sum(r["pred_count"] or 0 for r in rows),
        "count_exact": sum(r["count_exact"] for r in rows) / n,
        "count_within": sum(r["count_within"] for r in rows) / n,
        "count_mae": sum(abs(r["count_err"]) for r in rows) / n,
        "area_n": len(area),
        "area_median_rel_err": _median(area),
        "area_mean_rel_err": _mean(area),
        "empty_tiles": len(empty),
        "empty_pred_area_m2": _mean([r["pred_area_m2"] or 0.0 for r in empty]),
        "presence": sum(r["presence_correct"] for r in rows) / n,
        "iou_mean": _mean(ious),
        "iou_pooled": None if union == 0 else sum(r["inter_px"] for r in rows) / union,
    }

def summarize_groups(rows: Sequence[dict]) -> dict[str, dict]:
    """Per place, the single-band tiles apart, all RGB tiles, and all tiles."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    out = {g: summarize(rs) for g, rs in sorted(groups.items(), key=lambda kv: kv[0] == PAN_GROUP)}
    out[RGB_GROUP] = summarize([r for r in rows if r["group"] != PAN_GROUP])
    if PAN_GROUP in groups:
        out["all tiles"] = summarize(rows)
    return out


def goal_checks(summary: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Each goal on the RGB tiles, per detector: value, goal, pass."""
    out = {}
    for det, groups in summary.items():
        s = groups.get(RGB_GROUP, {})
        if not s.get("n"):
            continue
        out[det] = {
            "within": _check(s["count_within"], GOALS["within"], ">="),
            "area_median_rel_err": _check(s["area_median_rel_err"],
                                          GOALS["area_median_rel_err"], "<="),
            "presence": _check(s["presence"], GOALS["presence"], ">="),
        }
    return out


def _check(value: float | None, goal: float, op: str) -> dict:
    ok = value is not None and (value >= goal if op == ">=" else value <= goal)
    return {"value": value, "goal": goal, "op": op, "pass": ok}

