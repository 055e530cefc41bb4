"""RegionImage: a virtual image over many sources (georeference and ground area, no pixels)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from affine import Affine

from viper_rs.core.ground_area import projected_row_areas
from viper_rs.region.grid import WorkingGrid
from viper_rs.tiling.sources import Source


@dataclass
class RegionImage:
    """A region as an :class:`~viper_rs.core.image.Image`: shape, CRS, transform, ground area
    per pixel row and of mask windows; the pixels stay in the sources and are read chip by
    chip (:mod:`viper_rs.region.chips`), never as one array."""

    grid: WorkingGrid
    sources: list[Source]
    band_names: list[str] = field(default_factory=lambda: ["R", "G", "B"])
    path: str | None = None
    #: What an answer about the region says of its imagery (none so far: a region is
    #: always georeferenced).
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Display name."""
        return self.path or f"region of {len(self.sources)} source(s)"

    @property
    def height(self) -> int:
        """Rows of the working grid."""
        return self.grid.height

    @property
    def width(self) -> int:
        """Columns of the working grid."""
        return self.grid.width

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the working grid."""
        return self.grid.shape

    @property
    def crs(self) -> Any:
        """The working CRS."""
        return self.grid.crs

    @property
    def transform(self) -> Affine:
        """Transform of the working grid's pixel (0, 0)."""
        return self.grid.transform

    georeferenced = True
    area_unit = "m2"
    roi = None

    @cached_property
    def row_pixel_area(self) -> np.ndarray:
        """(H,) true ground area in m2 of one pixel in each row."""
        return projected_row_areas(self.crs, self.transform, self.width, self.height)

    @property
    def pixel_area_m2(self) -> float:
        """Mean ground area of a pixel in m2."""
        return float(self.row_pixel_area.mean())

    @property
    def ground_sampling_distance(self) -> float:
        """Metres per pixel (square root of the mean pixel area)."""
        return float(np.sqrt(self.pixel_area_m2))

    def window_area(self, mask: np.ndarray, r0: int, c0: int) -> float:
        """Ground area in m2 of a boolean mask covering rows ``r0:r0+h`` (any columns)."""
        h = mask.shape[0]
        return float(mask.sum(axis=1) @ self.row_pixel_area[r0 : r0 + h])

    @cached_property
    def content_hash(self) -> str:
        """Identity of the sources (fingerprints) and the working grid."""
        h = hashlib.sha1()
        for s in self.sources:
            h.update(f"{s.key}|{s.fingerprint}".encode())
        h.update(repr((tuple(self.transform), str(self.crs), self.shape)).encode())
        return h.hexdigest()

    def pixel_to_crs(self, col: float, row: float) -> tuple[float, float]:
        """Grid pixel (col, row) -> working CRS (x, y)."""
        x, y = self.transform @ (col, row)
        return float(x), float(y)

    def pixel_to_lonlat(self, col: float, row: float) -> tuple[float, float]:
        """Grid pixel (col, row) -> WGS84 (lon, lat)."""
        from rasterio.warp import transform as warp

        x, y = self.pixel_to_crs(col, row)
        xs, ys = warp(self.crs, "EPSG:4326", [x], [y])
        return float(xs[0]), float(ys[0])

    def describe(self) -> dict[str, Any]:
        """Plain summary for answers and logs (the keys of GeoImage.describe, plus the
        sources and the area's WGS84 bounds)."""
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "bands": list(self.band_names),
            "crs": str(self.crs),
            "gsd_m": self.ground_sampling_distance,
            "area_unit": self.area_unit,
            "sources": len(self.sources),
            "bounds_wgs84": self.grid.lonlat_bounds(0, 0, self.height, self.width),
        }
