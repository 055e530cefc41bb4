"""The one gate every raster read goes through: which paths may reach GDAL, which GDAL
drivers may read them, and GDAL's network access off for local files.

Rules (docs/limits.md, "Input rasters GDAL may read", says the same):

- **Drivers:** only :data:`ALLOWED_DRIVERS` (GeoTIFF - COGs are GeoTIFFs -, PNG, JPEG).
  Formats that point at other files or URLs (VRT, GTI, WMS, MBTiles...) never open, whatever
  the file's name: a VRT renamed ``.tif`` is refused instead of reading what it names.
- **Local paths** are checked with ``os.stat`` (never opened, so a FIFO cannot block)
  before GDAL sees them: a regular, non-empty file once symlinks are followed. FIFOs,
  devices, sockets and directories are refused with a one-line error naming the file and
  what it is. GDAL also opens files beside a raster (``x.tif.aux.xml``, ``x.tif.ovr``,
  world files, metadata its readers look for by fixed names such as ``METADATA.DIM``), and
  opening a FIFO there would block: a raster whose folder holds a FIFO, device or socket
  (hidden dot-files aside) is read alone, GDAL told its folder is empty
  (``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``: no sidecar is looked for), with a warning
  naming the file; ``.ovr``/``.msk`` overviews and masks beside it must be TIFFs. GDAL gets
  the absolute path, so no name is read as GDAL syntax (``GTIFF_DIR:``, ``MEM:::``).
- **Remote paths** (``http(s)://``, ``s3://``, ``gs://``, ``az://``, ``/vsi...``) are
  read only when the caller opts in with ``remote=True``. The library does so for what a
  person typed as an argument (``ask URL``, ``region URL``, ``index build URL``), for the
  hrefs a STAC search (``--stac``) returned, and for reopening a source accepted under these
  rules (an index's or a region's sources). Never for a path named inside a file (a line
  of a ``.txt`` source list, a VRT, a manifest), an app upload or an image found in a
  folder.
- **GDAL's network:** a local file is read inside a ``rasterio.Env`` whose
  ``CPL_VSIL_CURL_ALLOWED_FILENAME`` matches no URL, so ``/vsicurl/`` and the file systems
  built on it (``/vsis3/``, ``/vsigs/``, ``/vsiaz/``...) refuse every URL before connecting.
  GDAL has no run-time switch that turns libcurl off (its security guide says to build
  without curl), so the driver allow-list and the refusal of remote paths are the defence;
  the option is the second wall behind them.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from viper_rs.core.errors import ImageError, ViperError, first_line
from viper_rs.core.files import require_file, special_kind
from viper_rs.core.lru import LRU
from viper_rs.core.textsafe import safe_text

log = logging.getLogger(__name__)

#: GDAL drivers that may read an input raster (GTiff reads COGs). Formats that name other
#: files or URLs (VRT, GTI, WMS...) are left out on purpose; add one only when users need
#: it and it cannot point elsewhere.
ALLOWED_DRIVERS: tuple[str, ...] = ("GTiff", "PNG", "JPEG")
#: The same formats as people name them (messages).
ALLOWED_FORMAT_NAMES: tuple[str, ...] = ("GeoTIFF/COG", "PNG", "JPEG")

#: URL schemes and GDAL virtual file systems GDAL reads (rasterio maps the schemes to
#: its /vsi* file systems).
REMOTE_PREFIXES: tuple[str, ...] = ("http://", "https://", "s3://", "gs://", "az://", "/vsi")

#: GDAL settings for reading a local file: no URL equals this name, so every
#: curl-based file system refuses to connect.
NO_NETWORK: dict[str, str] = {
    "CPL_VSIL_CURL_ALLOWED_FILENAME": "/vsicurl/viper-rs-reads-no-url-here",
}

#: Sidecar suffixes (after the raster's file name, case-blind) that GDAL opens as rasters:
#: external overviews and masks. They must be TIFFs.
_RASTER_SIDECARS: tuple[str, ...] = (".ovr", ".msk")
_TIFF_MAGIC: tuple[bytes, ...] = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def why_unreadable(exc: BaseException) -> str:
    """GDAL's one-line reason for a failed open, saying which formats are read when GDAL
    did not recognise the file (a VRT renamed ``.tif``, a PDF...)."""
    why = first_line(exc)
    if "not recognized as" in why and "supported file format" in why:
        *most, last = ALLOWED_FORMAT_NAMES
        why = why.rstrip(".") + f"; only {', '.join(most)} and {last} files are read"
    return why


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` is a URL or GDAL virtual path rather than a local file."""
    return str(path).startswith(REMOTE_PREFIXES)


def checked_path(
    path: str | Path, *, remote: bool = False, error: type[ViperError] = ImageError,
    kind: str = "an image",
) -> str:
    """The path GDAL may be given for ``path``: a URL as it is (only with ``remote``), else
    the absolute path of an existing, non-empty regular file (whose ``.ovr``/``.msk``
    sidecars, if any, are TIFFs). ``error`` (one line naming the file and what it is)
    otherwise; nothing that could block is opened."""
    text = os.fspath(path)
    if is_remote(text):
        if remote:
            return text
        raise error(f"{text}: URLs and GDAL /vsi paths are not read here; give a local "
                    "image file (a URL is read only when typed as a command argument)")
    if "\x00" in text:
        raise error(f"{text!r}: a file name cannot hold a NUL character")
    require_file(Path(text), error, kind)
    absolute = os.path.abspath(text)
    _check_sidecars(absolute, text, error)
    return absolute


def _check_sidecars(absolute: str, label: str, error: type[ViperError]) -> None:
    """``error`` when an ``.ovr``/``.msk`` overview or mask beside the raster is not a TIFF
    (GDAL would read it with the image). Special files beside it are not opened here:
    :func:`open_raster` then reads the raster alone (:func:`special_neighbour`)."""
    for suffix in _RASTER_SIDECARS:
        for side in (absolute + suffix, absolute + suffix.upper()):
            try:
                regular = stat.S_ISREG(os.stat(side).st_mode)
            except OSError:
                continue
            if regular:
                with open(side, "rb") as fh:  # a regular file: reading cannot block
                    head = fh.read(4)
                if head not in _TIFF_MAGIC:
                    raise error(f"{label}: {os.path.basename(side)} beside it is not a "
                                "TIFF overview or mask (GDAL would read it with the image); "
                                "move it away")


def special_neighbour(path: str) -> tuple[str, str] | None:
    """(name, what it is) of the first FIFO, device or socket in the folder of the local
    file ``path`` (hidden dot-files aside), None when there is none: GDAL must not look
    for files beside such a raster, since opening a FIFO blocks."""
    found = _special_entries(os.path.dirname(os.path.abspath(path)))
    return found[0] if found else None


#: The FIFOs, devices and sockets of a folder, keyed by (folder, its mtime): a folder of
#: many tiles is listed once, not once per tile or chip.
_SPECIAL: LRU[tuple[str, int], list[tuple[str, str]]] = LRU(64)


def _special_entries(folder: str) -> list[tuple[str, str]]:
    """(name, what it is) of every FIFO, device or socket in ``folder`` (symlinks followed,
    hidden dot-files left out); empty when the folder cannot be listed."""
    try:
        key = (folder, os.stat(folder).st_mtime_ns)
    except OSError:
        return []
    found = _SPECIAL.get(key)
    if found is None:
        found = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    # d_type answers without a stat for all but links and special files
                    if entry.name.startswith(".") or entry.is_dir() or entry.is_file():
                        continue
                    try:
                        what = special_kind(os.stat(entry.path).st_mode)
                    except OSError:
                        continue  # a broken link: nothing for GDAL to open there
                    if what is not None and what != "a directory":
                        found.append((entry.name, what))
        except OSError:
            found = []
        found.sort()
        _SPECIAL.put(key, found)
    return found


@contextmanager
def open_raster(
    path: str | Path, *, remote: bool = False,
    drivers: tuple[str, ...] | list[str] | None = None,
    error: type[ViperError] = ImageError, **gdal_options: Any,
) -> Iterator[Any]:
    """An open rasterio dataset of ``path`` after :func:`checked_path`, read by
    ``drivers`` (default :data:`ALLOWED_DRIVERS`) inside a ``rasterio.Env`` of
    ``gdal_options`` (plus :data:`NO_NETWORK` for a local file). GDAL's own errors
    (unreadable, not an allowed format) propagate as rasterio raises them."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import DatasetReader

    target = checked_path(path, remote=remote, error=error)
    options = dict(gdal_options)
    if not is_remote(target):
        options.update(NO_NETWORK)
        special = special_neighbour(target)
        if special is not None:
            # GDAL looks for sidecars (x.tif.aux.xml, world files, METADATA.DIM...) by
            # name; one that is a FIFO would block the read: take the folder as empty
            options["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
            log.warning("%s: %s in its folder is %s; the image is read without the files "
                        "beside it (world file, .aux.xml, overviews)",
                        safe_text(target), safe_text(special[0]), special[1])
    with warnings.catch_warnings(), rasterio.Env(**options):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        # rasterio.open takes one driver name; its reader takes a list
        with DatasetReader(target, driver=list(drivers or ALLOWED_DRIVERS)) as ds:
            yield ds
