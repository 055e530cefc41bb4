"""RSVQA-HR release layout: ``USGS_split_{split}_{images,questions,answers}.json`` plus
``Data/{id}.tif`` or ``images/{id}.png``, opened with the georeference
:mod:`viper_rs.datasets.rsvqa` rebuilds from each image record; the question ids a run saves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viper_rs.core.errors import ImageError
from viper_rs.datasets.rsvqa import RSVQA_CRS, lat_from_mercator_y, tile_transform


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


def read_question_ids(path: Path) -> list[int]:
    """Question ids from a file: a JSON list, or the ``question_ids.json`` a run writes."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    ids = data.get("question_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{path}: expected a list of question ids (integers)")
    return ids


def image_path(data_dir: Path, image_id: int) -> Path:
    """``Data/{id}.tif`` (official release) or ``images/{id}.png``."""
    for p in (Path(data_dir) / "Data" / f"{image_id}.tif", Path(data_dir) / "images" / f"{image_id}.png"):
        if p.exists():
            return p
    raise ImageError(f"image {image_id} not found under {data_dir}/Data or {data_dir}/images")


def open_tile(data_dir: Path, record: dict[str, Any]):
    """The dataset's own image as a GeoImage in EPSG:3857 with its rebuilt transform."""
    from viper_rs.core.geo import GeoImage

    path = image_path(data_dir, record["id"])
    return GeoImage.open(path, crs=RSVQA_CRS, transform=tile_transform(record))
