"""The Image protocol: what the agent, the tools, places, exports and the UI read of an image.

Two kinds implement it: :class:`viper_rs.core.geo.GeoImage` (pixels in memory) and a region's
virtual image (:class:`viper_rs.region.image.RegionImage`: a working grid over many sources,
its pixels read chip by chip). Code that reads pixels (``data``, ``valid``, bands) takes a
GeoImage; code that only places, measures or describes takes an :class:`Image`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from affine import Affine


class Image(Protocol):
    """An image's grid, georeference and ground area, without its pixels."""

    @property
    def name(self) -> str:
        """Display name (the path, or what the image was made from)."""
        ...

    @property
    def height(self) -> int:
        """Rows."""
        ...

    @property
    def width(self) -> int:
        """Columns."""
        ...

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        ...

    @property
    def band_names(self) -> list[str]:
        """Band roles, in band order (``R``, ``G``, ``B``, ``NIR``...)."""
        ...

    @property
    def crs(self) -> Any:
        """The CRS (a rasterio CRS), or None when the image has none."""
        ...

    @property
    def transform(self) -> Affine:
        """Affine transform of pixel (0, 0) to CRS coordinates."""
        ...

    @property
    def georeferenced(self) -> bool:
        """True when pixels have a ground size (a CRS or a ground sampling distance)."""
        ...

    @property
    def area_unit(self) -> str:
        """``"m2"`` when ground area is known, else ``"px"``."""
        ...

    @property
    def row_pixel_area(self) -> np.ndarray:
        """(H,) ground area of one pixel in each row (in :attr:`area_unit`)."""
        ...

    @property
    def pixel_area_m2(self) -> float | None:
        """Mean ground area of a pixel in m2 (None without a ground size)."""
        ...

    @property
    def ground_sampling_distance(self) -> float | None:
        """Metres per pixel (None without a ground size)."""
        ...

    @property
    def content_hash(self) -> str:
        """Identity of the image's content (caches key on it)."""
        ...

    @property
    def notes(self) -> list[str]:
        """What an answer about this image must say of it (areas in pixels...)."""
        ...

    def window_area(self, mask: np.ndarray, r0: int, c0: int) -> float:
        """Ground area of a boolean mask whose pixel (0, 0) is image pixel (r0, c0)."""
        ...

    def pixel_to_crs(self, col: float, row: float) -> tuple[float, float]:
        """Pixel (col, row) -> CRS (x, y)."""
        ...

    def pixel_to_lonlat(self, col: float, row: float) -> tuple[float, float] | None:
        """Pixel (col, row) -> WGS84 (lon, lat), None without a CRS."""
        ...

    def describe(self) -> dict[str, Any]:
        """Plain summary for answers and logs (name, size, bands, CRS, GSD, area unit...)."""
        ...
