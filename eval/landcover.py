"""Compare the spectral detector with pixel-aligned land-cover labels (Chesapeake-style).

Usage::

    python -m eval.landcover [--data ../shared/data/naip/wv_landcover] [--imagery naip2014]
                             [--json]

Each patch ``<stem>_landcover.tif`` (1 water, 2 tree canopy, 3 low vegetation, 4 barren,
5 impervious other, 6 impervious road) and ``<stem>_buildings.tif`` (footprint mask) is
compared with the detector run on ``<stem>_<imagery>.tif``. Per patch and per class the
table gives label area, predicted area (m2), absolute and relative error and pixel IoU;
buildings are compared as counts (8-connected label blobs vs detected instances).
The files have no CRS; pixels are 1 m (``--gsd``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "naip" / "wv_landcover"

#: Evaluated classes: name -> (label codes, detector class).
CLASSES: dict[str, tuple[tuple[int, ...], str]] = {
    "water": ((1,), "water"),
    "tree_canopy": ((2,), "tree"),
    "low_vegetation": ((3,), "low_vegetation"),
    "barren": ((4,), "bare_soil"),
    "impervious": ((5, 6), "impervious"),
    "road": ((6,), "road"),
}
#: Land-cover codes used for overall pixel accuracy (label code -> detector cover code).
COVER_CLASSES = {1: "water", 2: "tree", 3: "low_vegetation", 4: "bare_soil", 5: "impervious",
                 6: "impervious"}


@dataclass
class ClassResult:
    """Areas (m2) and overlap for one class on one patch (or summed over patches)."""

    label_m2: float = 0.0
    pred_m2: float = 0.0
    inter_m2: float = 0.0
    union_m2: float = 0.0

    def add(self, other: ClassResult) -> None:
        self.label_m2 += other.label_m2
        self.pred_m2 += other.pred_m2
        self.inter_m2 += other.inter_m2
        self.union_m2 += other.union_m2

    @property
    def abs_err(self) -> float:
        return abs(self.pred_m2 - self.label_m2)

    @property
    def rel_err(self) -> float | None:
        return None if self.label_m2 == 0 else self.abs_err / self.label_m2

    @property
    def iou(self) -> float | None:
        return None if self.union_m2 == 0 else self.inter_m2 / self.union_m2

    def as_dict(self) -> dict:
        return {
            "label_m2": round(self.label_m2, 1), "pred_m2": round(self.pred_m2, 1),
            "abs_err_m2": round(self.abs_err, 1),
            "rel_err": None if self.rel_err is None else round(self.rel_err, 4),
            "iou": None if self.iou is None else round(self.iou, 4),
        }


def _read(path: Path, gsd: float):
    from viper_rs.core.geo import GeoImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GeoImage.open(path, gsd=gsd)


def find_patches(data: Path, imagery: str) -> list[tuple[str, Path, Path, Path]]:
    """(stem, image, landcover, buildings) for every complete patch in ``data``."""
    out = []
    for lc in sorted(data.glob("*_landcover.tif")):
        stem = lc.name[: -len("_landcover.tif")]
        img = data / f"{stem}_{imagery}.tif"
        bld = data / f"{stem}_buildings.tif"
        if img.exists() and bld.exists():
            out.append((stem, img, lc, bld))
    return out


def evaluate(data: Path, imagery: str = "naip2014", gsd: float = 1.0) -> dict:
    """Per-patch and total comparison; returns plain data (see ``--json``)."""
    from skimage.measure import label as cc_label

    from viper_rs.core.config import Settings
    from viper_rs.vision.spectral import COVER_NAMES, SpectralDetector

    patches = find_patches(data, imagery)
    if not patches:
        raise SystemExit(
            f"no patches in {data}: expected <stem>_landcover.tif, <stem>_buildings.tif and "
            f"<stem>_{imagery}.tif"
        )
    det = SpectralDetector(Settings())
    name_to_code = {v: k for k, v in COVER_NAMES.items()}
    totals = {c: ClassResult() for c in CLASSES}
    rows = []
    correct = counted = 0
    b_label_total = b_pred_total = 0
    for stem, img_path, lc_path, b_path in patches:
        image = _read(img_path, gsd)
        labels = _read(lc_path, gsd).data[0].astype(np.int64)
        bmask = _read(b_path, gsd).data[0] > 0
        maps = det.class_maps(image)
        valid = image.valid
        per: dict[str, dict] = {}
        for cname, (codes, dcls) in CLASSES.items():
            lab = np.isin(labels, codes) & valid
            pred = maps.mask(dcls) & valid
            r = ClassResult(
                label_m2=image.mask_area(lab), pred_m2=image.mask_area(pred),
                inter_m2=image.mask_area(lab & pred), union_m2=image.mask_area(lab | pred),
            )
            totals[cname].add(r)
            per[cname] = r.as_dict()
        known = np.isin(labels, list(COVER_CLASSES)) & valid
        lut = np.zeros(max(COVER_CLASSES) + 1, dtype=np.uint8)
        for code, cname in COVER_CLASSES.items():
            lut[code] = name_to_code[cname]
        expected = lut[np.where(known, labels, 0)]
        correct += int((maps.cover[known] == expected[known]).sum())
        counted += int(known.sum())
        n_label = int(cc_label(bmask, connectivity=2).max())
        n_pred = len(det.find(image, "building"))
        b_label_total += n_label
        b_pred_total += n_pred
        bres = ClassResult(
            label_m2=image.mask_area(bmask), pred_m2=image.mask_area(maps.building),
            inter_m2=image.mask_area(bmask & maps.building),
            union_m2=image.mask_area(bmask | maps.building),
        )
        per["building"] = {**bres.as_dict(), "label_count": n_label, "pred_count": n_pred}
        rows.append({"patch": stem, "classes": per,
                     "pixel_accuracy": float((maps.cover[known] == expected[known]).mean())
                     if known.any() else None})
    return {
        "data": str(data),
        "imagery": imagery,
        "patches": rows,
        "totals": {c: r.as_dict() for c, r in totals.items()},
        "buildings": {"label_count": b_label_total, "pred_count": b_pred_total},
        "pixel_accuracy": correct / counted if counted else None,
    }


#: The question asked per label class, and the label codes it is scored against.
QUESTIONS = {
    "tree canopy": ("What is the area covered by trees?", (2,)),
    "low vegetation": ("What is the area covered by grass areas?", (3,)),
    "water": ("What is the area covered by water areas?", (1,)),
    "road": ("What is the area covered by roads?", (6,)),
    "impervious": ("What is the area covered by impervious surfaces?", (5, 6)),
}


def answer_areas(data: Path, imagery: str = "naip2014", gsd: float = 1.0) -> dict:
    """Area ANSWERS of the agent (question -> program -> sandbox -> m2) vs label areas."""
    import numpy as np

    from viper_rs.agent import Agent
    from viper_rs.core.config import Settings

    totals = {k: {"label_m2": 0.0, "answer_m2": 0.0, "errors": 0} for k in QUESTIONS}
    with Agent(Settings(detector="spectral", planner="rules")) as agent:
        for _stem, img_path, lc_path, _b in find_patches(data, imagery):
            image = _read(img_path, gsd)
            labels = _read(lc_path, gsd).data[0]
            for cname, (question, codes) in QUESTIONS.items():
                ans = agent.ask(image, question)
                totals[cname]["label_m2"] += image.mask_area(np.isin(labels, codes) & image.valid)
                if ans.error:
                    totals[cname]["errors"] += 1
                else:
                    totals[cname]["answer_m2"] += float(ans.value)
    for t in totals.values():
        t["abs_err_m2"] = abs(t["answer_m2"] - t["label_m2"])
        t["rel_err"] = t["abs_err_m2"] / t["label_m2"] if t["label_m2"] else None
    return totals


def print_answers(totals: dict) -> None:
    """Table of answered vs labelled areas."""
    print("\nagent AREA ANSWERS summed over the patches "
          "(question -> program -> sandbox -> m2)")
    print(f"{'class':<16}{'label m2':>11}{'answer m2':>11}{'abs err':>11}{'rel err':>9}  question")
    for cname, t in totals.items():
        print(f"{cname:<16}{_fmt(t['label_m2']):>11}{_fmt(t['answer_m2']):>11}"
              f"{_fmt(t['abs_err_m2']):>11}{_fmt(t['rel_err'], True):>9}  {QUESTIONS[cname][0]}"
              + (f"  ({t['errors']} errors)" if t["errors"] else ""))


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:,.0f}"


def print_report(res: dict) -> None:
    """Human-readable tables on stdout."""
    print(f"land cover vs labels: {res['data']} (imagery: {res['imagery']})")
    head = f"{'class':<16}{'label m2':>11}{'pred m2':>11}{'abs err':>11}{'rel err':>9}{'IoU':>8}"
    for row in res["patches"]:
        print(f"\n{row['patch']}  pixel accuracy {_fmt(row['pixel_accuracy'], True)}")
        print(head)
        for cname, r in row["classes"].items():
            if r["label_m2"] == 0 and r["pred_m2"] == 0:
                continue
            extra = ""
            if cname == "building":
                extra = f"  count label {r['label_count']} pred {r['pred_count']}"
            print(
                f"{cname:<16}{_fmt(r['label_m2']):>11}{_fmt(r['pred_m2']):>11}"
                f"{_fmt(r['abs_err_m2']):>11}{_fmt(r['rel_err'], True):>9}"
                f"{_fmt(r['iou'], True):>8}{extra}"
            )
    print(f"\nTOTAL over {len(res['patches'])} patches "
          f"(pixel accuracy {_fmt(res['pixel_accuracy'], True)})")
    print(head)
    for cname, r in res["totals"].items():
        print(
            f"{cname:<16}{_fmt(r['label_m2']):>11}{_fmt(r['pred_m2']):>11}"
            f"{_fmt(r['abs_err_m2']):>11}{_fmt(r['rel_err'], True):>9}{_fmt(r['iou'], True):>8}"
        )
    b = res["buildings"]
    print(f"{'building count':<16}{b['label_count']:>11}{b['pred_count']:>11}"
          f"{abs(b['pred_count'] - b['label_count']):>11}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m eval.landcover", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="folder with *_landcover.tif, *_buildings.tif and imagery "
                         f"(default: {DEFAULT_DATA})")
    ap.add_argument("--imagery", default="naip2014",
                    help="imagery suffix: naip2014 (the labels' year) or naip_other_year")
    ap.add_argument("--gsd", type=float, default=1.0, help="pixel size in metres (default 1)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = ap.parse_args(argv)
    data = args.data if args.data.is_absolute() else (Path.cwd() / args.data)
    if not data.is_dir():
        print(f"error: land-cover data folder not found: {data} "
              "(pass --data; the shared data lives beside the repository)", file=sys.stderr)
        return 2
    res = evaluate(data, args.imagery, args.gsd)
    res["answers"] = answer_areas(data, args.imagery, args.gsd)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print_report(res)
        print_answers(res["answers"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
