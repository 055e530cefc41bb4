"""NAIP re-imaging of RSVQA-HR tiles.

``python -m eval.naip fetch --data DIR --split test [--limit N]`` downloads, for every image
of a split, a NAIP chip (R,G,B,NIR at NAIP's native resolution) covering the image's
footprint plus a context margin, from a STAC API (default: Microsoft Planetary Computer,
collection ``naip``), into a local chip cache: ``{chips}/{image_id}.tif`` with a JSON
sidecar naming the STAC item, its year, the asset URL and the footprint. Fetching is
resumable: valid chips already in the cache are skipped.

``open_naip_tile`` opens a chip for evaluation: cropped to the footprint plus
``context_m`` metres, with the footprint itself as the image's region of interest (models
see the context; answers count only footprint pixels).

The RSVQA-HR release does not record when its images were acquired. The NAIP year asked
for is ``--year`` when given, else the year the image was added to the dataset (its
``date_added``); the item whose year is closest wins (ties: the newer one), preferring
items that cover the whole footprint plus margin.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from affine import Affine
from shapely.geometry import Polygon, box, mapping, shape

from eval.rsvqa_data import load_images, load_split, read_question_ids
from viper_rs.core.errors import ImageError, InputError, first_line
from viper_rs.datasets.rsvqa import RSVQA_TILE_PX, lat_from_mercator_y, tile_transform
from viper_rs.datasets.stac import PLANETARY_COMPUTER_STAC
from viper_rs.datasets.stac import open_catalog as _open_stac

log = logging.getLogger("eval.naip")

COLLECTION = "naip"
#: Context fetched around each footprint (ground metres): enough for --context-m up to this.
DEFAULT_MARGIN_M = 75.0
CHIP_BANDS = ("R", "G", "B", "NIR")
_GDAL_HTTP = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "60",
}


class NaipError(RuntimeError):
    """A chip could not be fetched or opened (the message says why and what to do)."""


# ---------------------------------------------------------------------- footprints
@dataclass(frozen=True)
class Footprint:
    """Ground footprint of one RSVQA-HR image in EPSG:3857."""

    image_id: int
    bounds_3857: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax

    @property
    def lat(self) -> float:
        """Latitude of the footprint's centre (degrees)."""
        return lat_from_mercator_y((self.bounds_3857[1] + self.bounds_3857[3]) / 2)

    def expanded(self, margin_m: float = 0.0) -> tuple[float, float, float, float]:
        """Bounds grown by ``margin_m`` ground metres on every side (EPSG:3857 units)."""
        d = margin_m / math.cos(math.radians(self.lat))
        x0, y0, x1, y1 = self.bounds_3857
        return x0 - d, y0 - d, x1 + d, y1 + d

    def polygon(self, crs: Any = "EPSG:4326", margin_m: float = 0.0) -> Polygon:
        """The (expanded) footprint as a polygon in ``crs`` (edges densified)."""
        from pyproj import CRS, Transformer

        ring = box(*self.expanded(margin_m)).exterior.segmentize(
            max(1.0, (self.bounds_3857[2] - self.bounds_3857[0]) / 8)
        )
        xs, ys = np.asarray(ring.xy)
        dst = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        tr = Transformer.from_crs("EPSG:3857", dst, always_xy=True)
        x2, y2 = tr.transform(xs, ys)
        return Polygon(zip(x2, y2, strict=True))


def footprint(record: dict[str, Any]) -> Footprint:
    """Footprint of an image record (upper-left corner, 512 px of 0.1524 m ground)."""
    t = tile_transform(record)
    x0, y1 = t.c, t.f
    x1, y0 = t.c + t.a * RSVQA_TILE_PX, t.f + t.e * RSVQA_TILE_PX
    return Footprint(int(record["id"]), (x0, y0, x1, y1))


def target_year(record: dict[str, Any], year: int | None = None) -> int | None:
    """The NAIP year to ask for: ``year``, else the image's ``date_added`` year, else None."""
    if year is not None:
        return int(year)
    added = record.get("date_added")
    if added is None:
        return None
    return datetime.fromtimestamp(float(added), tz=timezone.utc).year


# ---------------------------------------------------------------------- chip cache
def default_chips_dir() -> Path:
    """``settings.cache_dir / "naip_chips"``."""
    from viper_rs.core.config import Settings

    return Path(Settings.from_env().cache_dir) / "naip_chips"


def chip_paths(chips_dir: Path, image_id: int) -> tuple[Path, Path]:
    """(GeoTIFF, JSON sidecar) of one image's chip."""
    chips_dir = Path(chips_dir)
    return chips_dir / f"{image_id}.tif", chips_dir / f"{image_id}.json"


def read_sidecar(chips_dir: Path, image_id: int) -> dict[str, Any] | None:
    """The chip's sidecar, or None when the chip is missing or incomplete."""
    tif, side = chip_paths(chips_dir, image_id)
    if not (tif.exists() and side.exists()):
        return None
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def chip_is_valid(chips_dir: Path, image_id: int, margin_m: float = 0.0) -> bool:
    """Whether a complete chip with at least ``margin_m`` of context is cached."""
    import rasterio

    meta = read_sidecar(chips_dir, image_id)
    if meta is None or float(meta.get("margin_m", -1)) < margin_m - 1e-6:
        return False
    try:
        with rasterio.open(chip_paths(chips_dir, image_id)[0]) as ds:
            return ds.count == len(CHIP_BANDS)
    except Exception:  # truncated or foreign file: fetch again
        return False


# ---------------------------------------------------------------------- STAC
def open_catalog(url: str = PLANETARY_COMPUTER_STAC, timeout: float = 30.0) -> Any:
    """A pystac-client Client (Planetary Computer items signed); NaipError when the STAC
    API cannot be reached."""
    try:
        return _open_stac(url, timeout=timeout)
    except InputError as exc:
        raise NaipError(
            f"{exc}. Fetching NAIP chips needs internet access; chips already in the cache "
            "are used as they are."
        ) from None


def search_items(client: Any, fp: Footprint, margin_m: float, collection: str = COLLECTION) -> list:
    """STAC items of ``collection`` intersecting the footprint plus margin."""
    geom = mapping(fp.polygon("EPSG:4326", margin_m))
    try:
        search = client.search(collections=[collection], intersects=geom, max_items=200)
        return list(search.items())
    except Exception as exc:
        raise NaipError(f"STAC search failed ({first_line(exc)})") from None


def item_year(item: Any) -> int | None:
    """Acquisition year of a STAC item (``naip:year``, else its datetime)."""
    props = item.properties
    if props.get("naip:year"):
        return int(props["naip:year"])
    for key in ("datetime", "start_datetime"):
        if props.get(key):
            return int(str(props[key])[:4])
    return None


def choose_item(items: Iterable[Any], fp: Footprint, margin_m: float, year: int | None) -> tuple[Any, bool]:
    """The item with an ``image`` asset whose year is closest to ``year`` (ties: the newer),
    preferring items that cover the whole footprint plus margin; also says if it covers."""
    need = fp.polygon("EPSG:4326", margin_m)
    ranked = []
    for it in items:
        if "image" not in it.assets or it.geometry is None:
            continue
        y = item_year(it) or 0
        covers = bool(shape(it.geometry).covers(need))
        gsd = float(it.properties.get("gsd") or 99)
        dist = abs(y - year) if year is not None else 0
        ranked.append(((dist, not covers, -y, gsd, it.id), it, covers))
    if not ranked:
        raise NaipError(f"image {fp.image_id}: no NAIP item with an image asset covers it")
    ranked.sort(key=lambda r: r[0])
    return ranked[0][1], ranked[0][2]


# ---------------------------------------------------------------------- reading
@dataclass
class Chip:
    """Pixels (4, H, W), validity mask, CRS and transform of a chip, and whether it covers."""

    data: np.ndarray
    valid: np.ndarray
    crs: Any
    transform: Any
    covers: bool


def read_chip(href: str, fp: Footprint, margin_m: float) -> Chip:
    """Windowed read of the footprint plus margin from a 4-band GeoTIFF/COG, at its native
    resolution and in its own CRS; pixels outside the asset are marked invalid."""
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.Env(**_GDAL_HTTP), rasterio.open(href) as ds:
            if ds.count < len(CHIP_BANDS):
                raise NaipError(f"{_plain_url(href)}: {ds.count} bands, expected R,G,B,NIR")
            if ds.crs is None:
                raise NaipError(f"{_plain_url(href)}: no CRS")
            x0, y0, x1, y1 = fp.polygon(ds.crs, margin_m).bounds
            inv = ~ds.transform
            corners = [inv @ (x, y) for x in (x0, x1) for y in (y0, y1)]
            c0 = math.floor(min(c for c, _ in corners))
            c1 = math.ceil(max(c for c, _ in corners))
            r0 = math.floor(min(r for _, r in corners))
            r1 = math.ceil(max(r for _, r in corners))
            full = Window(c0, r0, c1 - c0, r1 - r0)
            cc0, rr0 = max(c0, 0), max(r0, 0)
            cc1, rr1 = min(c1, ds.width), min(r1, ds.height)
            if cc1 <= cc0 or rr1 <= rr0:
                raise NaipError(f"{_plain_url(href)} does not overlap image {fp.image_id}")
            part = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            data = np.zeros((len(CHIP_BANDS), full.height, full.width), dtype=ds.dtypes[0])
            valid = np.zeros((full.height, full.width), dtype=bool)
            sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            data[(slice(None), *sl)] = ds.read(indexes=[1, 2, 3, 4], window=part)
            valid[sl] = ds.dataset_mask(window=part) > 0
            return Chip(data, valid, ds.crs, ds.transform @ Affine.translation(c0, r0),
                        covers=(part.width, part.height) == (full.width, full.height))
    except NaipError:
        raise
    except Exception as exc:
        raise NaipError(f"reading {_plain_url(href)} failed ({first_line(exc)})") from None


def write_chip(path: Path, chip: Chip) -> None:
    """Write a chip as a deflate GeoTIFF with band names and a nodata mask (atomically)."""
    import rasterio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    profile = {
        "driver": "GTiff", "width": chip.data.shape[2], "height": chip.data.shape[1],
        "count": chip.data.shape[0], "dtype": chip.data.dtype.name, "crs": chip.crs,
        "transform": chip.transform, "compress": "deflate", "photometric": "MINISBLACK",
    }
    with rasterio.open(tmp, "w", **profile) as ds:
        ds.write(chip.data)
        for i, name in enumerate(CHIP_BANDS, 1):
            ds.set_band_description(i, name)
        if not chip.valid.all():
            ds.write_mask((chip.valid * 255).astype("uint8"))
    os.replace(tmp, path)


# ---------------------------------------------------------------------- fetching
@dataclass
class FetchReport:
    """Outcome of a fetch run."""

    fetched: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    partial: list[int] = field(default_factory=list)  # chips not covering the footprint+margin


def fetch_one(
    client: Any,
    record: dict[str, Any],
    chips_dir: Path,
    margin_m: float = DEFAULT_MARGIN_M,
    year: int | None = None,
    collection: str = COLLECTION,
    stac_url: str | None = None,
) -> dict[str, Any]:
    """Search, choose, read and cache one image's chip; returns its sidecar."""
    fp = footprint(record)
    want = target_year(record, year)
    item, _ = choose_item(search_items(client, fp, margin_m, collection), fp, margin_m, want)
    href = item.assets["image"].href
    chip = read_chip(href, fp, margin_m)
    tif, side = chip_paths(chips_dir, fp.image_id)
    write_chip(tif, chip)
    res = abs(chip.transform.a)
    meta = {
        "image_id": fp.image_id,
        "item_id": item.id,
        "collection": collection,
        "year": item_year(item),
        "datetime": item.properties.get("datetime"),
        "target_year": want,
        "url": _plain_url(href),
        "stac_url": stac_url,
        "footprint_3857": list(fp.bounds_3857),
        "footprint_lonlat": mapping(fp.polygon("EPSG:4326"))["coordinates"][0],
        "margin_m": float(margin_m),
        "crs": chip.crs.to_string(),
        "resolution": res,
        "shape": [int(chip.data.shape[1]), int(chip.data.shape[2])],
        "covers": chip.covers,
        "fetched_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp, side)
    return meta


def fetch(
    records: list[dict[str, Any]],
    chips_dir: Path,
    margin_m: float = DEFAULT_MARGIN_M,
    year: int | None = None,
    stac_url: str = PLANETARY_COMPUTER_STAC,
    collection: str = COLLECTION,
    workers: int = 4,
    timeout: float = 30.0,
    progress: bool = True,
) -> FetchReport:
    """Fetch the chips of ``records`` not yet cached; one failure does not stop the others.

    Raises NaipError when the STAC API cannot be reached at all.
    """
    from tqdm import tqdm

    report = FetchReport()
    todo = []
    for r in records:
        if chip_is_valid(chips_dir, int(r["id"]), margin_m):
            report.skipped.append(int(r["id"]))
        else:
            todo.append(r)
    if not todo:
        return report
    client = open_catalog(stac_url, timeout=timeout)
    bar = tqdm(total=len(todo), desc="naip", unit="chip", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(fetch_one, client, r, chips_dir, margin_m, year, collection, stac_url):
                int(r["id"])
            for r in todo
        }
        for fut in as_completed(futures):
            image_id = futures[fut]
            try:
                meta = fut.result()
                report.fetched.append(image_id)
                if not meta["covers"]:
                    report.partial.append(image_id)
            except Exception as exc:  # reported per image; the others go on
                report.failed[image_id] = first_line(exc)
                log.warning("image %s: %s", image_id, report.failed[image_id])
            bar.update(1)
            bar.set_postfix(ok=len(report.fetched), failed=len(report.failed))
    bar.close()
    return report


# ---------------------------------------------------------------------- evaluation side
def open_naip_tile(chips_dir: Path, record: dict[str, Any], context_m: float = 0.0):
    """The cached chip of ``record`` as a GeoImage: cropped to the footprint plus
    ``context_m`` metres, with the footprint as its region of interest."""
    from rasterio.features import rasterize
    from rasterio.windows import Window

    from viper_rs.core.geo import GeoImage

    image_id = int(record["id"])
    tif, _ = chip_paths(chips_dir, image_id)
    meta = read_sidecar(chips_dir, image_id)
    if meta is None:
        raise ImageError(
            f"no NAIP chip for image {image_id} in {chips_dir}; fetch it (online) with "
            "python -m eval.naip fetch"
        )
    if float(meta.get("margin_m", 0.0)) < context_m - 1e-6:
        raise ImageError(
            f"the NAIP chip of image {image_id} has {meta.get('margin_m')} m of context, "
            f"--context-m {context_m} needs more: fetch again with --margin-m {context_m}"
        )
    chip = GeoImage.open(tif)
    fp = footprint(record)
    x0, y0, x1, y1 = fp.polygon(chip.crs, context_m).bounds
    inv = ~chip.transform
    corners = [inv @ (x, y) for x in (x0, x1) for y in (y0, y1)]
    c0 = max(0, math.floor(min(c for c, _ in corners) + 1e-6))
    c1 = min(chip.width, math.ceil(max(c for c, _ in corners) - 1e-6))
    r0 = max(0, math.floor(min(r for _, r in corners) + 1e-6))
    r1 = min(chip.height, math.ceil(max(r for _, r in corners) - 1e-6))
    if c1 <= c0 or r1 <= r0:
        raise ImageError(f"the NAIP chip of image {image_id} does not cover its footprint")
    transform = chip.transform @ Affine.translation(c0, r0)
    shape_ = (r1 - r0, c1 - c0)
    roi = rasterize([fp.polygon(chip.crs)], out_shape=shape_, transform=transform,
                    fill=0, default_value=1, dtype="uint8").astype(bool)
    win = Window(c0, r0, c1 - c0, r1 - r0)
    rows, cols = win.toslices()
    return GeoImage(
        data=chip.data[:, rows, cols], band_names=list(chip.band_names), transform=transform,
        crs=chip.crs, valid=chip.valid[rows, cols], path=str(tif), roi=roi,
    )


def missing_chips(chips_dir: Path, records: Iterable[dict[str, Any]], context_m: float = 0.0) -> list[int]:
    """Ids of images whose chip is absent, incomplete or has too little context."""
    out = []
    for r in records:
        meta = read_sidecar(chips_dir, int(r["id"]))
        if meta is None or float(meta.get("margin_m", 0.0)) < context_m - 1e-6:
            out.append(int(r["id"]))
    return sorted(set(out))


# ---------------------------------------------------------------------- CLI
def _plain_url(href: str) -> str:
    """``href`` without its query (drops signing tokens)."""
    parts = urlsplit(href)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m eval.naip``."""
    p = argparse.ArgumentParser(prog="python -m eval.naip", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download NAIP chips for a split's images (online)")
    f.add_argument("--data", type=Path, required=True,
                   help="folder with USGS_split_{split}_images.json")
    f.add_argument("--split", default="test")
    f.add_argument("--limit", type=int, default=None, help="only the first N images (by id)")
    f.add_argument("--ids", type=Path, default=None,
                   help="only the images of these questions (question_ids.json of a run)")
    f.add_argument("--chips", type=Path, default=None,
                   help="chip cache folder (default: settings.cache_dir/naip_chips)")
    f.add_argument("--margin-m", type=float, default=DEFAULT_MARGIN_M,
                   help="context around each footprint, ground metres")
    f.add_argument("--year", type=int, default=None,
                   help="NAIP year to aim for (default: each image's date_added year)")
    f.add_argument("--stac-url", default=PLANETARY_COMPUTER_STAC)
    f.add_argument("--collection", default=COLLECTION)
    f.add_argument("--workers", type=int, default=4, help="parallel downloads")
    f.add_argument("--timeout", type=float, default=30.0, help="STAC request timeout, s")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _records_for(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.ids is not None:
        wanted = set(read_question_ids(args.ids))
        seen: dict[int, dict[str, Any]] = {}
        for r in load_split(args.data, args.split):
            if r.question_id in wanted:
                seen.setdefault(r.image_id, r.image)
        records = [seen[k] for k in sorted(seen)]
    else:
        records = load_images(args.data, args.split)
    return records[: args.limit] if args.limit is not None else records


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are summed up below
    chips = args.chips or default_chips_dir()
    try:
        records = _records_for(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"eval.naip: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        report = fetch(records, chips, margin_m=args.margin_m, year=args.year,
                       stac_url=args.stac_url, collection=args.collection,
                       workers=args.workers, timeout=args.timeout, progress=not args.quiet)
    except NaipError as exc:
        print(f"eval.naip: {exc}", file=sys.stderr)
        return 2
    print(f"{len(records)} images: {len(report.fetched)} fetched, {len(report.skipped)} already "
          f"cached, {len(report.failed)} failed ({time.perf_counter() - t0:.1f} s) -> {chips}")
    if report.partial:
        print(f"{len(report.partial)} chips do not cover footprint+margin fully "
              f"(their uncovered pixels are nodata): {report.partial[:20]}")
    for image_id, msg in sorted(report.failed.items())[:20]:
        print(f"  image {image_id}: {msg}", file=sys.stderr)
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20} more", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
