"""GeoImage: pixels plus georeference, nodata mask, band roles and true ground pixel area."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from viper_rs.core.errors import ImageError, ImageTooLarge, first_line
from viper_rs.core.georef import georeference_problem, gsd_problem, no_georeference_note
from viper_rs.core.rasterfile import (
    REMOTE_PREFIXES,
    checked_path,
    is_remote,
    open_raster,
    why_unreadable,
)

__all__ = ["REMOTE_PREFIXES", "GeoImage", "is_remote"]

log = logging.getLogger(__name__)

#: Band roles the library understands.
BAND_ROLES = ("R", "G", "B", "NIR")
_ROLE_ALIASES = {
    "r": "R", "red": "R", "g": "G", "green": "G", "b": "B", "blue": "B",
    "nir": "NIR", "n": "NIR", "near infrared": "NIR", "near-infrared": "NIR",
    "nearinfrared": "NIR", "infrared": "NIR", "ir": "NIR",
    "gray": "GRAY", "grey": "GRAY", "l": "GRAY", "pan": "GRAY", "panchromatic": "GRAY",
    "alpha": "ALPHA", "a": "ALPHA",
}
#: The most pixels one read may decode whatever the memory budget (a fixed backstop; the
#: budget itself is checked by the :func:`admission` check of the caller, see
#: :mod:`viper_rs.vision.cost`).
MAX_PIXELS = 120_000_000
#: GDAL's block cache while pixels are read (MB). Its default (5% of the machine's memory)
#: kept every decoded tile of a whole-image read besides the image itself (+4 B/px of a
#: 16 Mpx RGB GeoTIFF); tiles are decoded once either way.
READ_CACHE_MB = 64


def parse_bands(spec: str | list[str] | None) -> list[str] | None:
    """Parse ``"R,G,B,NIR"`` (or a list) into canonical band role names."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        key = item.strip().lower()
        if not key:
            raise ImageError(f"empty band name in --bands {spec!r}")
        out.append(_ROLE_ALIASES.get(key, item.strip().upper()))
    return out


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
        finite = _finite_pixels(self.data)
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
            self.white_point = _white_point(self.data, self.valid)
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
        p = _checked_source(path, gsd, remote)
        raster = _read_raster(p, drivers, window, out_size)
        if raster.colormap is not None:
            _expand_palette(raster)
        data, mask, names = _image_bands(p, raster, bands)
        whole = window is None and out_size is None  # the transform is the file's own
        image_crs, image_transform, gsd, notes = _georeference(p, raster, crs, transform, gsd,
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
            crs = _user_crs(label, crs)
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
            return _geodesic_row_areas(self.transform, h, self.crs)
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


# ---------------------------------------------------------------------- reading files
@dataclass
class _Raster:
    """What :meth:`GeoImage.open` reads from a file, before band roles and georeference."""

    data: np.ndarray  # bands x H x W as stored
    mask: np.ndarray  # GDAL's dataset mask: True where valid
    interp: list[str]  # colour interpretation per band
    descriptions: list  # band descriptions (may hold None)
    tags: dict  # dataset tags and per-band tags ("band1"...)
    crs: Any  # the file's CRS (None when it has none)
    transform: Affine  # the file's (or window's) transform
    colormap: dict | None  # colour table of a single palette band


def _checked_source(path: str | Path, gsd: float | None, remote: bool = False) -> Any:
    """``path`` as a URL string (only with ``remote``) or an existing, non-empty regular
    local file (:func:`viper_rs.core.rasterfile.checked_path`); ImageError when the file or
    ``gsd`` is unusable."""
    checked_path(path, remote=remote, error=ImageError)
    p: Any = str(path) if is_remote(path) else Path(path)
    if gsd is not None and not (gsd > 0 and np.isfinite(gsd)):
        raise ImageError(f"{p}: --gsd must be a positive number of metres, got {gsd}")
    problem = gsd_problem(str(p), gsd)  # the plausible range, before any pixel is read
    if problem is not None:
        raise ImageError(problem)
    return p


def _read_raster(
    p: Any, drivers: tuple[str, ...] | None, window: tuple[int, int, int, int] | None,
    out_size: tuple[int, int] | None,
) -> _Raster:
    """Pixels, mask, band metadata and georeference of a file through the raster gate
    (:func:`viper_rs.core.rasterfile.open_raster`: GeoTIFF, PNG, JPEG by default); every failure
    becomes an ImageError."""
    from rasterio.errors import RasterioIOError

    try:
        # GDAL's fast whole-image PNG decoding returns zeros for a truncated file
        # without an error; the libpng path reports it.
        with open_raster(p, remote=is_remote(p), drivers=drivers, error=ImageError,
                         GDAL_PNG_WHOLE_IMAGE_OPTIM="NO") as ds:
            return _read_dataset(p, ds, window, out_size)
    except ImageError:
        raise
    except RasterioIOError as exc:
        raise ImageError(f"{p}: not a readable image ({why_unreadable(exc)})") from None
    except Exception as exc:  # rasterio/GDAL raise many types on corrupt data
        raise ImageError(f"{p}: could not read pixels ({first_line(exc)})") from None


def _read_dataset(
    p: Any, ds: Any, window: tuple[int, int, int, int] | None,
    out_size: tuple[int, int] | None,
) -> _Raster:
    """Read one open rasterio dataset (or its ``window``, averaged to ``out_size``)."""
    if ds.count == 0 or ds.width == 0 or ds.height == 0:
        raise ImageError(f"{p}: image has no bands or no pixels")
    win, width, height = _checked_window(p, ds, window)
    _admit(p, ds, width, height, out_size)
    data, mask = _read_pixels(p, ds, win, out_size)
    interp = [ci.name for ci in ds.colorinterp]
    descriptions = list(ds.descriptions or [])
    tags = {**ds.tags(), **{f"band{i}": ds.tags(i) for i in range(1, ds.count + 1)}}
    transform = ds.transform if win is None else ds.window_transform(win)
    if out_size is not None:
        transform = transform @ Affine.scale(width / data.shape[2],
                                             height / data.shape[1])
    colormap = None
    if ds.count == 1 and interp and interp[0] == "palette":
        try:
            colormap = ds.colormap(1)
        except ValueError:
            colormap = None
    return _Raster(data=data, mask=mask, interp=interp, descriptions=descriptions, tags=tags,
                   crs=ds.crs, transform=transform, colormap=colormap)


def _checked_window(
    p: Any, ds: Any, window: tuple[int, int, int, int] | None
) -> tuple[Any, int, int]:
    """(rasterio Window or None, width, height) of what will be read; ImageError when the
    window leaves the image or the read is over :data:`MAX_PIXELS`."""
    win = None
    if window is not None:
        from rasterio.windows import Window

        win = Window(*window)
        c0, r0, w0, h0 = (int(v) for v in window)
        if w0 <= 0 or h0 <= 0 or c0 < 0 or r0 < 0 or c0 + w0 > ds.width \
                or r0 + h0 > ds.height:
            raise ImageError(
                f"{p}: window {window} is outside the {ds.width}x{ds.height} image"
            )
    width, height = (w0, h0) if win is not None else (ds.width, ds.height)
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{p}: {width}x{height} px is larger than the "
            f"{MAX_PIXELS // 1_000_000} Mpx limit; crop it first"
        )
    return win, width, height


def ways_out(georeferenced: bool | None, crop: str = "crop it") -> str:
    """How to get a too-large image answered, said by every refusal and out-of-memory error
    (``georeferenced`` None: not known; ``crop``: the crop advice, e.g. with the size that
    would fit)."""
    region = ("ask about it as a region (python -m viper_rs region FILE -q QUESTION), which "
              "reads it in chips")
    if georeferenced:
        return f"{crop}, or {region}"
    coarser = "resample it coarser and give its new ground size (--gsd)"
    if georeferenced is None:
        return f"{crop}, {coarser}, or, when it has a CRS, {region}"
    return f"{crop}, or {coarser}"


def out_of_memory(image: GeoImage | None, doing: str) -> ImageTooLarge:
    """The error for an allocation that failed while ``doing`` something with ``image``:
    what was too large and the ways out."""
    what = "the image" if image is None else (
        f"{image.name} ({image.width:,} x {image.height:,} px x {len(image.band_names)} band(s))")
    georeferenced = image is None or image.crs is not None
    return ImageTooLarge(f"out of memory {doing} on {what}; {ways_out(georeferenced)}")


@dataclass(frozen=True)
class RasterHeader:
    """What a raster file's header says about one read, before any pixel is decoded.

    ``width`` x ``height``: the pixels the read returns (its window, or ``out_size`` when it
    is averaged down); ``source_width`` x ``source_height``: the file's pixels that read
    covers; ``bands`` and ``itemsize`` (bytes per sample) as stored; ``driver``: GDAL's
    format name; ``pixel_size``: (x, y) size of one returned pixel in CRS units (None
    without a CRS); ``linear_unit_m``: metres per CRS unit (None when geographic or unknown).
    """

    path: str
    driver: str
    width: int
    height: int
    source_width: int
    source_height: int
    bands: int
    itemsize: int
    crs: Any = None
    pixel_size: tuple[float, float] | None = None
    linear_unit_m: float | None = None

    @property
    def pixels(self) -> int:
        """Pixels the read returns."""
        return self.width * self.height

    @property
    def decimated(self) -> bool:
        """Whether the read is averaged down from more source pixels."""
        return self.pixels < self.source_width * self.source_height

    @property
    def ground_pixel_m(self) -> float | None:
        """Ground size in metres of one returned pixel (geometric mean of x and y), None
        when the header does not tell it."""
        if self.pixel_size is None or self.linear_unit_m is None:
            return None
        x, y = self.pixel_size
        g = float(np.sqrt(abs(x * y))) * self.linear_unit_m
        return g if np.isfinite(g) and g > 0 else None


#: The check every :meth:`GeoImage.open` inside an :func:`admission` block runs.
_ADMISSION: ContextVar[Callable[[RasterHeader], None] | None] = ContextVar(
    "viper_rs_admission", default=None)


@contextlib.contextmanager
def admission(check: Callable[[RasterHeader], None] | None) -> Iterator[None]:
    """Inside the block, every :meth:`GeoImage.open` (in this thread or task) calls
    ``check(header)`` with the file's :class:`RasterHeader` once the header is read and
    before any pixel is decoded; ``check`` refuses the read by raising an ImageError
    (e.g. :class:`~viper_rs.core.errors.ImageTooLarge`). ``None`` checks nothing."""
    token = _ADMISSION.set(check)
    try:
        yield
    finally:
        _ADMISSION.reset(token)


def raster_header(
    p: Any, ds: Any, width: int, height: int, out_size: tuple[int, int] | None
) -> RasterHeader:
    """The :class:`RasterHeader` of reading ``width`` x ``height`` pixels of open dataset
    ``ds`` (averaged to ``out_size`` when given); reads no pixel."""
    ow, oh = (width, height) if out_size is None else (max(1, int(v)) for v in out_size)
    pixel_size = None
    unit = None
    if ds.crs is not None:
        t = ds.transform
        pixel_size = (abs(t.a) * width / ow, abs(t.e) * height / oh)
        try:
            unit = None if ds.crs.is_geographic else linear_unit_factor(ds.crs)
        except ImageError:
            unit = None
    dtypes = {np.dtype(d).itemsize for d in ds.dtypes} or {1}
    return RasterHeader(
        path=str(p), driver=str(ds.driver), width=ow, height=oh, source_width=width,
        source_height=height, bands=int(ds.count), itemsize=max(dtypes), crs=ds.crs,
        pixel_size=pixel_size, linear_unit_m=unit,
    )


def _admit(
    p: Any, ds: Any, width: int, height: int, out_size: tuple[int, int] | None
) -> None:
    """Run the :func:`admission` check (if any) on the read about to be made."""
    check = _ADMISSION.get()
    if check is not None:
        check(raster_header(p, ds, width, height, out_size))


def _read_pixels(
    p: Any, ds: Any, win: Any, out_size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, GDAL's validity mask) of ``win`` (None: the whole image), averaged to
    ``out_size`` when given; ImageError when they cannot be decoded."""
    import rasterio

    try:
        with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_MB):
            return _decode(ds, win, out_size)
    except MemoryError:
        shape = out_size or ((win.width, win.height) if win is not None else (ds.width, ds.height))
        raise ImageTooLarge(
            f"{p}: out of memory decoding {int(shape[0])}x{int(shape[1])} px x {ds.count} "
            f"band(s); {ways_out(ds.crs is not None)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - GDAL raises several types
        raise ImageError(
            f"{p}: the file is damaged or truncated; its pixels could not be "
            f"read ({first_line(exc)})"
        ) from None


def _decode(ds: Any, win: Any, out_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_pixels` without its error handling."""
    if out_size is None:
        return ds.read(window=win), ds.dataset_mask(window=win) > 0
    from rasterio.enums import Resampling

    ow, oh = (max(1, int(v)) for v in out_size)
    data = ds.read(window=win, out_shape=(ds.count, oh, ow), resampling=Resampling.average)
    return data, ds.dataset_mask(window=win, out_shape=(oh, ow)) > 0


def _expand_palette(raster: _Raster) -> None:
    """Replace a palette band (paletted PNG, GIF, TIFF) by its R,G,B colours, transparent
    entries made nodata (in place)."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for k, v in raster.colormap.items():
        if 0 <= k < 256:
            lut[k] = v
    rgba = lut[raster.data[0].clip(0, 255).astype(np.uint8)]
    raster.data = np.moveaxis(rgba[..., :3], -1, 0)
    raster.mask &= rgba[..., 3] > 0
    raster.interp = ["red", "green", "blue"]
    raster.descriptions = [None, None, None]


def _image_bands(
    p: Any, raster: _Raster, bands: str | list[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(pixels, validity mask, band roles): roles from ``bands`` or the file's metadata,
    an alpha band folded into the mask, non-numeric pixels as float32."""
    data, mask = raster.data, raster.mask
    if bands is not None:
        names = parse_bands(bands)
    else:
        names = _band_roles(raster.interp, raster.descriptions, raster.tags)
    if bands is None and "ALPHA" in names and not _looks_like_alpha(data[names.index("ALPHA")]):
        # GDAL tags the 4th band of 4-band 8-bit TIFFs as alpha; NAIP's is NIR.
        names[names.index("ALPHA")] = "NIR" if "NIR" not in names else "BAND4"
    if len(names) != data.shape[0]:
        raise ImageError(
            f"{p}: --bands names {len(names)} bands ({','.join(names)}) "
            f"but the file has {data.shape[0]}"
        )
    if "ALPHA" in names:
        i = names.index("ALPHA")
        mask &= data[i] > 0
        data = np.delete(data, i, axis=0)
        names = [n for n in names if n != "ALPHA"]
        if not names:
            raise ImageError(f"{p}: only an alpha band, no image bands")
    if data.dtype == np.bool_ or data.dtype.kind not in "uif":
        data = data.astype(np.float32)
    return data, mask, names


def _georeference(
    p: Any, raster: _Raster, override_crs: object | None,
    transform_override: Affine | None, gsd: float | None, whole: bool = True,
) -> tuple[Any, Affine, float | None, list[str]]:
    """(CRS, transform, gsd, notes) of a read file: its own CRS, else the override CRS and
    transform, else a plain pixel grid of ``gsd`` metres (or pixels, with a note saying so).

    The georeference is checked (:func:`viper_rs.core.georef.georeference_problem`): a broken
    one is an ImageError naming the value, unless ``gsd`` is given, which then measures
    the image instead (with a note). ``whole``: the raster is the whole file at its own
    resolution (its transform is the file's, e.g. a world file's)."""
    crs, transform = raster.crs, raster.transform
    if crs is None and override_crs is not None:
        if transform_override is None:
            raise ImageError(f"{p}: a CRS override needs a transform too")
        crs = _user_crs(str(p), override_crs)
        transform = transform_override
    notes: list[str] = []
    if crs is not None:
        height, width = raster.data.shape[1:]
        problem = georeference_problem(str(p), crs, transform, int(width), int(height))
        if problem is not None and gsd is None:
            raise ImageError(f"{problem}; fix the file's georeference, or pass --gsd M to "
                             "measure it at M metres per pixel instead")
        if problem is not None:
            log.warning("%s; measuring it with --gsd %s instead", problem, gsd)
            notes.append(f"{problem}: set aside, pixels measured as --gsd {gsd:g} m")
            crs = None
        elif gsd is not None:
            log.info("%s has a CRS; its transform defines pixel size (--gsd %s ignored)", p, gsd)
            gsd = None
    if crs is None:
        if gsd is None:
            stated = _world_file_px(raster.transform) if whole else None
            notes.append(no_georeference_note(str(p), stated))
            transform = Affine.identity()
        else:
            transform = Affine(gsd, 0, 0, 0, -gsd, 0)
    return crs, transform, gsd, notes


def _user_crs(name: str, crs: object) -> Any:
    """A CRS given by the caller (EPSG code, WKT, PROJ string) as a rasterio CRS;
    ImageError naming it when rasterio cannot read it."""
    import rasterio.crs

    try:
        return rasterio.crs.CRS.from_user_input(crs)
    except Exception as exc:  # noqa: BLE001 - CRSError and the types of odd inputs
        raise ImageError(f"{name}: CRS {str(crs)[:80]!r} cannot be read ({first_line(exc)})"
                         ) from None


def _world_file_px(transform: Affine) -> float | None:
    """The pixel size a file without a CRS states anyway (a world file next to a PNG or
    JPEG gives GDAL a transform, never a CRS), None when it states none."""
    if transform == Affine.identity():
        return None
    size = float(np.sqrt(abs(transform.a * transform.e - transform.b * transform.d)))
    return size if np.isfinite(size) and size > 0 else None


def _band_roles(interp: list[str], descriptions: list, tags: dict) -> list[str]:
    n = len(interp)
    names: list[str | None] = [None] * n
    for i, d in enumerate(descriptions[:n]):
        if d:
            key = str(d).strip().lower()
            if key in _ROLE_ALIASES:
                names[i] = _ROLE_ALIASES[key]
    ci = {"red": "R", "green": "G", "blue": "B", "alpha": "ALPHA"}
    if n <= 2:
        ci["gray"] = "GRAY"  # a "gray" tag on a multi-band file carries no meaning
    for i, c in enumerate(interp):
        if names[i] is None and c in ci:
            names[i] = ci[c]
    if n == 1 and names[0] is None:
        names[0] = "GRAY"
    defaults = ["R", "G", "B", "NIR"]
    for i in range(n):
        if names[i] is None:
            names[i] = defaults[i] if i < 4 and defaults[i] not in names else f"BAND{i + 1}"
    if len(set(names)) != len(names):
        raise ImageError(f"ambiguous band roles {names}; pass --bands, e.g. --bands R,G,B,NIR")
    return [str(x) for x in names]


def _looks_like_alpha(band: np.ndarray) -> bool:
    """An alpha band holds (almost) only fully transparent and fully opaque values."""
    vals = np.unique(band[:: max(1, band.shape[0] // 256), :: max(1, band.shape[1] // 256)])
    return len(vals) <= 2 and vals.min() in (0, vals.max())


def _valid_values(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Every band's values at the ``valid`` pixels (all pixels when none or all are valid)
    in one new 1-D array of the data's dtype."""
    if valid is None or not valid.any() or valid.all():
        return data.flatten()
    m = valid.ravel()
    n = int(m.sum())
    out = np.empty(n * data.shape[0], dtype=data.dtype)
    for i, band in enumerate(data):
        out[i * n : (i + 1) * n] = band.ravel()[m]
    return out


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of a 1-D array, partitioning
    ``values`` in place (numpy's makes a copy)."""
    pos = q / 100.0 * (values.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, values.size - 1)
    values.partition([lo, hi] if hi != lo else lo)
    return float(np.percentile(values[[lo, hi]], 100.0 * (pos - lo)))


def _finite_pixels(data: np.ndarray) -> np.ndarray | None:
    """(H, W) True where every band is a finite number; None for integer data (always)."""
    if data.dtype.kind not in "fc":
        return None
    finite = np.isfinite(data[0])
    for band in data[1:]:
        finite &= np.isfinite(band)
    return finite


def _white_point(data: np.ndarray, valid: np.ndarray) -> float:
    """Value that maps to 1.0: the nominal maximum of the data's bit depth."""
    if data.dtype == np.uint8:
        return 255.0
    vals = _valid_values(data, valid)
    hi = _percentile(vals, 99.9) if vals.size else 1.0
    if data.dtype.kind == "f" and hi <= 1.0 + 1e-6:
        return 1.0
    for bits in (8, 10, 11, 12, 14, 16):
        if hi <= 2**bits - 1:
            return float(2**bits - 1)
    return max(hi, 1.0)


def linear_unit_factor(crs) -> float:
    """Metres per unit of a projected CRS (ImageError when its units are unknown)."""
    try:
        name, factor = crs.linear_units_factor
        return float(factor)
    except Exception:  # no linear units reported: assume metres only for known metre CRSs
        units = (crs.linear_units or "").lower()
        if units in ("metre", "meter", "m", "metres", "meters"):
            return 1.0
        raise ImageError(f"CRS {crs} has unknown linear units; cannot measure ground area") from None


def projected_row_areas(crs: Any, transform: Affine, width: int, height: int) -> np.ndarray:
    """(height,) true ground area in m2 of one pixel in each row of a grid in a projected
    CRS (pixel area corrected by the projection's areal scale at each row's centre)."""
    factor = linear_unit_factor(crs)
    det = abs(transform.a * transform.e - transform.b * transform.d)
    scale = _areal_scale(crs, transform, width, height)
    return det * factor * factor / scale


def _areal_scale(crs, transform: Affine, width: int, height: int) -> np.ndarray:
    """(H,) projection areal scale factor at each row's centre (1.0 = true area).

    Web Mercator (EPSG:3857) inflates areas by sec^2(latitude); UTM by < 0.1%.
    """
    from pyproj import CRS as PCRS
    from pyproj import Proj, Transformer

    try:
        pcrs = PCRS.from_user_input(crs.to_wkt())
        rows = np.arange(height) + 0.5
        cols = np.full(height, width / 2.0)
        xs = transform.c + transform.a * cols + transform.b * rows
        ys = transform.f + transform.d * cols + transform.e * rows
        lon, lat = Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True).transform(xs, ys)
        scale = np.asarray(Proj(pcrs).get_factors(lon, lat).areal_scale, dtype=np.float64)
        if scale.shape != (height,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError("no finite scale factors")
        return scale
    except Exception as exc:  # CRS without a usable inverse: planar area, said in the log
        log.warning("no areal scale factors for CRS %s (%s); using planar pixel area", crs, exc)
        return np.ones(height, dtype=np.float64)


def _geodesic_row_areas(transform: Affine, height: int, crs) -> np.ndarray:
    from pyproj import CRS as PCRS
    from pyproj import Geod

    geod = PCRS.from_user_input(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
    areas = np.empty(height, dtype=np.float64)
    for r in range(height):
        corners = [transform @ (0, r), transform @ (1, r), transform @ (1, r + 1), transform @ (0, r + 1)]
        lons = [c[0] for c in corners]
        lats = [c[1] for c in corners]
        a, _ = geod.polygon_area_perimeter(lons, lats)
        areas[r] = abs(a)
    return areas


def write_geotiff(image: GeoImage, path: str | Path) -> Path:
    """Write ``image`` as a (tiled, deflate) GeoTIFF with band descriptions and nodata mask."""
    import rasterio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": image.width, "height": image.height,
        "count": image.data.shape[0], "dtype": image.data.dtype.name, "crs": image.crs,
        "transform": image.transform, "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image.data)
        for i, name in enumerate(image.band_names, 1):
            ds.set_band_description(i, name)
        if not image.valid.all():
            ds.write_mask((image.valid * 255).astype("uint8"))
    return path
