"""RSVQA-HR tiles: their georeference, rebuilt from the release's image records.

An image record gives the tile's upper-left corner in EPSG:3857 and its ground pixel size
(0.1524 m); the tile's transform follows. Areas stay true ground m2 here: RSVQA's own
EPSG:3857 area convention and answer buckets belong to the evaluation (``eval/``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from affine import Affine

log = logging.getLogger(__name__)

#: CRS of the image records' corners.
RSVQA_CRS = "EPSG:3857"
#: Ground sampling distance of RSVQA-HR tiles (m) and their side (px).
RSVQA_GSD_M = 0.1524
RSVQA_TILE_PX = 512
#: Sphere radius of EPSG:3857 (m).
EARTH_RADIUS = 6378137.0


def lat_from_mercator_y(y: float) -> float:
    """Latitude (degrees) of an EPSG:3857 northing."""
    return math.degrees(math.atan(math.sinh(y / EARTH_RADIUS)))


def tile_transform(record: dict[str, Any]) -> Affine:
    """EPSG:3857 transform of a tile: 0.1524 m ground pixels are 0.1524*sec(lat) map units."""
    ulx, uly = float(record["upperleft_map_x"]), float(record["upperleft_map_y"])
    res_m = float(str(record.get("res_x", RSVQA_GSD_M)).rstrip("m") or RSVQA_GSD_M)
    lat = lat_from_mercator_y(uly)
    res = res_m / math.cos(math.radians(lat))
    return Affine(res, 0.0, ulx, 0.0, -res, uly)


def find_image_record(path: Path, memo: dict[Path, dict[int, dict]] | None = None) -> dict | None:
    """The image record of a release tile ``.../images/{id}.png`` or ``.../Data/{id}.tif``
    (from any ``USGS_split_*_images.json`` beside those folders; unreadable ones are
    skipped), or None. ``memo`` keeps each release folder's records between calls."""
    path = Path(path)
    if path.parent.name not in ("images", "Data") or not path.stem.isdigit():
        return None
    memo = {} if memo is None else memo
    root = path.parent.parent
    if root not in memo:
        records: dict[int, dict] = {}
        for index in sorted(root.glob("USGS_split_*_images.json")):
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
                for r in data.get("images", []):
                    if "upperleft_map_x" in r and "upperleft_map_y" in r:
                        records[int(r["id"])] = r
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.info("ignoring %s: %s", index, exc)
        memo[root] = records
    return memo[root].get(int(path.stem))
