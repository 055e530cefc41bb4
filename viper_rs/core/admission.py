"""The admission of a raster read: the file's header before any pixel is decoded, the
check a caller runs on it (:func:`admission`), and the ways out said by every refusal and
out-of-memory error."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from viper_rs.core.errors import ImageError, ImageTooLarge
from viper_rs.core.ground_area import linear_unit_factor
from viper_rs.core.image import Image


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


#: The check every :meth:`~viper_rs.core.geo.GeoImage.open` inside an :func:`admission` block
#: runs.
_ADMISSION: ContextVar[Callable[[RasterHeader], None] | None] = ContextVar(
    "viper_rs_admission", default=None)


@contextlib.contextmanager
def admission(check: Callable[[RasterHeader], None] | None) -> Iterator[None]:
    """Inside the block, every :meth:`~viper_rs.core.geo.GeoImage.open` (in this thread or
    task) calls ``check(header)`` with the file's :class:`RasterHeader` once the header is
    read and before any pixel is decoded; ``check`` refuses the read by raising an ImageError
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


def admit(
    p: Any, ds: Any, width: int, height: int, out_size: tuple[int, int] | None
) -> None:
    """Run the :func:`admission` check (if any) on the read about to be made."""
    check = _ADMISSION.get()
    if check is not None:
        check(raster_header(p, ds, width, height, out_size))


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


def out_of_memory(image: Image | None, doing: str) -> ImageTooLarge:
    """The error for an allocation that failed while ``doing`` something with ``image``:
    what was too large and the ways out."""
    what = "the image" if image is None else (
        f"{image.name} ({image.width:,} x {image.height:,} px x {len(image.band_names)} band(s))")
    georeferenced = image is None or image.crs is not None
    return ImageTooLarge(f"out of memory {doing} on {what}; {ways_out(georeferenced)}")
