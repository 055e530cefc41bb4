"""Region: one object instance found in an image, with its mask, polygon and true area."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Region:
    """An object instance.

    The mask is stored as a boolean ``crop`` placed at ``origin = (row0, col0)`` in an
    image of ``image_shape``; ``mask`` rebuilds the full-size mask on demand.

    Pixel geometry uses image coordinates: ``bbox = (col_min, row_min, col_max, row_max)``
    (max exclusive), ``centroid = (col, row)``; row 0 is the top of the image.
    ``polygon`` is a shapely geometry in the image CRS (pixel coordinates without one).
    ``area_m2`` is true ground area (pixels when the image has no ground size, see
    ``area_unit``).
    """

    crop: np.ndarray
    origin: tuple[int, int]
    image_shape: tuple[int, int]
    label: str
    query: str
    score: float
    area_m2: float
    area_unit: str = "m2"
    polygon: Any = None
    id: int = -1
    detector: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_mask(cls, mask: np.ndarray, **kwargs: Any) -> Region:
        """Build from a full-size boolean mask (cropped to its bounding box)."""
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            r0 = c0 = 0
            crop = np.zeros((0, 0), dtype=bool)
        else:
            r0, c0 = int(rows[0]), int(cols[0])
            crop = np.ascontiguousarray(mask[r0 : rows[-1] + 1, c0 : cols[-1] + 1], dtype=bool)
        return cls(crop=crop, origin=(r0, c0), image_shape=tuple(mask.shape), **kwargs)

    @property
    def mask(self) -> np.ndarray:
        """Full-size boolean mask (H, W)."""
        return self.window(0, 0, *self.image_shape)

    def window(self, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        """The mask inside rows r0:r1 and columns c0:c1 (may extend past the image)."""
        out = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        self.paint(out, (r0, c0))
        return out

    def paint(self, target: np.ndarray, offset: tuple[int, int] = (0, 0)) -> None:
        """OR the mask into ``target`` whose pixel (0, 0) is image pixel ``offset``."""
        (or0, oc0), (h, w) = self.origin, self.crop.shape
        r0, c0 = offset
        sr0, sc0 = max(or0, r0), max(oc0, c0)
        sr1, sc1 = min(or0 + h, r0 + target.shape[0]), min(oc0 + w, c0 + target.shape[1])
        if sr1 > sr0 and sc1 > sc0:
            target[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] |= self.crop[
                sr0 - or0 : sr1 - or0, sc0 - oc0 : sc1 - oc0
            ]

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(col_min, row_min, col_max, row_max), max exclusive."""
        r0, c0 = self.origin
        h, w = self.crop.shape
        return c0, r0, c0 + w, r0 + h

    @property
    def centroid(self) -> tuple[float, float]:
        """(col, row) of the mask's centre of mass (pixel centres at +0.5)."""
        key = (id(self.crop), self.origin)
        cached = self.__dict__.get("_centroid")
        if cached is not None and cached[0] == key:
            return cached[1]
        rr, cc = np.nonzero(self.crop)
        if rr.size == 0:
            value = (0.0, 0.0)
        else:
            value = (float(cc.mean() + 0.5 + self.origin[1]),
                     float(rr.mean() + 0.5 + self.origin[0]))
        self.__dict__["_centroid"] = (key, value)
        return value

    @property
    def pixel_count(self) -> int:
        """Number of mask pixels."""
        return int(self.crop.sum())

    def summary(self) -> dict[str, Any]:
        """Plain-data view sent to sandboxed programs and shown in traces."""
        c = self.centroid
        return {
            "id": self.id,
            "label": self.label,
            "query": self.query,
            "score": round(float(self.score), 4),
            "area_m2": round(float(self.area_m2), 3),
            "area_unit": self.area_unit,
            "bbox": list(self.bbox),
            "centroid": [round(c[0], 2), round(c[1], 2)],
            "detector": self.detector,
        }

    def to_geojson_feature(self) -> dict[str, Any]:
        """GeoJSON Feature in the image CRS (pixel coordinates without one)."""
        from shapely.geometry import mapping

        geom = mapping(self.polygon) if self.polygon is not None else None
        return {"type": "Feature", "geometry": geom, "properties": self.summary()}


def pixel_polygon(crop: np.ndarray) -> Any:
    """Outline of a cropped boolean mask in pixel units (for shape measures): a shapely
    Polygon, the largest when the mask has several parts, or None for an empty mask."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    geoms = [shape(g) for g, v in shapes(crop.astype(np.uint8), mask=crop) if v == 1]
    if not geoms:
        return None
    if len(geoms) == 1:
        return geoms[0]
    return max(geoms, key=lambda g: g.area)
