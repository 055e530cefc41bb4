"""Reading a raster file through the raster gate: the checked source, the window, the
admission check on its header, then its pixels, validity mask, band metadata and
georeference as stored (a :class:`Raster`, before band roles and georeference are settled)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from viper_rs.core.admission import admit, ways_out
from viper_rs.core.errors import ImageError, ImageTooLarge, first_line
from viper_rs.core.georef import gsd_problem
from viper_rs.core.rasterfile import checked_path, is_remote, open_raster, why_unreadable

#: The most pixels one read may decode whatever the memory budget (a fixed backstop; the
#: budget itself is checked by the :func:`~viper_rs.core.admission.admission` check of the caller, see
#: :mod:`viper_rs.vision.cost`).
MAX_PIXELS = 120_000_000
#: GDAL's block cache while pixels are read (MB). Its default (5% of the machine's memory)
#: kept every decoded tile of a whole-image read besides the image itself (+4 B/px of a
#: 16 Mpx RGB GeoTIFF); tiles are decoded once either way.
READ_CACHE_MB = 64


@dataclass
class Raster:
    """What :meth:`~viper_rs.core.geo.GeoImage.open` reads from a file, before band roles
    and georeference."""

    data: np.ndarray  # bands x H x W as stored
    mask: np.ndarray  # GDAL's dataset mask: True where valid
    interp: list[str]  # colour interpretation per band
    descriptions: list  # band descriptions (may hold None)
    tags: dict  # dataset tags and per-band tags ("band1"...)
    crs: Any  # the file's CRS (None when it has none)
    transform: Affine  # the file's (or window's) transform
    colormap: dict | None  # colour table of a single palette band


def checked_source(path: str | Path, gsd: float | None, remote: bool = False) -> Any:
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


def read_raster(
    p: Any, drivers: tuple[str, ...] | None, window: tuple[int, int, int, int] | None,
    out_size: tuple[int, int] | None,
) -> Raster:
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
) -> Raster:
    """Read one open rasterio dataset (or its ``window``, averaged to ``out_size``)."""
    if ds.count == 0 or ds.width == 0 or ds.height == 0:
        raise ImageError(f"{p}: image has no bands or no pixels")
    win, width, height = _checked_window(p, ds, window)
    admit(p, ds, width, height, out_size)
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
    return Raster(data=data, mask=mask, interp=interp, descriptions=descriptions, tags=tags,
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
