"""Imagery sources for an index: GeoTIFFs/COGs from folders, lists, URLs or a STAC search.

A :class:`Source` holds what chipping needs without the pixels: size, CRS, transform, band
count, the white point shared by all its chips, and a fingerprint that changes when the
file does (chip ids include it, so a replaced file is indexed again).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.errors import InputError
from viper_rs.core.georef import check_georeference
from viper_rs.core.rasterfile import is_remote, open_raster, why_unreadable

log = logging.getLogger(__name__)

#: File suffixes taken from folders (GeoTIFF and COG).
RASTER_SUFFIXES = (".tif", ".tiff")
#: Suffixes of text files that list one source per line.
LIST_SUFFIXES = (".txt", ".lst")
#: Deepest chain of source lists naming source lists (a list on the command line is 1).
LIST_MAX_DEPTH = 4
#: Side (px) of the decimated read that estimates a non-8-bit source's white point.
_WHITE_POINT_PX = 512
#: Larger sources without overviews have their white point from :data:`_WHITE_POINT_WINDOWS`
#: x :data:`_WHITE_POINT_WINDOWS` sampled windows (pixels; a decimated read of a sparse
#: 200,000 x 200,000 px uint16 file took 58 s and 1.3 GB).
_WHITE_POINT_FULL_PX = 64_000_000
_WHITE_POINT_WINDOWS = 8


@dataclass(frozen=True)
class Source:
    """One georeferenced raster: where it is and how its pixels map to the ground."""

    uri: str
    width: int
    height: int
    count: int
    crs: str  # "EPSG:code" when the CRS has one, else WKT
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f
    white_point: float
    fingerprint: str
    datetime: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """Stable identity: the URI without a URL's query string (signing tokens)."""
        return self.uri.split("?")[0] if is_remote(self.uri) else self.uri

    @property
    def name(self) -> str:
        """File name (the last part of the URI, without a query string)."""
        return self.uri.split("?")[0].rstrip("/").rsplit("/", 1)[-1]

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel width and height in CRS units (positive)."""
        a, b, _, d, e, _ = self.transform
        return float(np.hypot(a, d)), float(np.hypot(b, e))


@dataclass
class SourceScan:
    """Sources found, and the candidates that were passed over with their reason."""

    sources: list[Source] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def expand(inputs: Sequence[str | Path],
           refused: list[tuple[str, str]] | None = None) -> list[str]:
    """Files and URLs named by ``inputs``: folders (recursively, ``*.tif``/``*.tiff``), list
    files (``.txt``: one local path per line, ``#`` comments), files and URLs as given. A
    URL or GDAL ``/vsi`` path on a list's line is not followed (only one typed as an input
    is, see :mod:`viper_rs.core.rasterfile`): it goes to ``refused`` with the reason (logged when
    ``refused`` is None).

    Lists are read bounded: at most :data:`~viper_rs.core.files.SMALL_FILE_MAX_BYTES` each, lists
    naming lists at most :data:`LIST_MAX_DEPTH` deep, a list naming itself (directly or
    through others) refused. A relative line is read from the list's own folder and must
    stay inside it (``../`` or a link leading out is refused); an absolute line is taken as
    written (the list's author could name it on the command line as well). A FIFO, device
    or socket is never opened here: it is passed on, and the raster gate refuses it with
    the reason."""
    out: list[str] = []
    _expand(inputs, out, (), refused)
    return list(dict.fromkeys(out))


def _expand(inputs: Sequence[str | Path], out: list[str], lists: tuple[Path, ...],
            refused: list[tuple[str, str]] | None) -> None:
    """:func:`expand` inside the lists ``lists`` (outermost first, resolved)."""
    import stat

    from viper_rs.core.files import read_small_text

    for item in inputs:
        text = str(item)
        if is_remote(text):
            out.append(text)
            continue
        p = Path(text).expanduser()
        try:
            mode = os.stat(p).st_mode
        except OSError:
            if p.is_symlink():  # a broken link: the raster gate names it
                out.append(_local_name(p))
                continue
            raise InputError(f"{p}: no such file or folder") from None
        if stat.S_ISDIR(mode):
            # special files (a FIFO named x.tif) are listed too: the raster gate
            # refuses them with the reason instead of passing over them silently
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in RASTER_SUFFIXES
                           and not q.is_dir())
            if not found:
                why = f"{p}: a folder with no .tif/.tiff files"
                if refused is None:
                    log.warning("%s", why)
                else:
                    refused.append((str(p), why))
            out.extend(_local_name(q) for q in found)
        elif stat.S_ISREG(mode) and p.suffix.lower() in LIST_SUFFIXES:
            real = p.resolve()
            if real in lists:
                chain = " -> ".join(q.name for q in (*lists[lists.index(real):], real))
                raise InputError(f"{p}: the source list names itself ({chain}); remove the loop")
            if len(lists) >= LIST_MAX_DEPTH:
                raise InputError(f"{p}: source lists nested more than {LIST_MAX_DEPTH} deep "
                                 f"({' -> '.join(q.name for q in (*lists, real))})")
            base = real.parent
            lines = []
            body = read_small_text(real, InputError, "source list")
            for n, line in enumerate(body.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if is_remote(line):
                    why = (f"{line}: a URL or /vsi path inside the list {p.name} is not "
                           "followed; give it as an argument instead")
                    if refused is None:
                        log.warning("%s", why)
                    else:
                        refused.append((line, why))
                    continue
                if Path(line).expanduser().is_absolute():
                    lines.append(line)
                    continue
                q = base / line
                if not q.resolve().is_relative_to(base):
                    raise InputError(f"{p}, line {n}: {line!r} leads outside the list's folder "
                                     f"{base}; write it as an absolute path")
                lines.append(str(q))
            _expand(lines, out, (*lists, real), refused)
        else:
            out.append(_local_name(p))


def _local_name(p: Path) -> str:
    """A local source's name: the resolved path of a regular file, else the path as found
    (a link to /dev/zero is refused under its own name)."""
    return str(p.resolve()) if p.is_file() else str(p.absolute())


def scan(inputs: Sequence[str | Path], extra: Iterable[Source] = ()) -> SourceScan:
    """Open every input's metadata; unusable rasters are skipped with their reason."""
    import rasterio

    result = SourceScan(sources=list(extra))
    # GDAL lists a file's folder on every open to find its sidecars: with thousands of
    # tiles in one folder, each open re-read the whole folder (sidecars are still probed).
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="TRUE"):
        for uri in expand(inputs, result.skipped):
            try:  # expand() passes on only the URLs typed as inputs: those may be read
                result.sources.append(describe(uri, remote=True))
            except InputError as exc:
                result.skipped.append((uri, str(exc)))
                log.info("skipping %s", exc)
    seen: set[str] = set()
    unique = []
    for s in result.sources:
        if s.key not in seen:
            seen.add(s.key)
            unique.append(s)
    result.sources = unique
    return result


def describe(uri: str, datetime: str | None = None, remote: bool = False) -> Source:
    """The :class:`Source` of one raster; raises :class:`InputError` when it cannot be
    indexed (refused by the raster gate, unreadable, fewer than 3 bands, no CRS, a
    georeference :func:`viper_rs.core.georef.georeference_problem` refuses). ``remote``:
    ``uri`` may be a URL (one the user typed, or a STAC href)."""
    try:
        with open_raster(uri, remote=remote, error=InputError) as ds:
            if ds.count < 3:
                raise InputError(f"{uri}: {ds.count} band(s); chips need R, G and B")
            if ds.crs is None:
                raise InputError(
                    f"{uri}: no CRS, so its chips cannot be placed on the map "
                    "(georeference it, e.g. gdal_edit.py -a_srs EPSG:... -a_ullr ...)"
                )
            if ds.width == 0 or ds.height == 0:
                raise InputError(f"{uri}: no pixels")
            check_georeference(uri, ds.crs, ds.transform, ds.width, ds.height, InputError)
            white = _white_point(ds)
            stamp = (datetime or ds.tags().get("TIFFTAG_DATETIME")
                     or ds.tags().get("datetime") or date_from_name(uri))
            return Source(
                uri=uri, width=ds.width, height=ds.height, count=ds.count,
                crs=ds.crs.to_string(), transform=tuple(ds.transform)[:6],
                white_point=white, fingerprint=fingerprint(uri), datetime=stamp,
            )
    except InputError:
        raise
    except Exception as exc:  # rasterio/GDAL raise many types on corrupt files
        raise InputError(f"{uri}: not a readable raster ({why_unreadable(exc)})") from None


def date_from_name(uri: str) -> str | None:
    """An acquisition date written into a file name as YYYYMMDD or YYYY-MM-DD (NAIP's
    ``m_4709963_se_14_1_20140720.tif``), as ISO ``YYYY-MM-DD``; None when there is none."""
    import datetime as dt
    import re

    name = uri.split("?")[0].rsplit("/", 1)[-1]
    for m in re.finditer(r"(?<!\d)((?:19|20)\d\d)-?([01]\d)-?([0-3]\d)(?!\d)", name):
        try:
            return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:
            continue
    return None


def fingerprint(uri: str) -> str:
    """Changes when a local file changes (size, mtime); a URL is its own fingerprint."""
    if is_remote(uri):
        return hashlib.sha1(uri.split("?")[0].encode()).hexdigest()[:16]
    st = os.stat(uri)
    return hashlib.sha1(f"{uri}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _white_point(ds: Any) -> float:
    """The value mapped to 1.0 for every chip: 255 for 8-bit data, else the bit depth
    that holds the 99.9th percentile of a decimated read (overviews when present). A
    source over :data:`_WHITE_POINT_FULL_PX` without overviews is sampled in
    :data:`_WHITE_POINT_WINDOWS` squared windows instead (a decimated read would decode
    every block of it); GDAL's block cache is held to the chip reads' size."""
    import rasterio

    from viper_rs.core.pixel_values import nominal_white_point as from_pixels
    from viper_rs.core.raster_read import READ_CACHE_MB

    if ds.dtypes[0] == "uint8":
        return 255.0
    bands = list(range(1, min(ds.count, 3) + 1))
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_MB):
        if ds.width * ds.height <= _WHITE_POINT_FULL_PX or ds.overviews(1):
            step = max(1, max(ds.width, ds.height) // _WHITE_POINT_PX)
            shape = (len(bands), max(1, ds.height // step), max(1, ds.width // step))
            data = ds.read(indexes=bands, out_shape=shape)
            valid = ds.dataset_mask(out_shape=shape[1:]) > 0
        else:
            data, valid = _sampled(ds, bands)
    if not valid.any():
        valid = np.ones(valid.shape, bool)
    return float(from_pixels(data, valid))


def _sampled(ds: Any, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and validity of a grid of small windows spread over ``ds``, side by side."""
    from rasterio.windows import Window

    n = _WHITE_POINT_WINDOWS
    side = min(_WHITE_POINT_PX // n, ds.width, ds.height)
    parts, masks = [], []
    for i in range(n):
        row = round((ds.height - side) * (i + 0.5) / n)
        for j in range(n):
            col = round((ds.width - side) * (j + 0.5) / n)
            win = Window(col, row, side, side)
            parts.append(ds.read(indexes=bands, window=win))
            masks.append(ds.dataset_mask(window=win) > 0)
    return np.concatenate(parts, axis=2), np.concatenate(masks, axis=1)


def stac_sources(url: str, collection: str | None, bbox: Sequence[float] | None,
                 datetime: str | None = None, max_items: int = 100,
                 asset: str | None = None, timeout: float = 30.0) -> SourceScan:
    """Sources from a STAC API search (online): one per item, its image asset's href.

    ``asset`` names the asset key; by default the first of ``image``, ``visual``, ``data``
    present, else the first GeoTIFF asset. Planetary Computer hrefs are signed.
    """
    from viper_rs.datasets.stac import open_catalog

    try:
        client = open_catalog(url, timeout=timeout)
        search = client.search(collections=[collection] if collection else None,
                               bbox=list(bbox) if bbox else None, datetime=datetime,
                               max_items=max_items)
        items = list(search.items())
    except Exception as exc:  # network, HTTP, JSON errors
        raise InputError(f"STAC search at {url} failed: {str(exc).strip()[:300]}") from None
    result = SourceScan()
    for item in items:
        href = _asset_href(item, asset)
        if href is None:
            result.skipped.append((item.id, f"STAC item {item.id}: no GeoTIFF asset"))
            continue
        stamp = item.datetime.isoformat() if item.datetime else item.properties.get("datetime")
        try:
            result.sources.append(describe(href, datetime=stamp, remote=True))
        except InputError as exc:
            result.skipped.append((href, str(exc)))
    return result


def _asset_href(item: Any, key: str | None) -> str | None:
    assets = item.assets
    if key:
        return assets[key].href if key in assets else None
    for k in ("image", "visual", "data"):
        if k in assets:
            return assets[k].href
    for a in assets.values():
        if "tiff" in (a.media_type or "").lower():
            return a.href
    return None
