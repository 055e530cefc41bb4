"""Seeded synthetic scenes with exact ground truth: the scene types and the builder.

``make_scene(seed)`` draws a 4-band (R, G, B, NIR) image in a projected CRS (UTM 18N,
true metres) with roads, residential and commercial buildings, water areas, woods, grass
areas and parking lots; each object's size and shape classes are checked on its
rasterised mask while the scene is built (see the package docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

from viper_rs.core.config import Settings
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.synthetic.classes import COMMERCIAL, GRASS, PARKING, RESIDENTIAL, ROAD, TREE, WATER
from viper_rs.synthetic.paint import paint
from viper_rs.tools.measures import shape_class, size_class

__all__ = ["GAP_PX", "SIZE_MARGIN", "Scene", "SceneObject", "make_scene", "weighted_choice"]

#: Clear margin around size thresholds (fraction of the threshold).
SIZE_MARGIN = 0.15
#: Empty pixels kept between any two objects (Chebyshev distance >= GAP_PX + 1).
GAP_PX = 3
_EDGE_PX = 3
_BASE_ORIGIN = (583_000.0, 4_507_000.0)  # UTM 18N, around New York
_CRS = "EPSG:32618"


# ---------------------------------------------------------------------------- types
@dataclass
class SceneObject:
    """One ground-truth object: class, polygon (image CRS), shape/size class and mask.

    ``shape`` and ``size`` are the classes the tools compute on the rasterised ``mask``
    (``tools.measures.shape_class`` / ``size_class`` with the scene's settings);
    ``intended_shape`` is the shape the generator drew. ``area_m2`` is the mask's true
    ground area (pixels x pixel area), ``polygon_area_m2`` the polygon's.
    """

    id: int
    cls: str
    polygon: BaseGeometry
    shape: str | None
    mask: np.ndarray
    size: str = ""
    area_m2: float = 0.0
    polygon_area_m2: float = 0.0
    intended_shape: str | None = None

    def region(self, image: GeoImage) -> Region:
        """The object as a Region on ``image`` (what a perfect detector would return)."""
        return Region.from_mask(
            self.mask, label=self.cls, query=self.cls, score=1.0,
            area_m2=image.mask_area(self.mask), area_unit=image.area_unit,
            polygon=self.polygon, id=self.id, detector="ground truth",
        )


@dataclass
class Scene:
    """A synthetic image with its exact ground truth.

    ``instances`` holds the object id of every pixel (0 = background); ids are 1-based
    and equal ``objects[i].id``.
    """

    image: GeoImage
    objects: list[SceneObject]
    instances: np.ndarray
    seed: int
    settings: Settings = field(default_factory=Settings)

    def objects_of(self, *classes: str) -> list[SceneObject]:
        """Objects whose class is one of ``classes``."""
        return [o for o in self.objects if o.cls in classes]

    def class_mask(self, *classes: str) -> np.ndarray:
        """Union of the masks of all objects of ``classes``."""
        ids = [o.id for o in self.objects_of(*classes)]
        return np.isin(self.instances, ids) if ids else np.zeros(self.instances.shape, bool)

    def to_geojson(self) -> dict[str, Any]:
        """GeoJSON FeatureCollection of the objects (coordinates in the image CRS)."""
        features = [
            {
                "type": "Feature",
                "id": o.id,
                "geometry": mapping(o.polygon),
                "properties": {
                    "id": o.id, "class": o.cls, "shape": o.shape, "size": o.size,
                    "area_m2": round(o.area_m2, 6), "polygon_area_m2": round(o.polygon_area_m2, 6),
                },
            }
            for o in self.objects
        ]
        return {
            "type": "FeatureCollection",
            "crs": {"type": "name", "properties": {"name": str(self.image.crs)}},
            "properties": {
                "seed": self.seed, "width": self.image.width, "height": self.image.height,
                "transform": list(self.image.transform)[:6],
            },
            "features": features,
        }



# ---------------------------------------------------------------------------- scenes
@dataclass
class _Spec:
    cls: str
    size: str | None  # intended size class (None: whatever comes out, with margins)
    shape: str | None  # intended shape class


class _Builder:
    """Places objects one by one on the label image, checking classes and gaps."""

    def __init__(self, rng: np.random.Generator, size: int, gsd: float, transform: Affine,
                 settings: Settings) -> None:
        self.rng = rng
        self.n = size
        self.gsd = gsd
        self.transform = transform
        self.settings = settings
        self.instances = np.zeros((size, size), dtype=np.int32)
        self.objects: list[SceneObject] = []
        self.road_lines: list[tuple[LineString, float]] = []
        self.image_stub = GeoImage.from_array(
            np.zeros((1, size, size), np.uint8), "R", crs=_CRS, transform=transform
        )
        self._matrix = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]

    # ---------------------------------------------------------------- geometry helpers
    def m(self, metres: float) -> float:
        """Metres -> pixels."""
        return metres / self.gsd

    def to_crs(self, geom_px: BaseGeometry) -> BaseGeometry:
        return affinity.affine_transform(geom_px, self._matrix)

    def rasterise(self, geom_px: BaseGeometry) -> tuple[np.ndarray, int, int] | None:
        """Mask crop (pixel-centre rule) of a pixel-space polygon, via its CRS polygon."""
        minx, miny, maxx, maxy = geom_px.bounds
        c0, r0 = max(int(math.floor(minx)) - 1, 0), max(int(math.floor(miny)) - 1, 0)
        c1, r1 = min(int(math.ceil(maxx)) + 1, self.n), min(int(math.ceil(maxy)) + 1, self.n)
        if c1 <= c0 or r1 <= r0:
            return None
        crop = rasterize(
            [(self.to_crs(geom_px), 1)], out_shape=(r1 - r0, c1 - c0),
            transform=self.transform @ Affine.translation(c0, r0), fill=0, dtype="uint8",
        ).astype(bool)
        return crop, r0, c0

    def size_ok(self, area_m2: float, wanted: str | None) -> bool:
        s, lg = self.settings.small_max_m2, self.settings.large_min_m2
        k = SIZE_MARGIN
        if abs(area_m2 - s) <= k * s or abs(area_m2 - lg) <= k * lg:
            return False
        return wanted is None or size_class(area_m2, s, lg) == wanted

    def clear(self, crop: np.ndarray, r0: int, c0: int, is_road: bool) -> bool:
        """No other object within GAP_PX pixels, and (non-roads) away from the edges."""
        h, w = crop.shape
        if not is_road and (r0 < _EDGE_PX or c0 < _EDGE_PX or r0 + h > self.n - _EDGE_PX
                            or c0 + w > self.n - _EDGE_PX):
            return False
        g = GAP_PX
        wr0, wc0 = max(r0 - g, 0), max(c0 - g, 0)
        wr1, wc1 = min(r0 + h + g, self.n), min(c0 + w + g, self.n)
        win = np.zeros((wr1 - wr0, wc1 - wc0), dtype=bool)
        win[r0 - wr0 : r0 - wr0 + h, c0 - wc0 : c0 - wc0 + w] = crop
        grown = ndimage.binary_dilation(win, structure=np.ones((2 * g + 1, 2 * g + 1), bool))
        return not (self.instances[wr0:wr1, wc0:wc1][grown] > 0).any()

    def try_add(self, geom_px: BaseGeometry, spec: _Spec, is_road: bool = False) -> bool:
        """Rasterise, check size/shape/gap, and add the object if everything holds."""
        if geom_px.is_empty or not geom_px.is_valid:
            return False
        out = self.rasterise(geom_px)
        if out is None:
            return False
        crop, r0, c0 = out
        if crop.sum() < 12:
            return False
        area = float(crop.sum(axis=1) @ self.image_stub.row_pixel_area[r0 : r0 + crop.shape[0]])
        if not self.size_ok(area, spec.size):
            return False
        if not self.clear(crop, r0, c0, is_road):
            return False
        region = Region(crop=crop, origin=(r0, c0), image_shape=(self.n, self.n), label=spec.cls,
                        query=spec.cls, score=1.0, area_m2=area)
        got = shape_class(region)
        if got != spec.shape:
            return False
        mask = np.zeros((self.n, self.n), dtype=bool)
        mask[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]] = crop
        oid = len(self.objects) + 1
        self.instances[mask] = oid
        poly = self.to_crs(geom_px)
        self.objects.append(SceneObject(
            id=oid, cls=spec.cls, polygon=poly, shape=got, mask=mask,
            size=size_class(area, self.settings.small_max_m2, self.settings.large_min_m2),
            area_m2=area, polygon_area_m2=float(poly.area), intended_shape=spec.shape,
        ))
        return True

    # ---------------------------------------------------------------- roads
    def add_roads(self) -> None:
        rng, n = self.rng, self.n
        layout = rng.choice(["none", "straight", "parallel", "L", "T"], p=[0.08, 0.27, 0.2, 0.25, 0.2])
        ext = 10.0  # lines run past the image edge and are clipped
        frame = box(0, 0, n, n)

        def width() -> float:
            return self.m(rng.uniform(6.0, 12.0))

        def pos() -> float:
            return rng.uniform(0.15, 0.85) * n

        lines: list[tuple[LineString, float]] = []
        transpose = bool(rng.random() < 0.5)
        if layout == "straight":
            p = pos()
            lines.append((LineString([(-ext, p), (n + ext, p)]), width()))
        elif layout == "parallel":
            p1 = rng.uniform(0.12, 0.4) * n
            p2 = p1 + rng.uniform(0.3, 0.45) * n
            lines += [(LineString([(-ext, p1), (n + ext, p1)]), width()),
                      (LineString([(-ext, p2), (n + ext, p2)]), width())]
        elif layout == "L":
            cx, cy = pos(), pos()
            ends = [(-ext, cy) if rng.random() < 0.5 else (n + ext, cy),
                    (cx, -ext) if rng.random() < 0.5 else (cx, n + ext)]
            lines.append((LineString([ends[0], (cx, cy), ends[1]]), width()))
        elif layout == "T":
            p, w1 = pos(), width()
            lines.append((LineString([(-ext, p), (n + ext, p)]), w1))
            # a dead-end side street that stops short of the main road
            gap = w1 / 2 + GAP_PX + 3
            start, stop = (-ext, p - gap) if rng.random() < 0.5 else (n + ext, p + gap)
            x = pos()
            lines.append((LineString([(x, start), (x, stop)]), width()))
        for line, w in lines:
            if transpose:  # vertical main roads half of the time
                line = affinity.affine_transform(line, [0, 1, 1, 0, 0, 0])
            geom = line.buffer(w / 2, cap_style="flat", join_style="mitre").intersection(frame)
            shape = "rectangular" if len(line.coords) == 2 else None
            if self.try_add(geom, _Spec(ROAD, None, shape), is_road=True):
                self.road_lines.append((line, w))

    # ---------------------------------------------------------------- area objects
    def area_for(self, size: str, top: float = 3.0) -> float:
        """A target area (m2) well inside one size class."""
        s, lg = self.settings.small_max_m2, self.settings.large_min_m2
        if size == "small":
            return self.rng.uniform(0.35 * s, 0.75 * s)
        if size == "medium":
            return self.rng.uniform(1.4 * s, 0.75 * lg)
        return self.rng.uniform(1.35 * lg, top * lg)

    def footprint(self, spec: _Spec, area_m2: float) -> BaseGeometry:
        """A polygon centred on (0, 0) in pixels with the wanted shape and area."""
        rng = self.rng
        a = area_m2 / self.gsd**2
        if spec.shape == "circular":
            return Point(0, 0).buffer(math.sqrt(a / math.pi), quad_segs=32)
        if spec.shape in ("square", "rectangular"):
            aspect = 1.0 if spec.shape == "square" else rng.uniform(1.7, 2.8)
            w = math.sqrt(a / aspect)
            geom = box(-w * aspect / 2, -w / 2, w * aspect / 2, w / 2)
            if rng.random() < 0.5:
                geom = affinity.rotate(geom, 90, origin=(0, 0))
            if w >= 10 and rng.random() < 0.4:
                geom = affinity.rotate(geom, rng.uniform(-40, 40), origin=(0, 0))
            return geom
        # irregular blob: a smoothed star-shaped polygon
        k = int(rng.integers(7, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = rng.uniform(0.55, 1.35, k)
        pts = [(r * math.cos(t), r * math.sin(t)) for r, t in zip(radii, angles, strict=True)]
        blob = Polygon(pts).buffer(0.25).buffer(-0.1)
        if blob.is_empty or blob.area <= 0:
            return blob
        blob = affinity.scale(blob, rng.uniform(0.7, 1.4), 1.0, origin=(0, 0))
        f = math.sqrt(a / blob.area)
        return affinity.scale(blob, f, f, origin=(0, 0))

    def place(self, spec: _Spec, near_road: float = 0.0, top: float = 3.0, tries: int = 60) -> bool:
        """Draw and place one object; ``near_road`` is the chance to line it up with a road."""
        rng, n = self.rng, self.n
        geom: BaseGeometry | None = None
        for attempt in range(tries):
            if geom is None or attempt % 6 == 0:
                area = self.area_for(spec.size, top) if spec.size else rng.uniform(150, 2500)
                geom = self.footprint(spec, area)
                if geom.is_empty:
                    geom = None
                    continue
            minx, miny, maxx, maxy = geom.bounds
            if self.road_lines and rng.random() < near_road:
                line, w = self.road_lines[int(rng.integers(len(self.road_lines)))]
                t = rng.uniform(0, line.length)
                p, q = line.interpolate(max(t - 1, 0)), line.interpolate(min(t + 1, line.length))
                dx, dy = q.x - p.x, q.y - p.y
                norm = math.hypot(dx, dy) or 1.0
                nx, ny = -dy / norm, dx / norm
                extent = abs(nx) * (maxx - minx) / 2 + abs(ny) * (maxy - miny) / 2
                off = w / 2 + extent + self.m(rng.uniform(3.0, 14.0)) + GAP_PX
                side = 1 if rng.random() < 0.5 else -1
                c = line.interpolate(t)
                cx, cy = c.x + side * nx * off, c.y + side * ny * off
            else:
                lo_x, hi_x = -minx + _EDGE_PX, n - maxx - _EDGE_PX
                lo_y, hi_y = -miny + _EDGE_PX, n - maxy - _EDGE_PX
                cx = rng.uniform(lo_x, hi_x) if hi_x >= lo_x else None
                cy = rng.uniform(lo_y, hi_y) if hi_y >= lo_y else None
                if cx is None or cy is None:  # the footprint does not fit inside the margins
                    return False
            if self.try_add(affinity.translate(geom, cx, cy), spec):
                return True
        return False


def weighted_choice(rng: np.random.Generator, items: list[Any] | tuple[Any, ...], p: list[float]) -> Any:
    """One of ``items`` drawn with weights ``p`` (normalised)."""
    return items[int(rng.choice(len(items), p=np.asarray(p) / np.sum(p)))]


def _object_plan(rng: np.random.Generator, factor: float) -> list[tuple[_Spec, float, float]]:
    """(spec, near-road chance, large-area cap) for every object to draw, biggest first."""

    def count(lo: int, hi: int) -> int:
        return int(rng.integers(round(lo * factor), max(round(hi * factor), round(lo * factor)) + 1))

    plan: list[tuple[_Spec, float, float]] = []
    for _ in range(count(0, 2)):
        irregular = rng.random() < 0.45
        size = "large" if irregular else weighted_choice(rng, ["medium", "large"], [0.5, 0.5])
        plan.append((_Spec(WATER, size, None if irregular else "circular"), 0.1, 2.5))
    for _ in range(count(0, 3)):
        plan.append((_Spec(TREE, weighted_choice(rng, ["medium", "large"], [0.3, 0.7]), None), 0.2, 5.0))
    for _ in range(count(0, 3)):
        shape = weighted_choice(rng, ["rectangular", "square", None], [0.45, 0.2, 0.35])
        plan.append((_Spec(GRASS, weighted_choice(rng, ["medium", "large"], [0.4, 0.6]), shape), 0.3, 3.0))
    for _ in range(count(0, 3)):
        shape = weighted_choice(rng, ["rectangular", "square"], [0.7, 0.3])
        plan.append((_Spec(PARKING, weighted_choice(rng, ["medium", "large"], [0.4, 0.6]), shape), 0.6, 3.0))
    for _ in range(count(0, 4)):
        shape = weighted_choice(rng, ["rectangular", "square", "circular"], [0.55, 0.25, 0.2])
        plan.append((_Spec(COMMERCIAL, weighted_choice(rng, ["medium", "large"], [0.4, 0.6]), shape), 0.6, 3.5))
    for _ in range(count(3, 12)):
        size = weighted_choice(rng, ["small", "medium", "large"], [0.4, 0.45, 0.15])
        shape = weighted_choice(rng, ["rectangular", "square", "circular"], [0.6, 0.35, 0.05])
        plan.append((_Spec(RESIDENTIAL, size, shape), 0.55, 2.0))
    order = {"large": 0, "medium": 1, "small": 2, None: 1}
    plan.sort(key=lambda t: order[t[0].size])
    return plan


def make_scene(seed: int = 0, size: int = 384, gsd: float = 1.0,
               settings: Settings | None = None) -> Scene:
    """A deterministic synthetic scene for ``seed``: ``size`` x ``size`` px at ``gsd`` m/px.

    Size classes are drawn with clear margins from ``settings``' thresholds (defaults:
    small < 100 m2, large >= 500 m2).
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 px, got {size}")
    if not 0.1 <= gsd <= 5.0:
        raise ValueError(f"gsd must be between 0.1 and 5 m, got {gsd}")
    settings = settings or Settings()
    rng = np.random.default_rng([int(seed), 20240611])
    x0 = _BASE_ORIGIN[0] + (seed % 97) * 600.0
    y0 = _BASE_ORIGIN[1] + (seed % 89) * 600.0
    transform = Affine(gsd, 0.0, x0, 0.0, -gsd, y0)
    b = _Builder(rng, size, gsd, transform, settings)
    b.add_roads()
    extent = (size * gsd / 384.0) ** 2  # ground area relative to a 384 m tile
    factor = min(max(extent, 0.5), 4.0)
    for spec, near, top in _object_plan(rng, factor):
        b.place(spec, near_road=near, top=max(1.6, top * min(1.0, math.sqrt(extent))))
    data = paint(rng, b.objects, size, gsd, transform, b.road_lines)
    image = GeoImage.from_array(data, "R,G,B,NIR", crs=_CRS, transform=transform,
                                name=f"synthetic-{seed}")
    return Scene(image=image, objects=b.objects, instances=b.instances, seed=int(seed),
                 settings=settings)
