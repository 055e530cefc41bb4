"""GeoImage: pixels plus georeference, nodata mask, band roles and true ground pixel area."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from viper_rs.core.bands import expand_palette, image_bands, parse_bands
from viper_rs.core.errors import ImageError
from viper_rs.core.georef import georeference_problem, gsd_problem, no_georeference_note
from viper_rs.core.ground_area import geodesic_row_areas, projected_row_areas
from viper_rs.core.pixel_values import finite_pixels, nominal_white_point
from viper_rs.core.raster_georef import georeference, user_crs
from viper_rs.core.raster_read import checked_source, read_raster

__all__ = ["GeoImage"]


@dataclass
class GeoImage:
    """Bands x H x W pixels with CRS, affine transform, validity mask and band roles (an
    :class:`~viper_rs.core.image.Image` with its pixels).

    ``pixel_area_m2`` is the true ground area of one pixel: |det(transform)| for a
    projected CRS (converted to metres), geodesic per-row area for a geographic CRS,
    ``gsd**2`` for an image with only a ground sampling distance, and ``None`` when
    nothing is known (areas are then reported in pixels, see ``area_unit``).

    ``roi`` (optional, boolean, image shape) is the region of interest: pixels outside it
    are context that models see but answers never count (``answer_mask``).
    """

    data: np.ndarray
    band_names: list[str]
    transform: Affine = field(default_factory=Affine.identity)
    crs: object | None = None  # rasterio.crs.CRS
    valid: np.ndarray | None = None
    gsd: float | None = None
    path: str | None = None
    white_point: float | None = None
    roi: np.ndarray | None = None
    #: What an answer about this image says of its georeference (areas in pixels, a
    #: georeference set aside for ``--gsd``...).
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.data.ndim == 2:
            self.data = self.data[None]
        if self.data.ndim != 3 or 0 in self.data.shape:
            raise ImageError(f"{self.name}: image has no pixels (shape {self.data.shape})")
        if len(self.band_names) != self.data.shape[0]:
            raise ImageError(
                f"{self.name}: {self.data.shape[0]} bands but {len(self.band_names)} band names "
                f"({','.join(self.band_names)})"
            )
        finite = finite_pixels(self.data)
        if finite is not None and not finite.all():
            self.data = np.where(np.isfinite(self.data), self.data, 0).astype(self.data.dtype)
        if self.valid is None:
            self.valid = np.ones(self.data.shape[1:], dtype=bool) if finite is None else finite
        else:
            self.valid = np.asarray(self.valid, dtype=bool)
            if finite is not None:
                self.valid = self.valid & finite
        if self.valid.shape != self.data.shape[1:]:
            raise ImageError(f"{self.name}: validity mask shape {self.valid.shape} != image shape")
        if not self.valid.any():
            raise ImageError(f"{self.name}: every pixel is nodata or not a number")
        if self.roi is not None:
            self.roi = np.asarray(self.roi, dtype=bool)
            if self.roi.shape != self.data.shape[1:]:
                raise ImageError(
                    f"{self.name}: region of interest shape {self.roi.shape} != image shape"
                )
            if not (self.roi & self.valid).any():
                raise ImageError(f"{self.name}: the region of interest holds no valid pixel")
        if self.white_point is None:
            self.white_point = nominal_white_point(self.data, self.valid)
        if self.crs is None and self.gsd is not None and self.transform == Affine.identity():
            self.transform = Affine(self.gsd, 0, 0, 0, -self.gsd, 0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(
        cls,
        path: str | Path,
        gsd: float | None = None,
        bands: str | list[str] | None = None,
        crs: object | None = None,
        transform: Affine | None = None,
        drivers: tuple[str, ...] | None = None,
        window: tuple[int, int, int, int] | None = None,
        white_point: float | None = None,
        out_size: tuple[int, int] | None = None,
        remote: bool = False,
    ) -> GeoImage:
        """Read a GeoTIFF/COG, PNG or JPEG (or one ``window`` of it).

        ``gsd`` (m/pixel) gives plain images a ground size; ``crs`` + ``transform``
        georeference an image that has none (they are ignored when the file has a CRS).
        ``drivers`` limits the GDAL formats tried (default
        :data:`viper_rs.core.rasterfile.ALLOWED_DRIVERS`: a VRT renamed ``.tif`` never reads
        other files); special files (FIFO, device, socket) are refused before GDAL sees them.
        ``window`` = ``(col_off, row_off, width, height)`` reads only those pixels, with the
        window's own transform; ``out_size`` = ``(width, height)`` reads them averaged to
        that size (overviews are used when present); ``white_point`` fixes the value that
        maps to 1.0 (chips of one source share the source's). With ``remote`` (a URL typed by
        the user, or a source accepted under that rule), ``path`` may also be a GDAL URL
        (``https://``, ``/vsicurl/``, ``s3://``); see :mod:`viper_rs.core.rasterfile`.
        """
        p = checked_source(path, gsd, remote)
        raster = read_raster(p, drivers, window, out_size)
        if raster.colormap is not None:
            expand_palette(raster)
        data, mask, names = image_bands(p, raster, bands)
        whole = window is None and out_size is None  # the transform is the file's own
        image_crs, image_transform, gsd, notes = georeference(p, raster, crs, transform, gsd,
                                                               whole)
        if not mask.any():
            raise ImageError(f"{p}: every pixel is nodata")
        return cls(
            data=data, band_names=names, transform=image_transform, crs=image_crs, valid=mask,
            gsd=gsd, path=str(p), white_point=white_point, notes=notes,
        )

    @classmethod
    def from_array(
        cls,
        data: np.ndarray,
        band_names: list[str] | str = "R,G,B",
        gsd: float | None = None,
        crs: object | None = None,
        transform: Affine | None = None,
        valid: np.ndarray | None = None,
        name: str | None = None,
        roi: np.ndarray | None = None,
    ) -> GeoImage:
        """Wrap an in-memory ``(bands, H, W)`` or ``(H, W)`` array; ImageError when ``crs``
        and ``transform`` (or ``gsd``) are not a usable georeference (:mod:`viper_rs.core.georef`)."""
        if isinstance(band_names, str):
            band_names = parse_bands(band_names) or []
        label = name or "<array>"
        problem = gsd_problem(label, gsd) if crs is None else None
        if problem is not None:
            raise ImageError(problem)
        if crs is not None:
            crs = user_crs(label, crs)
        if transform is None:
            transform = Affine(gsd, 0, 0, 0, -gsd, 0) if gsd else Affine.identity()
        if crs is not None:
            arr = np.asarray(data)
            problem = georeference_problem(label, crs, transform, int(arr.shape[-1]),
                                           int(arr.shape[-2]) if arr.ndim >= 2 else 0)
            if problem is not None:
                raise ImageError(problem)
        notes = [no_georeference_note(label)] if crs is None and not gsd else []
        return cls(
            data=np.asarray(data), band_names=list(band_names), transform=transform, crs=crs,
            valid=valid, gsd=gsd if crs is None else None, path=name, roi=roi, notes=notes,
        )

    # ------------------------------------------------------------------ basic facts
    @property
    def name(self) -> str:
        """Short display name (file name or ``<array>``)."""
        return Path(self.path).name if self.path else "<array>"

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        """Columns."""
        return int(self.data.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.height, self.width

    def has(self, role: str) -> bool:
        """Whether a band role (``R``, ``G``, ``B``, ``NIR``) is present."""
        return role in self.band_names

    def band_index(self, role: str) -> int:
        """Index in ``data`` of the band playing ``role`` (R, G, B fall back to GRAY)."""
        if role not in self.band_names:
            if role in ("R", "G", "B") and "GRAY" in self.band_names:
                role = "GRAY"
            else:
                raise ImageError(f"{self.name}: no {role} band (bands: {','.join(self.band_names)})")
        return self.band_names.index(role)

    def band(self, role: str) -> np.ndarray:
        """One band as float32 scaled to 0..1 by the image's white point."""
        x = self.data[self.band_index(role)].astype(np.float32)
        x /= np.float32(self.white_point)
        return x

    def rgb(self) -> np.ndarray:
        """(H, W, 3) float32 in 0..1 (gray images are repeated)."""
        out = np.empty((*self.shape, 3), dtype=np.float32)
        for k, role in enumerate(("R", "G", "B")):
            out[..., k] = self.band(role)
        return np.clip(out, 0, 1, out=out)

    def rgb_uint8(self) -> np.ndarray:
        """(H, W, 3) uint8 for display and for models that take 8-bit RGB."""
        out = np.empty((*self.shape, 3), dtype=np.uint8)
        for k, role in enumerate(("R", "G", "B")):
            if self.data.dtype == np.uint8 and self.white_point == 255.0:
                out[..., k] = self.data[self.band_index(role)]  # x / 255 * 255 is x
                continue
            x = np.clip(self.band(role), 0, 1)
            x *= 255
            x += 0.5
            out[..., k] = x  # truncated, as astype(uint8)
        return out

    @property
    def answer_mask(self) -> np.ndarray:
        """Pixels answers may count: valid and inside the region of interest (if any)."""
        return self.valid if self.roi is None else (self.valid & self.roi)

    @cached_property
    def content_hash(self) -> str:
        """Hash of pixels, bands, georeference and region of interest: the key of every
        per-image cache."""
        h = hashlib.sha1()
        h.update(np.ascontiguousarray(self.data).tobytes())
        h.update(repr((self.band_names, tuple(self.transform), str(self.crs), self.gsd)).encode())
        if self.roi is not None:
            h.update(b"roi")
            h.update(np.packbits(self.roi).tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ ground area
    @property
    def georeferenced(self) -> bool:
        """True when a CRS or a GSD gives pixels a ground size."""
        return self.crs is not None or self.gsd is not None

    @property
    def area_unit(self) -> str:
        """``"m2"`` when ground area is known, else ``"px"``."""
        return "m2" if self.georeferenced else "px"

    @cached_property
    def row_pixel_area(self) -> np.ndarray:
        """(H,) ground area in m2 of one pixel in each row (1.0 per pixel when unknown)."""
        h = self.height
        if self.crs is None:
            a = (self.gsd or 1.0) ** 2 if self.gsd else 1.0
            return np.full(h, a, dtype=np.float64)
        if self.crs.is_geographic:
            return geodesic_row_areas(self.transform, h, self.crs)
        return projected_row_areas(self.crs, self.transform, self.width, h)

    @property
    def pixel_area_m2(self) -> float | None:
        """Mean ground area of a pixel in m2, ``None`` when unknown."""
        if not self.georeferenced:
            return None
        return float(self.row_pixel_area.mean())

    @property
    def ground_sampling_distance(self) -> float | None:
        """Metres per pixel (square root of the mean pixel area), ``None`` when unknown."""
        a = self.pixel_area_m2
        return None if a is None else float(np.sqrt(a))

    def mask_area(self, mask: np.ndarray) -> float:
        """Ground area (m2, or pixels when unknown) of a boolean mask on this image."""
        return float(mask.sum(axis=1) @ self.row_pixel_area)

    def window_area(self, mask: np.ndarray, r0: int, c0: int) -> float:
        """Ground area (m2, or pixels when unknown) of the answer-mask pixels of a boolean
        mask covering rows ``r0:r0+h`` and columns ``c0:c0+w`` of this image."""
        h, w = mask.shape
        inside = mask & self.answer_mask[r0 : r0 + h, c0 : c0 + w]
        return float(inside.sum(axis=1) @ self.row_pixel_area[r0 : r0 + h])

    def describe(self) -> dict[str, Any]:
        """Plain summary for answers and logs."""
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "bands": self.band_names,
            "crs": str(self.crs) if self.crs is not None else None,
            "gsd_m": self.ground_sampling_distance,
            "area_unit": self.area_unit,
            "valid_fraction": float(self.valid.mean()),
            **({} if self.roi is None else {"roi_fraction": float(self.roi.mean())}),
        }

    def pixel_to_crs(self, col: float, row: float) -> tuple[float, float]:
        """Pixel (col, row) -> CRS (x, y)."""
        x, y = self.transform @ (col, row)
        return float(x), float(y)

    def pixel_to_lonlat(self, col: float, row: float) -> tuple[float, float] | None:
        """Pixel (col, row) -> WGS84 (lon, lat), ``None`` without a CRS."""
        if self.crs is None:
            return None
        from rasterio.warp import transform as warp

        x, y = self.pixel_to_crs(col, row)
        xs, ys = warp(self.crs, "EPSG:4326", [x], [y])
        return float(xs[0]), float(ys[0])
