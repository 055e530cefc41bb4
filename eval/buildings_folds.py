"""The models of ``python -m eval.buildings``: the shipped BuildingNet and the
leave-one-place-out folds (trained with the shipped model's recipe, cached by settings and
trainer code)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("eval.buildings")


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

