"""MODEL_CARD.md for a trained BuildingNet, written from its checkpoint ``meta``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ATTRIBUTION = (
    "Imagery: OpenAerialMap contributors, CC BY 4.0; building footprints © OpenStreetMap "
    "contributors, ODbL 1.0 (HOT fAIr training sets, public repository "
    "hotosm/fAIr-utilities, commit 61f1515, `ramp-data/TRAIN/HOTOSM/2/`). No code from "
    "that repository (AGPL-3.0) is used."
)
#: Heading of the section that ``eval.buildings`` fills with its leave-one-place-out table.
EVAL_SECTION = "## Evaluation (leave-one-place-out)"


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def render_model_card(meta: dict[str, Any], notes: tuple[str, ...] = ()) -> str:
    """The card's Markdown text; ``notes`` are extra bullet points (e.g. held-out figures
    measured after training)."""
    s = meta.get("settings", {})
    cfg = meta.get("model_config", {})
    data = meta.get("data", {})
    lines = [
        "# BuildingNet — building segmentation for viper-rs",
        "",
        "A small U-Net (`viper_rs.vision.buildings.model.BuildingNet`) that labels each pixel "
        "background, building interior or building boundary at "
        f"{cfg.get('gsd_m', 0.3)} m per pixel. Instances are connected interiors grown back "
        "over the building mask (`viper_rs.vision.buildings.instances`); the boundary class "
        "separates touching buildings.",
        "",
        "## Intended use",
        "",
        f"- Input: RGB aerial/drone/satellite imagery of ground resolution "
        f"{cfg.get('gsd_range_m', ['?', '?'])[0]}-{cfg.get('gsd_range_m', ['?', '?'])[1]} m, "
        f"resampled to {cfg.get('gsd_m', 0.3)} m before inference (training imitated ground "
        f"resolutions around {', '.join(f'{g:g}' for g in s.get('scales_m', []))} m).",
        "- Output: per-pixel probabilities; building count, area and footprints via "
        "`instances_from_probs` (seeds p_interior > 0.6, mask p_interior + p_boundary >= 0.6, "
        "buildings >= 12 m2, each extended over p >= 0.3; touching buildings with mean "
        "p_boundary < 0.12 along their contact merged).",
        "- Trained on five places in East Africa, Nepal and the Philippines only: expect "
        "weaker results on other building styles, on off-nadir or very dark imagery, and "
        "on single-band (panchromatic) input (seen only as greyscale augmentation).",
        "",
        "## Training data",
        "",
        f"- Datasets: {', '.join(data.get('datasets', []))}; sources: "
        f"{', '.join(data.get('sources', []))}.",
        f"- {meta.get('train_tiles')} tiles ({meta.get('train_footprints')} footprints), "
        "512 x 512 px, native ground resolution "
        f"{_fmt(data.get('gsd_m', [None])[0])}-{_fmt(data.get('gsd_m', [None, None])[-1])} m.",
        "- Tiles per place: " + ", ".join(f"{p} {n}" for p, n in
                                         meta.get("train_places", {}).items()) + ".",
        f"- Licenses and attribution: {ATTRIBUTION}",
        "",
        "## Training",
        "",
        f"- {meta.get('steps')} steps, batch {s.get('batch')}, crops {s.get('crop_px')} px "
        f"at {cfg.get('gsd_m', 0.3)} m, AdamW lr {s.get('lr')} (one-cycle), weight decay "
        f"{s.get('weight_decay')}; loss: cross-entropy (class weights "
        f"{s.get('class_weights')}) + {s.get('dice_weight')} x soft Dice on buildings.",
        f"- Boundary ring: {s.get('ring_px')} px inside every footprint edge and along "
        "shared walls (measured on the 644 footprints at 0.3 m: a 1/2/3 px ring leaves "
        "12/26/46 footprints, mostly slivers cut by the tile edge, without interior; 2 px "
        "keeps 1.2 m between the interiors of touching buildings).",
        "- Augmentation: box-average down to a ground resolution g (x0.85-1.2 around each "
        "training scale) and bilinear back to 0.3 m; zoom 0.85-1.18; flips and 90° "
        "rotations; gain, contrast, brightness, gamma jitter; 12% greyscale.",
        f"- Widths {cfg.get('widths')}; normalisation mean {cfg.get('mean')}, std "
        f"{cfg.get('std')} (measured on the training tiles).",
        f"- Seed {s.get('seed')}; {meta.get('train_seconds')} s of training on "
        f"{meta.get('device')} with {meta.get('threads')} threads "
        f"({meta.get('seconds_per_step')} s per step), torch {meta.get('torch')}. "
        "Reproduce: `python -m viper_rs train-buildings --data ../shared/data/labeled "
        f"--steps {meta.get('steps')} --seed {s.get('seed')} --out FILE`.",
        f"- Loss per tenth of training: {meta.get('loss_curve')}.",
        "",
    ]
    val = meta.get("validation")
    if val:
        lines += [
            "## Held-out check (training run)",
            "",
            f"Tiles held out of this run: {len(meta.get('val_tiles', []))}.",
            "",
            "| imitated GSD (m) | tiles | counts within ±20% or ±2 | count MAE | "
            "area median rel. error | presence | pixel IoU |",
            "|---|---|---|---|---|---|---|",
        ]
        for g, v in val.items():
            lines.append(
                f"| {g} | {v['tiles']} | {_fmt(v['count_within_20pct_or_2'])} | "
                f"{_fmt(v['count_mae'])} | {_fmt(v['area_median_rel_error'])} | "
                f"{_fmt(v['presence_accuracy'])} | {_fmt(v['pixel_iou'])} |"
            )
        lines.append("")
    extra = [*(meta.get("card_notes") or []), *notes]
    if extra:
        lines += ["## Notes", "", *[f"- {n}" for n in extra], ""]
    lines += [
        EVAL_SECTION,
        "",
        "Filled by `eval/buildings.py` (train without one place, test on it).",
        "",
    ]
    return "\n".join(lines)


def write_model_card(path: Path, meta: dict[str, Any], notes: tuple[str, ...] = ()) -> Path:
    """Write :func:`render_model_card` to ``path`` atomically; returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_model_card(meta, notes), encoding="utf-8")
    os.replace(tmp, path)
    return path
