"""The images the app offers: demo scenes, images found in folders, and uploads."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.admission import admission, out_of_memory
from viper_rs.core.config import Settings
from viper_rs.core.errors import ImageError
from viper_rs.core.geo import GeoImage
from viper_rs.core.lru import LRU
from viper_rs.core.rasterfile import ALLOWED_DRIVERS, open_raster
from viper_rs.core.textsafe import safe_text
from viper_rs.datasets.rsvqa import RSVQA_CRS, find_image_record, tile_transform
from viper_rs.vision.cost import image_admission

log = logging.getLogger(__name__)

#: File suffixes the app lists and accepts (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: GDAL drivers that may read those files: the raster gate's (a VRT renamed .tif must not
#: read other files).
IMAGE_DRIVERS: tuple[str, ...] = ALLOWED_DRIVERS
#: Ground pixel sizes (m/px) the app works with: 1 cm drone imagery to 10 km grids.
#: Values outside are typing or georeference mistakes (1e-9 m would ask for gigapixel
#: windows).
GSD_RANGE_M: tuple[float, float] = (0.01, 10_000.0)
#: Demo scenes: (seed, size px, ground sampling distance m).
DEMO_SCENES: tuple[tuple[int, int, float], ...] = ((0, 384, 1.0), (1, 512, 0.6), (2, 384, 1.0))
#: Longest side (px) of the part of a source a region-search chip opens with: the chip in
#: the middle, its surroundings as context (the whole source when it is smaller).
CHIP_CONTEXT_PX = 2048
#: Longest file name (characters) an image's key in the picker shows; the rest is cut.
MAX_NAME_CHARS = 200


def _free_key(entries: Any, key: str) -> str:
    """``key``, or ``key (2)``, ``key (3)``... when taken (two names made safe alike)."""
    out, n = key, 2
    while out in entries:
        out, n = f"{key} ({n})", n + 1
    return out


@dataclass
class ImageEntry:
    """One image the user can pick. ``kind`` is ``demo``, ``folder``, ``upload`` or
    ``chip`` (a region-search hit: a window of an indexed source around the chip, the
    chip being the image's region of interest)."""

    key: str
    kind: str
    path: Path | None = None
    seed: int | None = None
    size: int | None = None
    gsd: float | None = None
    crs: str | None = None
    transform: Any = None
    source: str | None = None  # chips: the source's path or URL
    window: tuple[int, int, int, int] | None = None  # chips: (col, row, width, height) px
    white_point: float | None = None  # chips: the source's white point
    roi: tuple[int, int, int, int] | None = None  # chips: the chip's window in the source


class Catalog:
    """Demo scenes first, then images under ``folders``, then uploads and chips opened from
    region search; opened images are cached (a few, keyed by image and GSD).

    Folder images with fewer than three bands (label rasters, elevation models) are not
    listed (a note says how many); they can still be uploaded. RSVQA-HR tiles (``images/{id}.png`` or
    ``Data/{id}.tif`` beside a ``USGS_split_*_images.json``) get their EPSG:3857
    georeference from the image record.

    Every file is opened within ``settings``' image budget (``image_max_memory_mb``,
    ``image_max_time_s``; :mod:`viper_rs.vision.cost`): one over it is refused from its
    header, before any pixel is decoded.
    """

    def __init__(
        self,
        folders: list[Path] | tuple[Path, ...] = (),
        demo: tuple[tuple[int, int, float], ...] = DEMO_SCENES,
        max_images: int = 400,
        cache_items: int = 4,
        settings: Settings | None = None,
    ) -> None:
        self.folders = [Path(f) for f in folders]
        self.settings = settings or Settings.from_env()
        self.entries: OrderedDict[str, ImageEntry] = OrderedDict()
        self.notes: list[str] = []
        self._scenes: dict[int, Any] = {}
        self._opened: LRU[tuple[str, float | None], GeoImage] = LRU(cache_items)
        self._lock = threading.RLock()
        for seed, size, gsd in demo:
            key = f"demo: synthetic scene {seed} ({size} px, {gsd:g} m)"
            self.entries[key] = ImageEntry(key=key, kind="demo", seed=seed, size=size, gsd=gsd)
        for folder in folders:
            self._scan(Path(folder), max_images)

    # ------------------------------------------------------------------ listing
    @property
    def keys(self) -> list[str]:
        """Every entry's label, in display order."""
        return list(self.entries)

    @property
    def default_key(self) -> str | None:
        """The entry selected when the app opens (the first demo scene)."""
        return next(iter(self.entries), None)

    def _scan(self, folder: Path, max_images: int) -> None:
        if not folder.is_dir():
            self.notes.append(f"image folder {folder} not found; showing demo scenes only")
            return
        files = sorted(
            (p for p in folder.rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)),
            key=lambda p: natural_key(p.relative_to(folder).as_posix()),
        )
        listed = 0
        rsvqa: dict[Path, dict[int, dict]] = {}
        few: list[str] = []  # rasters of fewer than 3 bands
        for path in files:
            if listed >= max_images:
                self.notes.append(f"{folder}: listed the first {max_images} images only")
                break
            bands = _band_count(path)
            if bands is not None and bands < 3:
                few.append(path.relative_to(folder).as_posix())
            if bands is None or bands < 3:
                continue
            # The picker shows keys: file names made safe (escape sequences, bidi overrides).
            key = _free_key(self.entries, safe_text(
                f"{folder.name}/{path.relative_to(folder).as_posix()}", MAX_NAME_CHARS))
            entry = ImageEntry(key=key, kind="folder", path=path)
            record = find_image_record(path, rsvqa)
            if record is not None:
                entry.crs, entry.transform = RSVQA_CRS, tile_transform(record)
            self.entries[key] = entry
            listed += 1
        if few:
            self.notes.append(
                f"{folder.name}: {len(few)} raster{'s' if len(few) > 1 else ''} with fewer "
                "than 3 bands (label masks, elevation models) not listed: the detectors need "
                f"red, green and blue bands (e.g. {', '.join(few[:2])})")

    def add_upload(self, path: str | Path, gsd: float | None = None) -> tuple[str, GeoImage]:
        """Open an uploaded file (ImageError when it is not a usable image) and list it."""
        path = Path(path)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImageError(
                f"{path.name}: unsupported file type {path.suffix or '(none)'}; upload a "
                "GeoTIFF, PNG or JPEG"
            )
        _check_gsd(gsd)
        image = self._read(path, gsd=gsd)
        with self._lock:
            name = safe_text(path.name, MAX_NAME_CHARS)  # the picker shows it
            key = f"upload: {name}"
            n = 2
            while key in self.entries and self.entries[key].path != path:
                key = f"upload: {name} ({n})"
                n += 1
            entry = self.entries[key] = ImageEntry(key=key, kind="upload", path=path)
            for stale in [k for k in self._opened if k[0] == key]:  # the file may have changed
                self._opened.pop(stale)
            self._opened.put(_cache_key(entry, gsd), image)
        return key, image

    def add_chip(self, hit: Any) -> str:
        """List a region-search hit and return its key (a chip already listed keeps its
        key). It opens as the source around the chip (at most :data:`CHIP_CONTEXT_PX` px a
        side, the whole source when smaller) with the chip as the region of interest:
        answers count only inside the chip, the rest is context."""
        col, row, width, height = (int(v) for v in hit.window)
        chip = (col, row, width, height)
        base = f"chip: {safe_text(hit.source_name, MAX_NAME_CHARS)} [{col},{row} {width}x{height}]"
        with self._lock:
            key, n = base, 2
            while key in self.entries:
                entry = self.entries[key]
                if entry.source == hit.source and entry.roi == chip:
                    return key
                key = f"{base} ({n})"
                n += 1
        size = _raster_size(str(hit.source))  # outside the lock: it opens the file
        window = chip if size is None else context_window(chip, *size)
        with self._lock:
            self.entries[key] = ImageEntry(key=key, kind="chip", source=str(hit.source),
                                           window=window, white_point=float(hit.white_point),
                                           roi=chip)
        return key

    # ------------------------------------------------------------------ opening
    def entry(self, key: str | None) -> ImageEntry:
        """The entry called ``key``; ImageError for an unknown one."""
        if not key or key not in self.entries:
            raise ImageError(f"no image called {key!r}; pick one from the list or upload one")
        return self.entries[key]

    def open(self, key: str | None, gsd: float | None = None) -> GeoImage:
        """The image of entry ``key``; ``gsd`` (m/px) gives a plain image a ground size."""
        entry = self.entry(key)
        _check_gsd(gsd)
        with self._lock:
            cache_key = _cache_key(entry, gsd)
            image = self._opened.get(cache_key)
            if image is not None:
                return image
            if entry.kind == "demo":
                image = self.scene(entry.key).image
            elif entry.kind == "chip":
                image = self._read(entry.source, window=entry.window,
                                   white_point=entry.white_point,
                                   remote=True)  # a source the index accepted
                if entry.roi is not None and entry.roi != entry.window:
                    image = replace(image, roi=window_mask(entry.window, entry.roi))
            elif entry.crs is not None:
                image = self._read(entry.path, crs=entry.crs, transform=entry.transform)
            else:
                image = self._read(entry.path, gsd=gsd)
            self._opened.put(cache_key, image)
            return image

    def _read(self, path: Any, gsd: float | None = None, **kwargs: Any) -> GeoImage:
        """GeoImage.open of an app image (the app's drivers, the image budget checked from
        the header first); an allocation that fails is an ImageTooLarge."""
        try:
            with admission(image_admission(self.settings, gsd)):
                return _checked(GeoImage.open(path, gsd=gsd, drivers=IMAGE_DRIVERS, **kwargs))
        except MemoryError:
            raise out_of_memory(None, f"reading {Path(str(path)).name}") from None

    def scene(self, key: str) -> Any:
        """The synthetic Scene (with exact ground truth) of a demo entry, else None."""
        entry = self.entry(key)
        if entry.kind != "demo":
            return None
        with self._lock:
            if entry.seed not in self._scenes:
                from viper_rs.synthetic import make_scene

                self._scenes[entry.seed] = make_scene(entry.seed, size=entry.size, gsd=entry.gsd)
            return self._scenes[entry.seed]


def context_window(chip: tuple[int, int, int, int], width: int, height: int,
                   side: int = CHIP_CONTEXT_PX) -> tuple[int, int, int, int]:
    """The window (col, row, width, height) of a ``width`` x ``height`` source that holds
    ``chip`` in its middle, at most ``side`` px a side (never smaller than the chip), moved
    inside the source at its edges."""
    col, row, w, h = chip
    cw, ch = min(width, max(w, side)), min(height, max(h, side))
    c0 = min(max(0, col + w // 2 - cw // 2), width - cw)
    r0 = min(max(0, row + h // 2 - ch // 2), height - ch)
    return (c0, r0, cw, ch)


def window_mask(window: tuple[int, int, int, int], inner: tuple[int, int, int, int]
                ) -> np.ndarray:
    """Boolean (height, width) mask of ``window`` that is True on ``inner`` (both in source
    pixels)."""
    c0, r0, w, h = window
    col, row, iw, ih = inner
    mask = np.zeros((h, w), dtype=bool)
    mask[max(0, row - r0):max(0, row - r0 + ih), max(0, col - c0):max(0, col - c0 + iw)] = True
    return mask


def _raster_size(source: str) -> tuple[int, int] | None:
    """(width, height) of an indexed source (a URL there was accepted when the index was
    built), None when it cannot be opened."""
    try:
        with open_raster(source, remote=True) as ds:
            return int(ds.width), int(ds.height)
    except Exception as exc:  # noqa: BLE001 - opening it later reports the problem
        log.info("cannot read the size of %s: %s", source, exc)
        return None


def _cache_key(entry: ImageEntry, gsd: float | None) -> tuple[str, float | None]:
    """Opened images are cached per entry and typed GSD (which demo scenes, chips and
    entries georeferenced by the catalog ignore)."""
    return entry.key, None if entry.kind in ("demo", "chip") or entry.crs else gsd


def natural_key(text: str) -> tuple:
    """Sort key reading digit runs as numbers ("tile_2" before "tile_10"), case-blind."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text))


def _check_gsd(gsd: float | None) -> None:
    """ImageError unless ``gsd`` (typed in the app) is None or in :data:`GSD_RANGE_M`."""
    lo, hi = GSD_RANGE_M
    if gsd is not None and not (math.isfinite(gsd) and lo <= gsd <= hi):
        raise ImageError(
            f"GSD must be a positive number of metres per pixel from {lo:g} to {hi:g}, "
            f"got {gsd:g}"
        )


def _checked(image: GeoImage) -> GeoImage:
    """``image`` unless its georeference gives pixels a ground size outside the range."""
    gsd = image.ground_sampling_distance
    lo, hi = GSD_RANGE_M
    if gsd is not None and not math.isfinite(gsd):
        raise ImageError(f"{image.name}: its georeference gives pixels no finite ground size "
                         "(coordinates off the globe?); fix its georeference")
    if gsd is not None and not lo <= gsd <= hi:
        raise ImageError(
            f"{image.name}: its georeference makes a pixel {gsd:.3g} m on the ground, "
            f"outside the {lo:g} to {hi:g} m/px this app handles; resample the image or "
            "fix its georeference"
        )
    return image


def _band_count(path: Path) -> int | None:
    """Bands of a raster (palette images count as three), None when unreadable."""
    try:
        with open_raster(path, drivers=IMAGE_DRIVERS) as ds:
            if ds.count == 1 and ds.colorinterp[0].name == "palette":
                return 3
            return int(ds.count)
    except Exception as exc:  # noqa: BLE001 - unreadable files are skipped, not fatal
        log.info("skipping %s: %s", path, exc)
        return None
