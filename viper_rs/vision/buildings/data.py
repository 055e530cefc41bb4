"""Labelled tiles for BuildingNet: images, footprints, targets at the model scale and the
scale/colour augmentation of training samples.

A labelled tile is ``<name>.tif`` with ``<name>_buildings.geojson`` (footprints in the
image CRS) and ``<name>_truth.json`` (see ``../shared/data/labeled/README.md``). Targets
are made at the model's ground resolution: each footprint is rasterized with its own id on
a grid covering the tile's bounds, then every building pixel within ``ring_px`` pixels of
another id (background or a neighbouring footprint) is *boundary*, the rest *interior*.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from viper_rs.core.errors import InputError
from viper_rs.vision.buildings.model import BACKGROUND, BOUNDARY, INTERIOR

#: Half-width in model pixels (0.3 m) of the boundary ring drawn inside each footprint
#: edge and along every wall two footprints share (measured: see MODEL_CARD.md).
RING_PX = 2
#: Centre ground resolutions (m) the training samples are made to look like.
DEFAULT_SCALES_M: tuple[float, ...] = (0.3, 0.6, 1.0)

_XY = re.compile(r"_\d+_\d+$")


@dataclass
class LabeledTile:
    """One labelled tile: RGB image (H, W, 3) uint8, footprints (shapely polygons in the
    image CRS), the image's affine ``transform`` and ``crs``, ground ``gsd_m`` and truth."""

    name: str
    place: str
    path: Path
    gsd_m: float
    image: np.ndarray
    footprints: list[Any]
    transform: Any
    crs: str
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the image CRS."""
        h, w = self.image.shape[:2]
        t = self.transform
        xs = (t.c, t.c + t.a * w)
        ys = (t.f, t.f + t.e * h)
        return min(xs), min(ys), max(xs), max(ys)


def place_of(name: str) -> str:
    """The place of a tile name: the prefix before its trailing ``_x_y`` numbers
    (``zanzibar_tz_319813_272011`` -> ``zanzibar_tz``); names without them are their own
    place (``atlanta_nw`` -> ``atlanta_nw``... grouped as ``atlanta``)."""
    base = _XY.sub("", name)
    if base == name and "_" in name:
        return name.split("_")[0]
    return base


def _tile_images(root: Path) -> list[Path]:
    """Every ``<name>.tif`` under ``root`` (recursively) that has a truth JSON beside it."""
    out = []
    for tif in sorted(root.rglob("*.tif")):
        if tif.name.endswith("_buildings.tif"):
            continue
        if (tif.with_name(tif.stem + "_truth.json")).is_file() and (
            tif.with_name(tif.stem + "_buildings.geojson")
        ).is_file():
            out.append(tif)
    return out


def _read_tile(tif: Path, rgb_only: bool) -> LabeledTile | None:
    import rasterio
    from shapely.geometry import shape

    with rasterio.open(tif) as src:
        if src.count < 3 and rgb_only:
            return None
        data = src.read()
        transform, crs = src.transform, str(src.crs)
    if data.shape[0] >= 3:
        img = data[:3]
    else:
        img = np.repeat(data[:1], 3, axis=0)
    if img.dtype != np.uint8:  # e.g. uint16 panchromatic: stretch 1-99 % to 0-255
        valid = img[img > 0]
        lo, hi = (np.percentile(valid, [1, 99]) if valid.size else (0.0, 1.0))
        img = np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255)
        img = img.astype(np.uint8)
    truth = json.loads(tif.with_name(tif.stem + "_truth.json").read_text())
    gj = json.loads(tif.with_name(tif.stem + "_buildings.geojson").read_text())
    polys = []
    for feat in gj.get("features", []):
        geom = feat.get("geometry")
        if geom:
            g = shape(geom)
            if not g.is_valid:
                g = g.buffer(0)
            if not g.is_empty:
                polys.append(g)
    return LabeledTile(
        name=tif.stem, place=place_of(tif.stem), path=tif, gsd_m=float(truth["gsd_m"]),
        image=np.ascontiguousarray(img.transpose(1, 2, 0)), footprints=polys,
        transform=transform, crs=crs, truth=truth,
    )


def load_labeled_tiles(
    root: Path,
    places: Iterable[str] | None = None,
    exclude_places: Iterable[str] = (),
    rgb_only: bool = True,
    limit: int | None = None,
) -> list[LabeledTile]:
    """The labelled tiles under ``root`` (``../shared/data/labeled`` or one dataset folder),
    sorted by name, keeping ``places`` (all when None) minus ``exclude_places``; single-band
    tiles only when ``rgb_only`` is False; at most ``limit`` tiles (spread over places).

    Raises InputError when ``root`` is not a folder or holds no labelled tile."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder of labelled tiles (e.g. ../shared/data/labeled)")
    tifs = _tile_images(root)
    if not tifs:
        raise InputError(
            f"{root}: no labelled tiles (<name>.tif with <name>_buildings.geojson and "
            "<name>_truth.json)"
        )
    keep = set(places) if places is not None else None
    drop = set(exclude_places)
    selected = [
        t for t in tifs
        if (keep is None or place_of(t.stem) in keep) and place_of(t.stem) not in drop
    ]
    if limit is not None and len(selected) > limit:
        # round-robin over places so a small limit still sees every place
        by_place: dict[str, list[Path]] = {}
        for t in selected:
            by_place.setdefault(place_of(t.stem), []).append(t)
        order: list[Path] = []
        queues = [list(v) for _, v in sorted(by_place.items())]
        while len(order) < limit and any(queues):
            for q in queues:
                if q and len(order) < limit:
                    order.append(q.pop(0))
        selected = sorted(order)
    tiles = [t for t in (_read_tile(p, rgb_only) for p in selected) if t is not None]
    if not tiles:
        raise InputError(f"{root}: no labelled tiles match the places / exclusions given")
    return tiles


def model_grid(tile: LabeledTile, gsd_m: float) -> tuple[int, int, Any]:
    """(height, width, transform) of the grid covering the tile's bounds at ``gsd_m``
    ground metres per pixel."""
    from rasterio.transform import from_bounds

    h0, w0 = tile.image.shape[:2]
    h = max(1, round(h0 * tile.gsd_m / gsd_m))
    w = max(1, round(w0 * tile.gsd_m / gsd_m))
    return h, w, from_bounds(*tile.bounds, w, h)


def footprint_ids(tile: LabeledTile, gsd_m: float) -> np.ndarray:
    """(H, W) int32 raster at ``gsd_m``: footprint i is i + 1 (pixel centre inside), 0 none."""
    from rasterio.features import rasterize

    h, w, transform = model_grid(tile, gsd_m)
    if not tile.footprints:
        return np.zeros((h, w), np.int32)
    return rasterize(
        [(g, i + 1) for i, g in enumerate(tile.footprints)], out_shape=(h, w),
        transform=transform, fill=0, dtype="int32",
    )


def classes_from_ids(ids: np.ndarray, ring_px: int = RING_PX) -> np.ndarray:
    """(H, W) uint8 classes from a footprint-id raster: background, interior, or boundary
    (building pixels with another id, background included, within ``ring_px``; the tile's
    own edge is not a boundary)."""
    out = np.full(ids.shape, BACKGROUND, np.uint8)
    building = ids > 0
    if not building.any():
        return out
    r = int(ring_px)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (yy**2 + xx**2) <= r * r + r  # a rounded square (r=2: 5x5 minus corners)
    hi = ndimage.maximum_filter(ids, footprint=disk, mode="nearest")
    lo = ndimage.minimum_filter(ids, footprint=disk, mode="nearest")
    out[building] = INTERIOR
    out[building & (hi != lo)] = BOUNDARY
    return out


def resample_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 or float -> (h, w, 3) float32 in [0, 1] at ``size``: area-averaged
    when shrinking (antialiased bilinear), bilinear when enlarging."""
    arr = np.asarray(image)
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()[None]
    if arr.dtype == np.uint8:
        x = x / 255.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp(0, 1).permute(1, 2, 0).numpy()


@dataclass
class ModelScaleTile:
    """A tile at the model's ground resolution: image (3, H, W) float32 in [0, 1], classes
    (H, W) int64, footprint ids (H, W) int32 and the ground area of one pixel (m2)."""

    name: str
    place: str
    image: torch.Tensor
    target: torch.Tensor
    ids: np.ndarray
    pixel_area_m2: float


def to_model_scale(tile: LabeledTile, gsd_m: float, ring_px: int = RING_PX) -> ModelScaleTile:
    """The tile's image and targets on the grid of its bounds at ``gsd_m``."""
    h, w, _ = model_grid(tile, gsd_m)
    img = resample_image(tile.image, (h, w))
    ids = footprint_ids(tile, gsd_m)
    area = float(tile.truth.get("tile_area_m2") or (tile.gsd_m**2 * tile.image.shape[0]
                                                    * tile.image.shape[1]))
    return ModelScaleTile(
        name=tile.name, place=tile.place,
        image=torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
        target=torch.from_numpy(classes_from_ids(ids, ring_px).astype(np.int64)),
        ids=ids, pixel_area_m2=area / (h * w),
    )


def degrade(x: torch.Tensor, model_gsd_m: float, ground_m: float) -> torch.Tensor:
    """(C, H, W) image at ``model_gsd_m`` made to look like imagery of ground resolution
    ``ground_m``: box-averaged down to that resolution, then bilinearly resampled back."""
    if ground_m <= model_gsd_m * 1.02:
        return x
    h, w = x.shape[-2:]
    f = model_gsd_m / ground_m
    small = F.interpolate(x[None], size=(max(1, round(h * f)), max(1, round(w * f))),
                          mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]


def sample_batch(
    tiles: list[ModelScaleTile],
    rng: np.random.Generator,
    batch: int,
    crop_px: int,
    scales_m: tuple[float, ...] = DEFAULT_SCALES_M,
    model_gsd_m: float = 0.3,
    zoom: tuple[float, float] = (0.85, 1.18),
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch ``(images (B, 3, C, C) in [0, 1], targets (B, C, C) int64)``, drawn
    with ``rng`` only (reproducible): random tile, zoom and crop, dihedral flip/rotation,
    degradation to a ground resolution around a random one of ``scales_m`` (x0.85-1.2),
    brightness/contrast/colour/gamma jitter and occasional greyscale."""
    xs, ys = [], []
    for _ in range(batch):
        t = tiles[int(rng.integers(len(tiles)))]
        H, W = t.target.shape
        z = float(np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1]))))
        src = min(H, W, max(8, round(crop_px * z)))
        y0 = int(rng.integers(0, H - src + 1))
        x0 = int(rng.integers(0, W - src + 1))
        img = t.image[:, y0:y0 + src, x0:x0 + src]
        tgt = t.target[y0:y0 + src, x0:x0 + src]
        if src != crop_px:
            img = F.interpolate(img[None], size=(crop_px, crop_px), mode="bilinear",
                                antialias=src > crop_px, align_corners=False)[0]
            tgt = F.interpolate(tgt[None, None].float(), size=(crop_px, crop_px),
                                mode="nearest")[0, 0].long()
        k = int(rng.integers(4))
        if k:
            img, tgt = torch.rot90(img, k, (1, 2)), torch.rot90(tgt, k, (0, 1))
        if rng.random() < 0.5:
            img, tgt = img.flip(2), tgt.flip(1)
        g = float(scales_m[int(rng.integers(len(scales_m)))]) * float(rng.uniform(0.85, 1.2))
        img = degrade(img, model_gsd_m, g)
        # colour: per-channel gain, contrast about the mean, brightness, gamma, greyscale
        gain = torch.from_numpy(rng.uniform(0.9, 1.1, 3).astype(np.float32)).view(3, 1, 1)
        contrast = float(rng.uniform(0.75, 1.3))
        bright = float(rng.uniform(-0.1, 0.1))
        gamma = float(np.exp(rng.uniform(-0.25, 0.25)))
        grey = rng.random() < 0.12
        mean = img.mean()
        img = ((img * gain - mean) * contrast + mean + bright).clamp(0, 1) ** gamma
        if grey:
            img = img.mean(0, keepdim=True).expand(3, -1, -1)
        xs.append(img.contiguous())
        ys.append(tgt.contiguous())
    return torch.stack(xs), torch.stack(ys)
