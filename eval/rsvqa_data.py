"""RSVQA-HR release layout: ``USGS_split_{split}_{images,questions,answers}.json`` plus
``Data/{id}.tif`` or ``images/{id}.png``; georeference rebuilt from each image record."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affine import Affine

from eval.scoring import lat_from_mercator_y
from viper_rs.errors import ImageError

RSVQA_GSD_M = 0.1524
RSVQA_TILE_PX = 512


@dataclass(frozen=True)
class Record:
    """One question with its answer and image."""

    question_id: int
    image_id: int
    type: str
    question: str
    answer: str
    image: dict[str, Any]

    @property
    def lat(self) -> float:
        """Latitude of the tile's upper-left corner (degrees)."""
        return lat_from_mercator_y(float(self.image["upperleft_map_y"]))


def _load(path: Path, key: str) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (expected the official RSVQA-HR layout)")
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if key not in data:
        raise ValueError(f"{path}: no {key!r} list")
    return data[key]


def load_images(data_dir: Path, split: str) -> list[dict[str, Any]]:
    """Active image records of a split (``USGS_split_{split}_images.json``), in id order."""
    path = Path(data_dir) / f"USGS_split_{split}_images.json"
    return sorted((r for r in _load(path, "images") if r.get("active", True)), key=lambda r: r["id"])


def load_split(data_dir: Path, split: str) -> list[Record]:
    """Active questions of a split, in question-id order, with answers and image records."""
    data_dir = Path(data_dir)
    stem = f"USGS_split_{split}"
    images = {r["id"]: r for r in _load(data_dir / f"{stem}_images.json", "images") if r.get("active", True)}
    answers = {a["id"]: a for a in _load(data_dir / f"{stem}_answers.json", "answers") if a.get("active", True)}
    out = []
    for q in _load(data_dir / f"{stem}_questions.json", "questions"):
        if not q.get("active", True) or q["img_id"] not in images:
            continue
        ans = [answers[i]["answer"] for i in q.get("answers_ids", []) if i in answers]
        if not ans:
            continue
        out.append(Record(q["id"], q["img_id"], q["type"], q["question"], ans[0], images[q["img_id"]]))
    out.sort(key=lambda r: r.question_id)
    return out


def image_path(data_dir: Path, image_id: int) -> Path:
    """``Data/{id}.tif`` (official release) or ``images/{id}.png``."""
    for p in (Path(data_dir) / "Data" / f"{image_id}.tif", Path(data_dir) / "images" / f"{image_id}.png"):
        if p.exists():
            return p
    raise ImageError(f"image {image_id} not found under {data_dir}/Data or {data_dir}/images")


def tile_transform(record: dict[str, Any]) -> Affine:
    """EPSG:3857 transform of a tile: 0.1524 m ground pixels are 0.1524*sec(lat) map units."""
    ulx, uly = float(record["upperleft_map_x"]), float(record["upperleft_map_y"])
    res_m = float(str(record.get("res_x", RSVQA_GSD_M)).rstrip("m") or RSVQA_GSD_M)
    lat = lat_from_mercator_y(uly)
    res = res_m / math.cos(math.radians(lat))
    return Affine(res, 0.0, ulx, 0.0, -res, uly)


def open_tile(data_dir: Path, record: dict[str, Any]):
    """The dataset's own image as a GeoImage in EPSG:3857 with its rebuilt transform."""
    from viper_rs.geo import GeoImage

    path = image_path(data_dir, record["id"])
    return GeoImage.open(path, crs="EPSG:3857", transform=tile_transform(record))
