"""Choosing how far BuildingNet's buildings extend, on places the model has not seen:
nested leave-one-place-out over the out-of-fold probabilities of ``eval.buildings``' folds.

Usage::

    python -m eval.buildings_postproc [--data ../shared/data/labeled] [--cache out/eval_buildings]
                                      [--json]

For every RGB tile, the fold model trained without its place gives class probabilities at
the model's scale (as the detector computes them). The buildings themselves (seeds, mask,
smallest building: ``instances.py``, chosen on the training tiles) are kept; the candidates
are the *extent* thresholds over which the kept buildings grow (``instances_from_probs``'s
``extent_threshold``; none = the mask), scored by the median relative area error. A model
is less sure of roofs it has never seen, so its masks are too tight away from home. The
*nested* figure holds each place out once more: its tiles are answered with the threshold
that is best on the other places' tiles, so no tile helps choose the value it is scored
with. The value to ship is the best on all places. Counts do not change (growth adds no
building). Figures are measured on the model grid; the pipeline's are ``eval.buildings``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eval.buildings import DEFAULT_CACHE, DEFAULT_DATA, Tile, _open, find_tiles, truth_mask
from eval.buildings_folds import shipped_recipe, train_fold

#: The candidates: extent thresholds on p_interior + p_boundary (None: the mask itself).
EXTENT_THRESHOLDS: tuple[float | None, ...] = (None, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)


@dataclass(frozen=True)
class OutOfFold:
    """One tile's out-of-fold probabilities (3, h, w), its truth and its pixel area."""

    tile: Tile
    probs: np.ndarray
    truth: np.ndarray
    pixel_area_m2: float


def out_of_fold(root: Path, cache: Path, quiet: bool = False) -> list[OutOfFold]:
    """Every RGB tile's probabilities from the fold model that never saw its place."""
    from viper_rs.vision.buildings.detector import model_input, resize
    from viper_rs.vision.buildings.instances import predict_probs

    tiles = find_tiles(root, pan=False)
    recipe = shipped_recipe()
    out: list[OutOfFold] = []
    for place in sorted({t.place for t in tiles}):
        model, _ = train_fold(root, place, None, None, cache, progress=not quiet, recipe=recipe)
        for tile in tqdm([t for t in tiles if t.place == place], desc=place, disable=quiet,
                         leave=False):
            mask = truth_mask(tile)
            if mask is None:
                continue
            x, _ = model_input(_open(tile.image), model.config)
            size = (x.shape[0], x.shape[1])
            probs = predict_probs(model, x)
            truth = resize(mask.astype(np.float32), size) >= 0.5
            area = float(tile.truth.get("tile_area_m2") or 0.0) / (size[0] * size[1])
            out.append(OutOfFold(tile, probs, truth, area))
    return out


def answer(oof: OutOfFold, extent: float | None) -> tuple[int, float]:
    """(building count, building area m2) of one tile with the shipped post-processing
    and the ``extent`` threshold."""
    from viper_rs.vision.buildings.instances import MIN_BUILDING_M2, instances_from_probs

    min_px = max(1, round(MIN_BUILDING_M2 / oof.pixel_area_m2))
    _, labels = instances_from_probs(oof.probs, min_pixels=min_px, extent_threshold=extent)
    return int(labels.max()), float((labels > 0).sum()) * oof.pixel_area_m2


def figures(rows: Sequence[tuple[OutOfFold, int, float]]) -> dict[str, float]:
    """Count-within rate, median area error, presence and count MAE."""
    within = [abs(c - o.tile.count) <= max(2, 0.2 * o.tile.count) for o, c, _ in rows]
    rel = [abs(a - o.tile.area_m2) / o.tile.area_m2 for o, _, a in rows if o.tile.area_m2 > 0]
    presence = [(c > 0) == (o.tile.count > 0) for o, c, _ in rows]
    return {
        "tiles": len(rows),
        "count_within": float(np.mean(within)) if rows else 0.0,
        "area_median_rel_error": float(np.median(rel)) if rel else 0.0,
        "presence": float(np.mean(presence)) if rows else 0.0,
        "count_mae": float(np.mean([abs(c - o.tile.count) for o, c, _ in rows])) if rows else 0.0,
    }


def choose(oofs: Sequence[OutOfFold], quiet: bool = False) -> dict[str, Any]:
    """Every candidate's figures, the best over all tiles, and the nested figures."""
    answers = {e: [answer(o, e) for o in oofs]
               for e in tqdm(EXTENT_THRESHOLDS, desc="candidates", disable=quiet, leave=False)}

    def error(extent: float | None, keep: Sequence[int]) -> float:
        return figures([(oofs[i], *answers[extent][i]) for i in keep])["area_median_rel_error"]

    def best(keep: Sequence[int]) -> float | None:
        # ties go to the candidate listed first (the least growth)
        return min(EXTENT_THRESHOLDS, key=lambda e: error(e, keep))

    everything = list(range(len(oofs)))
    nested_rows = []
    per_place = {}
    for place in sorted({o.tile.place for o in oofs}):
        inside = [i for i in everything if oofs[i].tile.place == place]
        e = best([i for i in everything if oofs[i].tile.place != place])
        rows = [(oofs[i], *answers[e][i]) for i in inside]
        nested_rows += rows
        per_place[place] = {"chosen_on_others": e, **figures(rows)}
    return {
        "candidates": {str(e): figures([(o, *a) for o, a in zip(oofs, answers[e], strict=True)])
                       for e in EXTENT_THRESHOLDS},
        "chosen": best(everything),
        "nested": figures(nested_rows),
        "nested_per_place": per_place,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.buildings_postproc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"eval.buildings_postproc: no labelled data at {args.data}", file=sys.stderr)
        return 2
    res = choose(out_of_fold(args.data, args.cache), quiet=args.json)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
        return 0
    n = res["nested"]
    for e, f in res["candidates"].items():
        print(f"extent {e:>4s}: area median error {f['area_median_rel_error']:.0%}, counts "
              f"within {f['count_within']:.0%} (all places, out of fold)")
    print(f"chosen on all places: extent threshold {res['chosen']}")
    print(f"nested leave-one-place-out ({n['tiles']} tiles): area median error "
          f"{n['area_median_rel_error']:.0%}, counts within {n['count_within']:.0%}, "
          f"presence {n['presence']:.0%}, count MAE {n['count_mae']:.1f}")
    for place, f in res["nested_per_place"].items():
        print(f"  {place:16s} chosen on the others {f['chosen_on_others']}: area error "
              f"{f['area_median_rel_error']:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
