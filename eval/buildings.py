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

The scoring rules and goals are in :mod:`eval.buildings_metrics`, the shipped and fold
models in :mod:`eval.buildings_folds`, the tables in :mod:`eval.buildings_report`.

``--rsvqa N`` also scores the building questions among N sampled RSVQA-HR mini questions
(presence/count/comparison/area whose text names buildings, houses, residential or
commercial) with ``eval.rsvqa`` for the question-only prior, ``spectral`` and ``auto``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eval.buildings_folds import load_shipped, shipped_recipe, train_fold
from eval.buildings_metrics import (
    DETECTORS,
    PAN_GROUP,
    WITHIN_ABS,
    WITHIN_REL,
    TileAnswer,
    goal_checks,
    score_tile,
    summarize_groups,
)
from eval.buildings_report import markdown_report, print_report

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
    p.add_argument("--markdown", action="store_true", help="print the tables of docs/buildings.md")
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
