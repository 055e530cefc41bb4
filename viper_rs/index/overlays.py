"""Map imagery of an index: one low-resolution picture per source, placed by its bounds.

Maps of search results draw these under the chip footprints, so the places are seen
without a tile server. They are built with the index and updated like it (a source is
drawn again only when its file changed). Layout, beside the LanceDB tables::

    <index>/overlays/overlays.json   source key -> PNG, WGS84 bounds, fingerprint (and the
                                     sources that could not be drawn, with the reason)
    <index>/overlays/<id>.png        RGBA, 256 colours, transparent outside the source and
                                     on nodata; longest side at most OVERLAY_SIDE px

The pictures are in Web Mercator (EPSG:3857), so an image overlay stretched over its WGS84
bounds (what Leaflet does) sits exactly on the ground.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.errors import ImageError, first_line
from viper_rs.tiling.sources import Source

log = logging.getLogger(__name__)

#: Folder of the pictures inside an index folder.
OVERLAY_DIR = "overlays"
#: The listing inside :data:`OVERLAY_DIR`.
LISTING = "overlays.json"
#: Longest side (px) of a source's picture (smaller sources keep their own size).
OVERLAY_SIDE = 1024
#: Web Mercator's latitude limit (degrees): sources beyond it get no picture.
MAX_MERCATOR_LAT = 85.05
LISTING_VERSION = 1
_MERCATOR = "EPSG:3857"


@dataclass(frozen=True)
class Overlay:
    """The picture of one source: where its PNG is and where it lies (WGS84)."""

    key: str
    name: str
    png: Path
    bounds: tuple[float, float, float, float]  # west, south, east, north (degrees)
    fingerprint: str
    width: int
    height: int
    datetime: str | None = None

    @property
    def bytes(self) -> int:
        """Size of the PNG file (0 when it is gone)."""
        try:
            return self.png.stat().st_size
        except OSError:
            return 0

    def data_uri(self) -> str:
        """The PNG as a ``data:image/png;base64,...`` URI (for pages drawn offline)."""
        return "data:image/png;base64," + base64.b64encode(self.png.read_bytes()).decode("ascii")


@dataclass
class OverlayReport:
    """What one update of an index's pictures did."""

    built: int = 0
    kept: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    seconds: float = 0.0
    #: Sources left for a later update because the time budget ran out.
    deferred: int = 0

    def summary(self) -> str:
        """One line for the terminal."""
        text = (f"map imagery: {self.built} sources drawn, {self.kept} unchanged, "
                f"{len(self.skipped)} without a picture; {self.seconds:.1f} s")
        if self.deferred:
            text += f" ({self.deferred} left for the next update)"
        return text


def overlay_dir(index: str | Path) -> Path:
    """The pictures' folder of the index at ``index``."""
    return Path(index) / OVERLAY_DIR


def load_overlays(index: str | Path) -> dict[str, Overlay]:
    """The index's pictures by source key (empty when there are none or the listing is
    unreadable); entries whose PNG is missing are left out."""
    listing = _read_listing(overlay_dir(index))
    folder = overlay_dir(index)
    out: dict[str, Overlay] = {}
    for key, e in listing["sources"].items():
        try:
            ov = Overlay(key=key, name=str(e["name"]), png=folder / str(e["png"]),
                         bounds=tuple(float(v) for v in e["bounds"]),  # type: ignore[arg-type]
                         fingerprint=str(e["fingerprint"]), width=int(e["width"]),
                         height=int(e["height"]), datetime=e.get("datetime"))
        except (KeyError, TypeError, ValueError):
            continue
        if len(ov.bounds) == 4 and ov.png.is_file():
            out[key] = ov
    return out


def known_sources(index: str | Path) -> set[str]:
    """Keys of the sources the listing has an entry for (drawn or skipped)."""
    listing = _read_listing(overlay_dir(index))
    return set(listing["sources"]) | set(listing["skipped"])


def update_overlays(index: str | Path, sources: Sequence[Source], side: int = OVERLAY_SIDE,
                    budget_s: float | None = None) -> OverlayReport:
    """Draw the pictures of ``sources`` that are new or changed (a source drawn before at
    this ``side`` from the same file is kept; one that failed before from the same file is
    not tried again). Sources that cannot be read are skipped with the reason. With
    ``budget_s``, sources not reached in time are left for the next update (one is always
    drawn)."""
    t0 = time.perf_counter()
    folder = overlay_dir(index)
    folder.mkdir(parents=True, exist_ok=True)
    listing = _read_listing(folder)
    drawn, failed = listing["sources"], listing["skipped"]
    report = OverlayReport()
    changed, tried = False, 0
    for i, source in enumerate(sources):
        key = source.key
        old = drawn.get(key)
        if old and old.get("fingerprint") == source.fingerprint and old.get("side") == side \
                and (folder / str(old.get("png", ""))).is_file():
            report.kept += 1
            continue
        bad = failed.get(key)
        if bad and bad.get("fingerprint") == source.fingerprint:
            report.skipped.append((source.uri, str(bad.get("reason", "could not be drawn"))))
            continue
        if budget_s is not None and tried and time.perf_counter() - t0 > budget_s:
            report.deferred = len(sources) - i
            break
        tried += 1
        png = _png_name(key)
        try:
            rgba, bounds = render(source, side)
            _write_png(rgba, folder / png)
        except ImageError as exc:
            reason = str(exc)
            log.info("no map picture for %s: %s", source.uri, reason)
            report.skipped.append((source.uri, reason))
            failed[key] = {"fingerprint": source.fingerprint, "reason": reason}
            drawn.pop(key, None)
            changed = True
            continue
        drawn[key] = {"name": source.name, "png": png, "bounds": [round(v, 9) for v in bounds],
                      "fingerprint": source.fingerprint, "side": side,
                      "width": int(rgba.shape[1]), "height": int(rgba.shape[0]),
                      "datetime": source.datetime}
        failed.pop(key, None)
        report.built += 1
        changed = True
    if changed:
        _write_listing(folder, listing)
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------------------- drawing
def render(source: Source, side: int = OVERLAY_SIDE
           ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """(H, W, 4) uint8 RGBA picture of ``source`` in Web Mercator, longest side at most
    ``side`` px, and its WGS84 bounds (west, south, east, north); ImageError when the
    source cannot be read or placed."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject, transform_bounds

    if side < 1:
        raise ValueError(f"side must be at least 1 px, got {side}")
    width, height = int(source.width), int(source.height)
    f = min(1.0, side / max(width, height))
    ow, oh = max(1, round(width * f)), max(1, round(height * f))
    src_t = Affine(*source.transform) @ Affine.scale(width / ow, height / oh)
    try:
        src_crs = CRS.from_user_input(source.crs)
        corners = [src_t @ (c, r) for c, r in ((0, 0), (ow, 0), (ow, oh), (0, oh))]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        west, south, east, north = transform_bounds(src_crs, "EPSG:4326", min(xs), min(ys),
                                                    max(xs), max(ys))
    except Exception as exc:  # noqa: BLE001 - PROJ raises several types
        raise ImageError(f"{source.uri}: cannot place it in WGS84 ({first_line(exc)})") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)) \
            or max(abs(south), abs(north)) > MAX_MERCATOR_LAT:
        raise ImageError(f"{source.uri}: it lies beyond Web Mercator's latitude range "
                         f"(+-{MAX_MERCATOR_LAT} degrees), where web maps cannot show it")
    rgb, valid = _read_display(source, ow, oh)
    src = np.concatenate([rgb.transpose(2, 0, 1), (valid * np.uint8(255))[None]]).astype(
        np.uint8)
    try:
        dst_t, dw, dh = calculate_default_transform(src_crs, _MERCATOR, ow, oh, min(xs),
                                                    min(ys), max(xs), max(ys))
        g = min(1.0, side / max(dw, dh))
        if g < 1.0:
            dst_t = dst_t @ Affine.scale(1.0 / g)
            dw, dh = max(1, math.ceil(dw * g)), max(1, math.ceil(dh * g))
        dst = np.zeros((4, dh, dw), np.uint8)
        reproject(src, dst, src_transform=src_t, src_crs=src_crs, dst_transform=dst_t,
                  dst_crs=_MERCATOR, resampling=Resampling.bilinear)
        mw, mn = dst_t @ (0, 0)
        me, ms = dst_t @ (dw, dh)
        bounds = transform_bounds(_MERCATOR, "EPSG:4326", mw, ms, me, mn)
    except Exception as exc:  # noqa: BLE001 - GDAL/PROJ raise several types
        raise ImageError(f"{source.uri}: cannot reproject it to Web Mercator "
                         f"({first_line(exc)})") from None
    rgba = dst.transpose(1, 2, 0).copy()
    rgba[rgba[..., 3] < 128] = 0  # nodata and the margins outside the source: transparent
    rgba[..., 3] = np.where(rgba[..., 3] > 0, 255, 0)
    if not rgba[..., 3].any():
        raise ImageError(f"{source.uri}: no valid pixels to draw")
    return rgba, (float(bounds[0]), float(bounds[1]), float(bounds[2]), float(bounds[3]))


def _read_display(source: Source, ow: int, oh: int) -> tuple[np.ndarray, np.ndarray]:
    """The source's 8-bit RGB and validity averaged to ``ow`` x ``oh`` (read in strips of
    rows when the source is over GeoImage's pixel limit; overviews are used when present)."""
    from viper_rs.core.geo import GeoImage
    from viper_rs.core.raster_read import MAX_PIXELS

    width, height = int(source.width), int(source.height)
    strips = min(oh, max(1, math.ceil(width * height / (MAX_PIXELS // 2))))
    rgb = np.zeros((oh, ow, 3), np.uint8)
    valid = np.zeros((oh, ow), bool)
    for k in range(strips):
        o0, o1 = k * oh // strips, (k + 1) * oh // strips
        r0, r1 = round(o0 * height / oh), round(o1 * height / oh)
        if o1 <= o0 or r1 <= r0:
            continue
        try:
            image = GeoImage.open(source.uri, window=(0, r0, width, r1 - r0),
                                  white_point=source.white_point, out_size=(ow, o1 - o0),
                                  remote=True)  # an accepted source
        except ImageError as exc:
            if "every pixel is nodata" in str(exc):
                continue
            raise
        rgb[o0:o1] = image.rgb_uint8()
        valid[o0:o1] = image.valid
    rgb[~valid] = 0
    return rgb, valid


def _write_png(rgba: np.ndarray, path: Path) -> None:
    """Save ``rgba`` as a 256-colour PNG (about 7x smaller than true colour; a map
    overview does not need more), written atomically."""
    from PIL import Image

    picture = Image.fromarray(rgba).quantize(256, method=Image.Quantize.FASTOCTREE)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        picture.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ImageError(f"cannot write {path}: {exc}") from None


def _png_name(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16] + ".png"


# ---------------------------------------------------------------------------- listing
def _read_listing(folder: Path) -> dict[str, Any]:
    empty: dict[str, Any] = {"version": LISTING_VERSION, "sources": {}, "skipped": {}}
    try:
        data = json.loads((folder / LISTING).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty
    if not isinstance(data, dict) or data.get("version") != LISTING_VERSION \
            or not isinstance(data.get("sources"), dict) \
            or not isinstance(data.get("skipped", {}), dict):
        return empty
    data.setdefault("skipped", {})
    return data


def _write_listing(folder: Path, listing: dict[str, Any]) -> None:
    tmp = folder / f"{LISTING}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(listing, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / LISTING)
