"""Honest building validation on labelled tiles: spectral and learned side by side, with
leave-one-place-out cross-validation (issue 17, point 4).

Usage::

    python -m eval.buildings [--data ../shared/data/labeled] [--detectors spectral,learned,lopo]
                             [--steps N] [--seed S] [--places kampala_ug,...] [--limit N]
                             [--rsvqa 2500] [--cache out/eval_buildings]
                             [--per-tile] [--json | --markdown]

Each tile (``../shared/data/labeled``: 61 RGB tiles from 5 places and 3 single-band Atlanta
tiles) is asked "How many buildings are there?", "What is the area covered by buildings?"
and "Is there a building?" through the real pipeline (Agent, rule planner, sandbox), and the
answers are scored against the tile's ``_truth.json`` (counts follow the data's rule:
footprints intersecting the tile) and ``_buildings.tif`` mask:

- count exact; count within +-20% or +-2 (``|pred - truth| <= max(2, 0.2 * truth)``);
  mean absolute count error;
- building area relative error ``|pred - truth| / truth`` (tiles with buildings; the
  predicted area on tiles without any is reported apart);
- presence: the "is there" answer (the count > 0 when it failed) against ``truth > 0``;
- pixel IoU of the union of the answer's building regions with the mask (mean over tiles
  where it is defined, and pooled over all pixels).

An answer that is an error counts as wrong in the rates and as 0 (no building) in the count
and area errors. Detectors: ``spectral`` (weight-free); ``learned`` (the shipped BuildingNet
on every tile: it was trained on these tiles, so these figures are IN-SAMPLE); ``lopo``
(leave-one-place-out: for each place a model trained without it answers that place's tiles:
the honest figure of how the model generalises to a place it has never seen). Folds are
trained with the shipped model's training settings (stored in its checkpoint; the trainer's
defaults when there is none) on every tile of the other places, and cached in ``--cache``
keyed by those settings and the trainer's code. The single-band Atlanta tiles
are reported apart (the RGB detectors cannot read them; whatever the pipeline answers is
scored); under ``lopo`` they are answered by the shipped model, which never saw Atlanta.

``--rsvqa N`` also scores the building questions among N sampled RSVQA-HR mini questions
(presence/count/comparison/area whose text names buildings, houses, residential or
commercial) with ``eval.rsvqa`` for the question-only prior, ``spectral`` and ``auto``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "labeled"
DEFAULT_RSVQA = REPO.parent / "shared" / "data" / "rsvqa_hr_mini"
DEFAULT_CACHE = REPO / "out" / "eval_buildings"
log = logging.getLogger("eval.buildings")

#: The three questions every tile is asked (answer key -> question).
QUESTIONS: dict[str, str] = {
    "count": "How many buildings are there?",
    "area": "What is the area covered by buildings?",
    "presence": "Is there a building?",
}
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
BUILDING_WORDS = re.compile(r"\b(buildings?|houses?|residential|commercial)\b", re.I)


# ---------------------------------------------------------------------------- tiles
@dataclass(frozen=True)
class Tile:
    """One labelled tile: image, mask and truth."""

    name: str
    place: str
    image: Path
    mask: Path
    truth: dict[str, Any]

    @property
    def pan(self) -> bool:
        """Single-band (panchromatic) tile."""
        return len(self.truth.get("bands") or ["?"] * 3) < 3 or "pan" in self.image.parent.name

    @property
    def group(self) -> str:
        return PAN_GROUP if self.pan else self.place

    @property
    def count(self) -> int:
        return int(self.truth["building_count"])

    @property
    def area_m2(self) -> float:
        return float(self.truth["building_area_m2"])


def find_tiles(root: Path, places: Sequence[str] | None = None, limit: int | None = None,
               pan: bool = True) -> list[Tile]:
    """Every complete tile under ``root`` (``<name>.tif``, ``<name>_buildings.tif``,
    ``<name>_truth.json``), sorted by place then name; ``places`` keeps those places,
    ``limit`` at most that many tiles per place, ``pan`` includes single-band tiles.
    Places are the trainer's (:func:`viper_rs.vision.buildings.data.place_of`)."""
    from viper_rs.vision.buildings.data import place_of

    out: list[Tile] = []
    for truth_path in sorted(Path(root).glob("*/*_truth.json")):
        name = truth_path.name[: -len("_truth.json")]
        img = truth_path.with_name(f"{name}.tif")
        mask = truth_path.with_name(f"{name}_buildings.tif")
        if not (img.exists() and mask.exists()):
            continue
        tile = Tile(name, place_of(name), img, mask, json.loads(truth_path.read_text()))
        if places and tile.place not in places:
            continue
        if tile.pan and not pan:
            continue
        out.append(tile)
    out.sort(key=lambda t: (t.pan, t.place, t.name))
    if limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for t in out:
            seen[t.place] = seen.get(t.place, 0) + 1
            if seen[t.place] <= limit:
                kept.append(t)
        out = kept
    return out


def _open(path: Path):
    from viper_rs.core.geo import GeoImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GeoImage.open(path)


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


# ---------------------------------------------------------------------------- answering
def answer_tile(agent: Any, tile: Tile) -> TileAnswer:
    """Ask the three questions on ``tile``; the building mask is the union of the regions of
    the area answer (the count answer's when the area failed)."""
    t0 = time.perf_counter()
    out = TileAnswer()
    try:
        image = _open(tile.image)
    except Exception as exc:  # an unreadable image is a counted failure on every question
        out.errors = {k: f"image: {exc}" for k in QUESTIONS}
        return out
    regions: dict[str, list] = {}
    for key, question in QUESTIONS.items():
        try:
            ans = agent.ask(image, question)
        except Exception as exc:  # never lose the run to one question
            out.errors[key] = f"{type(exc).__name__}: {exc}"
            continue
        out.detector = out.detector or ans.detector
        if ans.error:
            out.errors[key] = f"{ans.error.get('type')}: {ans.error.get('message')}"
            continue
        regions[key] = ans.regions
        try:
            if key == "count":
                out.count = int(ans.value)
            elif key == "area":
                out.area_m2 = float(ans.value)
            else:
                out.exists = bool(ans.value)
        except (TypeError, ValueError):
            out.errors[key] = f"answer: {ans.value!r} is not a {key}"
    regs = regions.get("area", regions.get("count"))
    if regs is not None:
        mask = np.zeros((image.height, image.width), bool)
        for r in regs:
            r.paint(mask)
        out.mask = mask
    out.ms = (time.perf_counter() - t0) * 1000
    return out


def truth_mask(tile: Tile) -> np.ndarray | None:
    """The tile's footprint mask (None when unreadable)."""
    try:
        return _open(tile.mask).data[0] > 0
    except Exception as exc:
        log.warning("%s: unreadable mask (%s)", tile.mask, exc)
        return None


def learned_detector(model: Any, settings: Any) -> Any:
    """The pipeline's detector with buildings answered by ``model`` and the rest by the
    spectral detector (what ``build_detector("auto")`` builds, around a given model)."""
    from viper_rs.vision.buildings.detector import BuildingDetector
    from viper_rs.vision.routed import RoutedDetector
    from viper_rs.vision.spectral import SpectralDetector

    return RoutedDetector(SpectralDetector(settings), BuildingDetector(settings, model=model))


# ---------------------------------------------------------------------------- fold models
def _code_hash() -> str:
    """Hash of the trainer's code (a changed trainer retrains the folds)."""
    h = hashlib.sha1()
    pkg = REPO / "viper_rs" / "vision" / "buildings"
    for name in ("train.py", "data.py", "model.py"):
        p = pkg / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


#: Settings of the shipped model's training that a fold does not copy (data selection,
#: the validation hold-out: a fold trains on every tile of the other places, and hardware).
_NOT_COPIED = ("data", "out", "places", "exclude_places", "limit_tiles", "val_fraction",
               "threads", "device", "extra")


def shipped_recipe() -> dict[str, Any]:
    """The training settings stored with the shipped weights (``meta["settings"]``), or {}
    when there are none: folds are trained the same way, minus the held-out place."""
    from viper_rs.vision.buildings.checkpoint import DEFAULT_WEIGHTS, load_building_model

    if not DEFAULT_WEIGHTS.exists():
        return {}
    try:
        _model, meta = load_building_model(DEFAULT_WEIGHTS)
    except Exception as exc:
        log.warning("shipped weights unreadable (%s): folds use the trainer's defaults", exc)
        return {}
    settings = meta.get("settings")
    return dict(settings) if isinstance(settings, dict) else {}


def fold_config(root: Path, place: str, steps: int | None, seed: int | None,
                recipe: dict[str, Any] | None = None) -> Any:
    """The TrainConfig of the fold that holds ``place`` out: ``recipe`` (the shipped model's
    settings; the trainer's defaults where absent), with ``steps``/``seed`` when given."""
    from viper_rs.vision.buildings.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                          for k, v in (recipe or {}).items()
                          if k in fields and k not in _NOT_COPIED}
    kw.update(data=Path(root), out=None, exclude_places=(place,))
    if steps is not None:
        kw["steps"] = steps
    if seed is not None:
        kw["seed"] = seed
    return TrainConfig(**kw)


def fold_key(cfg: Any) -> str:
    """A short key of a fold's training settings (and the trainer's code)."""
    d = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()
         if k not in ("out", "data")}
    d["data"] = str(Path(cfg.data).resolve())
    blob = json.dumps(d, sort_keys=True, default=str) + _code_hash()
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def train_fold(root: Path, place: str, steps: int | None, seed: int | None, cache: Path,
               progress: bool = True, recipe: dict[str, Any] | None = None,
               ) -> tuple[Any, dict[str, Any]]:
    """The model trained without ``place`` (from ``cache`` when trained before with the same
    settings and trainer code) and facts about it."""
    from viper_rs.vision.buildings.checkpoint import load_building_model, save_building_model
    from viper_rs.vision.buildings.train import train_buildings

    cfg = fold_config(root, place, steps, seed, recipe)
    key = fold_key(cfg)
    path = Path(cache) / "folds" / f"without-{place}-{key}.pt"
    if path.exists():
        model, meta = load_building_model(path)
        return model, {"path": str(path), "cached": True, **meta.get("fold", {})}
    t0 = time.perf_counter()
    model, report = train_buildings(cfg, progress=progress)
    seen = report.get("train_places") or {}
    if place in seen:  # the whole point of the fold
        raise RuntimeError(f"fold without {place} trained on {seen[place]} of its tiles")
    fold = {"held_out": place, "key": key, "steps": cfg.steps, "seed": cfg.seed,
            "train_places": seen, "train_tiles": report.get("train_tiles"),
            "train_s": round(time.perf_counter() - t0, 1)}
    meta = {"fold": fold, "settings": cfg.to_dict(), "train_report": _jsonable(report)}
    save_building_model(model, path, meta)
    model.eval()
    return model, {"path": str(path), "cached": False, **fold}


def load_shipped() -> tuple[Any, dict[str, Any]]:
    """The shipped BuildingNet and its meta."""
    from viper_rs.vision.buildings.checkpoint import DEFAULT_WEIGHTS, load_building_model

    model, meta = load_building_model()
    return model, {"path": str(DEFAULT_WEIGHTS), "train_places": meta.get("train_places"),
                   "train_tiles": meta.get("train_tiles"), "steps": meta.get("steps")}


def _jsonable(x: Any) -> Any:
    try:
        return json.loads(json.dumps(x, default=str))
    except (TypeError, ValueError):
        return str(x)


# ---------------------------------------------------------------------------- the run
def run_tiles(agent_for: Callable[[Any], Any], detector: Any, tiles: Sequence[Tile],
              masks: dict[str, np.ndarray | None], desc: str, quiet: bool) -> list[dict]:
    """Score ``tiles`` with ``detector`` (``agent_for`` makes an Agent around it)."""
    rows = []
    agent = agent_for(detector)
    for tile in tqdm(tiles, desc=desc, unit="tile", disable=quiet, leave=False):
        ans = answer_tile(agent, tile)
        rows.append({"tile": tile.name, "place": tile.place, "group": tile.group,
                     **score_tile(tile.count, tile.area_m2, masks.get(tile.name), ans)})
    return rows


def evaluate(
    root: Path,
    detectors: Sequence[str] = ("spectral", "learned", "lopo"),
    places: Sequence[str] | None = None,
    limit: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    cache: Path = DEFAULT_CACHE,
    quiet: bool = False,
) -> dict[str, Any]:
    """Every requested detector on every tile; returns plain data (see ``--json``)."""
    from viper_rs.agent import Agent
    from viper_rs.core.config import Settings
    from viper_rs.vision.spectral import SpectralDetector

    unknown = [k for k in detectors if k not in DETECTORS]
    if unknown:
        raise SystemExit(f"eval.buildings: unknown detector(s) {', '.join(unknown)}; choose "
                         f"from {', '.join(DETECTORS)}")
    tiles = find_tiles(root, places, limit)
    if not tiles:
        raise SystemExit(f"eval.buildings: no labelled tiles in {root} "
                         f"(places {places or 'all'})")
    masks = {t.name: truth_mask(t) for t in tiles}
    settings = Settings.from_env(planner="rules")
    notes: list[str] = []
    per_det: dict[str, list[dict]] = {}
    folds: dict[str, Any] = {}
    first: list[Any] = []

    def agent_for(det: Any) -> Any:
        if not first:
            first.append(Agent(settings, detector=det, planner="rules"))
            return first[0]
        return Agent(settings, detector=det, planner="rules", sandbox=first[0].sandbox)

    t0 = time.perf_counter()
    try:
        for key in detectors:
            if key == "spectral":
                per_det[key] = run_tiles(agent_for, SpectralDetector(settings), tiles, masks,
                                         key, quiet)
            elif key == "learned":
                try:
                    model, info = load_shipped()
                except Exception as exc:
                    notes.append(f"learned: no shipped model ({exc}); column skipped")
                    continue
                folds["shipped"] = info
                per_det[key] = run_tiles(agent_for, learned_detector(model, settings), tiles,
                                         masks, key, quiet)
            elif key == "lopo":
                rows: list[dict] = []
                model = None
                rgb_places = sorted({t.place for t in tiles if not t.pan})
                recipe = shipped_recipe()
                notes.append("lopo: folds trained with " + (
                    "the shipped model's settings" if recipe else "the trainer's defaults")
                    + (f", {steps} steps" if steps is not None else "")
                    + (f", seed {seed}" if seed is not None else ""))
                for place in tqdm(rgb_places, desc="lopo folds", unit="fold", disable=quiet):
                    model, info = train_fold(root, place, steps, seed, cache,
                                             progress=not quiet, recipe=recipe)
                    folds[place] = info
                    mine = [t for t in tiles if t.place == place and not t.pan]
                    rows += run_tiles(agent_for, learned_detector(model, settings), mine, masks,
                                      f"lopo {place}", quiet)
                pan = [t for t in tiles if t.pan]
                if pan:
                    try:
                        if model is None:
                            model, _info = load_shipped()
                        rows += run_tiles(agent_for, learned_detector(model, settings), pan,
                                          masks, "lopo pan", quiet)
                        notes.append("lopo: the single-band tiles are answered with the last "
                                     "fold's model (models train on RGB tiles only: none saw "
                                     "Atlanta)")
                    except Exception as exc:
                        notes.append(f"lopo: single-band tiles skipped ({exc})")
                order = {t.name: i for i, t in enumerate(tiles)}
                per_det[key] = sorted(rows, key=lambda r: order[r["tile"]])
    finally:
        for a in reversed(first):
            a.close()
    if "learned" in per_det:
        notes.append("learned (shipped) is IN-SAMPLE: the shipped model was trained on these "
                     "RGB tiles; the leave-one-place-out column is the honest figure")
    notes.append("an answer that is an error counts as wrong (and as 0 in the count and area "
                 "errors)")
    summary = {k: summarize_groups(v) for k, v in per_det.items()}
    return {
        "data": str(root),
        "config": {"detectors": list(per_det), "places": list(places) if places else None,
                   "limit": limit, "steps": steps, "seed": seed, "cache": str(cache),
                   "within_rule": f"|pred - truth| <= max({WITHIN_ABS}, {WITHIN_REL} * truth)"},
        "tiles": {k: v for k, v in per_det.items()},
        "summary": summary,
        "goals": goal_checks(summary),
        "baselines": {k: summarize_groups(v) for k, v in baselines(root, tiles).items()},
        "folds": folds,
        "notes": notes,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }


def baselines(root: Path, tiles: Sequence[Tile]) -> dict[str, list[dict]]:
    """Per-tile rows of two answers that look at no pixel: all zero (no building), and the
    mean count and area of the RGB tiles of the OTHER places (a leave-one-place-out mean)."""
    every = [t for t in find_tiles(root) if not t.pan]
    zero, mean = [], []
    for t in tiles:
        others = [o for o in every if o.place != t.place]
        c = round(float(np.mean([o.count for o in others]))) if others else 0
        a = float(np.mean([o.area_m2 for o in others])) if others else 0.0
        base = {"tile": t.name, "place": t.place, "group": t.group}
        zero.append({**base, **score_tile(t.count, t.area_m2, None, TileAnswer(0, 0.0, False))})
        mean.append({**base, **score_tile(t.count, t.area_m2, None, TileAnswer(c, a, c > 0))})
    return {"all zero": zero, "other-place mean": mean}


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


# ---------------------------------------------------------------------------- RSVQA-HR
def is_building_question(question: str) -> bool:
    """Whether an RSVQA question is about buildings (buildings, houses, residential or
    commercial)."""
    return bool(BUILDING_WORDS.search(question))


def rsvqa_buildings(data: Path, n: int, seed: int, out: Path,
                    detectors: Sequence[str] = ("spectral", "auto"),
                    quiet: bool = False) -> dict[str, Any]:
    """Accuracy per type on the building questions among ``n`` sampled RSVQA-HR mini
    questions, by ``eval.rsvqa`` (same sample as ``eval.rsvqa --n n --seed seed``), for the
    question-only prior and each detector."""
    from eval.rsvqa import build_parser, sample
    from eval.rsvqa import evaluate as rsvqa_evaluate
    from eval.rsvqa_data import load_split

    records = load_split(data, "mini")
    chosen = [r for r in sample(records, n, seed, False) if is_building_question(r.question)]
    out.mkdir(parents=True, exist_ok=True)
    ids = out / "building_question_ids.json"
    ids.write_text(json.dumps([r.question_id for r in chosen]))
    res: dict[str, Any] = {"n_sampled": min(n, len(records)), "n_building": len(chosen),
                           "seed": seed, "data": str(data), "accuracy": {}, "detectors": {}}
    for det in detectors:
        args = build_parser().parse_args([
            "--data", str(data), "--split", "mini", "--ids", str(ids), "--detector", det,
            "--planner", "rules", "--out", str(out / f"rsvqa_{det}"),
            *(["--quiet"] if quiet else []),
        ])
        summary = rsvqa_evaluate(args)
        res["accuracy"].setdefault("prior", summary["prior_baseline"])
        res["accuracy"][det] = summary["accuracy"]
        res["detectors"][det] = summary["detectors"]
        res["counts"] = summary["counts"]
        res.setdefault("errors", {})[det] = summary["errors"]
    return res


# ---------------------------------------------------------------------------- printing
def _pct(v: float | None, nd: int = 0) -> str:
    return "-" if v is None else f"{100 * v:.{nd}f}%"


def _num(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


HEAD = (f"{'group':<22}{'tiles':>6}{'err':>5}{'count':>7}{'pred':>7}{'exact':>7}{'±20%/2':>8}"
        f"{'MAE':>7}{'area med':>10}{'area mean':>10}{'presence':>10}{'IoU':>6}{'IoU px':>8}")


def _line(name: str, s: dict) -> str:
    return (f"{name:<22}{s['n']:>6}{s['errors']:>5}{s['truth_count']:>7}{s['pred_count']:>7}"
            f"{_pct(s['count_exact']):>7}{_pct(s['count_within']):>8}{_num(s['count_mae']):>7}"
            f"{_pct(s['area_median_rel_err']):>10}{_pct(s['area_mean_rel_err']):>10}"
            f"{_pct(s['presence']):>10}{_pct(s['iou_mean']):>6}{_pct(s['iou_pooled']):>8}")


def print_report(res: dict, per_tile: bool = False) -> None:
    """The tables on stdout."""
    print(f"buildings vs labels: {res['data']}  ({res['config']['within_rule']}; area = "
          "relative error on tiles with buildings; IoU = mean per tile / pooled pixels)")
    for det, groups in res["summary"].items():
        print(f"\n{DETECTORS.get(det, det)}")
        if per_tile:
            print(f"{'tile':<34}{'count':>6}{'pred':>6}{'area m2':>9}{'pred m2':>9}"
                  f"{'rel':>6}{'exists':>7}{'IoU':>6}  errors")
            for r in res["tiles"][det]:
                print(f"{r['tile']:<34}{r['truth_count']:>6}{_num(r['pred_count'], 0):>6}"
                      f"{r['truth_area_m2']:>9.0f}{_num(r['pred_area_m2'], 0):>9}"
                      f"{_pct(r['area_rel_err']):>6}{str(r['pred_exists']):>7}"
                      f"{_pct(r['iou']):>6}  {'; '.join(sorted(set(r['errors'].values())))[:80]}")
            print()
        print(HEAD)
        for g, s in groups.items():
            if s.get("n"):
                print(_line(g, s))
        rgb = groups.get(RGB_GROUP, {})
        if rgb.get("empty_tiles"):
            print(f"  {rgb['empty_tiles']} RGB tiles without buildings: mean predicted building "
                  f"area {_num(rgb['empty_pred_area_m2'], 0)} m2")
    if res.get("baselines"):
        print("\nbaselines that look at no pixel (all tiles of the run, RGB and pan)")
        print(HEAD)
        for name, groups in res["baselines"].items():
            for g in (RGB_GROUP, PAN_GROUP):
                if groups.get(g, {}).get("n"):
                    print(_line(f"{name}, {'RGB' if g == RGB_GROUP else 'pan'}", groups[g]))
    if res["goals"]:
        print(f"\ngoals on the RGB tiles (before this work: within {_pct(BEFORE['within'])}, "
              f"area median {_pct(BEFORE['area_median_rel_err'])}, presence "
              f"{_pct(BEFORE['presence'])}, on 29 similar tiles)")
        for det, checks in res["goals"].items():
            parts = [f"{k} {_pct(c['value'])} {c['op']} {_pct(c['goal'])} "
                     f"{'PASS' if c['pass'] else 'FAIL'}" for k, c in checks.items()]
            print(f"  {DETECTORS.get(det, det):<32}" + " | ".join(parts))
    if res.get("folds"):
        print("\nmodels: " + "; ".join(
            f"{k}: {v.get('path')}{' (cached)' if v.get('cached') else ''}"
            for k, v in res["folds"].items()))
    for note in res.get("notes", []):
        print(f"note: {note}")
    rq = res.get("rsvqa")
    if rq:
        print(f"\nRSVQA-HR mini, building questions: {rq['n_building']} of {rq['n_sampled']} "
              f"sampled (seed {rq['seed']}); accuracy per type")
        types = [t for t in ("presence", "comp", "count", "area", "average", "overall")
                 if any(t in a for a in rq["accuracy"].values())]
        print(f"{'':<28}" + "".join(f"{t:>10}" for t in types))
        for name, acc in rq["accuracy"].items():
            label = "question-only prior" if name == "prior" else \
                f"{name} ({', '.join(rq['detectors'].get(name, {})) or '?'})"
            print(f"{label:<28}" + "".join(f"{_pct(acc.get(t), 1):>10}" for t in types))
        if "spectral" in rq["accuracy"] and "auto" in rq["accuracy"]:
            auto, spec = rq["accuracy"]["auto"], rq["accuracy"]["spectral"]
            a, b = auto["overall"], spec["overall"]
            lower = [f"{t} {_pct(auto[t], 1)} < {_pct(spec[t], 1)}" for t in types
                     if t in auto and t in spec and auto[t] < spec[t]]
            print(f"  goal: auto building accuracy {_pct(a, 1)} >= spectral {_pct(b, 1)} "
                  f"{'PASS' if a >= b else 'FAIL'}"
                  + (f" (lower on: {', '.join(lower)})" if lower else ""))


def markdown_report(res: dict) -> str:
    """The overall, per-place and RSVQA tables in Markdown (for the README)."""
    cols = ("tiles", "errors", "count exact", "count ±20%/2", "count MAE", "area rel. err. "
            "(median)", "presence", "pixel IoU (pooled)")

    def cells(s: dict) -> list[str]:
        return [str(s["n"]), str(s["errors"]), _pct(s["count_exact"]), _pct(s["count_within"]),
                _num(s["count_mae"]), _pct(s["area_median_rel_err"]), _pct(s["presence"]),
                _pct(s["iou_pooled"])]

    out = ["| detector | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for det, groups in res["summary"].items():
        if groups.get(RGB_GROUP, {}).get("n"):
            out.append(f"| {DETECTORS.get(det, det)} | " + " | ".join(cells(groups[RGB_GROUP]))
                       + " |")
    for name, groups in res.get("baselines", {}).items():
        if groups.get(RGB_GROUP, {}).get("n"):
            out.append(f"| {name} (no pixels) | " + " | ".join(cells(groups[RGB_GROUP])) + " |")
    places = [g for g in next(iter(res["summary"].values()), {}) if g not in
              (RGB_GROUP, "all tiles")]
    if places:
        out += ["", "count ±20%/2 / area median rel. error / presence, per place:", "",
                "| detector | " + " | ".join(places) + " |", "|---|" + "---|" * len(places)]
        for det, groups in res["summary"].items():
            out.append(f"| {DETECTORS.get(det, det)} | " + " | ".join(
                f"{_pct(groups[g]['count_within'])} / {_pct(groups[g]['area_median_rel_err'])}"
                f" / {_pct(groups[g]['presence'])}" if groups.get(g, {}).get("n") else "-"
                for g in places) + " |")
    rq = res.get("rsvqa")
    if rq:
        types = [t for t in ("presence", "comp", "count", "area", "overall")
                 if any(t in a for a in rq["accuracy"].values())]
        out += ["", f"RSVQA-HR mini building questions ({rq['n_building']} of {rq['n_sampled']}"
                f" sampled, seed {rq['seed']}):", "",
                "| | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
        for name, acc in rq["accuracy"].items():
            label = "question-only prior" if name == "prior" else \
                f"{name} ({', '.join(rq['detectors'].get(name, {})) or '?'})"
            out.append(f"| {label} | " + " | ".join(_pct(acc.get(t), 1) for t in types) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- CLI
def _csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m eval.buildings``."""
    p = argparse.ArgumentParser(prog="python -m eval.buildings",
                                description=__doc__.split("\n")[0])
    env = os.environ.get("VIPER_RS_LABELED_DATA")
    p.add_argument("--data", type=Path, default=Path(env) if env else DEFAULT_DATA,
                   help="labelled tiles folder (default ../shared/data/labeled or "
                        "VIPER_RS_LABELED_DATA)")
    p.add_argument("--detectors", default="spectral,learned,lopo",
                   help="comma list of spectral, learned (shipped, in-sample), lopo")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of each leave-one-place-out fold (default: the "
                        "shipped model's, else the trainer's)")
    p.add_argument("--seed", type=int, default=None,
                   help="fold training seed (default: the shipped model's)")
    p.add_argument("--places", default=None, help="comma list of places to evaluate")
    p.add_argument("--limit", type=int, default=None, help="at most N tiles per place")
    p.add_argument("--rsvqa", type=int, default=2500,
                   help="RSVQA-HR mini questions sampled for the building questions (0: skip)")
    p.add_argument("--rsvqa-data", type=Path, default=DEFAULT_RSVQA)
    p.add_argument("--rsvqa-seed", type=int, default=0, help="RSVQA question sample seed")
    p.add_argument("--rsvqa-detectors", default="spectral,auto")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="fold models and RSVQA runs (default out/eval_buildings)")
    p.add_argument("--per-tile", action="store_true", help="print a row per tile")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--markdown", action="store_true", help="print the README tables")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.data.is_dir():
        print(f"eval.buildings: no labelled data at {args.data}", file=sys.stderr)
        return 2
    res = evaluate(args.data, _csv(args.detectors) or [], _csv(args.places), args.limit,
                   args.steps, args.seed, args.cache, quiet=args.quiet)
    if args.rsvqa > 0:
        if (args.rsvqa_data / "USGS_split_mini_questions.json").exists():
            res["rsvqa"] = rsvqa_buildings(args.rsvqa_data, args.rsvqa, args.rsvqa_seed,
                                           args.cache / "rsvqa",
                                           _csv(args.rsvqa_detectors) or [],
                                           quiet=args.quiet)
        else:
            res["notes"].append(f"RSVQA-HR mini not found at {args.rsvqa_data}; skipped")
    if args.json:
        print(json.dumps(res, indent=1, default=_json_default))
    elif args.markdown:
        print(markdown_report(res))
    else:
        print_report(res, per_tile=args.per_tile)
    return 0


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
