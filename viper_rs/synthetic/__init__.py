"""Seeded synthetic aerial scenes with exact ground truth, and RSVQA-HR style questions.

``make_scene(seed)`` draws a 4-band (R, G, B, NIR) image in a projected CRS (UTM 18N,
true metres) with roads, residential and commercial buildings, water areas, woods, grass
areas and parking lots. Every object has a polygon in the image CRS, its rasterised mask
and an instance id; objects never touch (at least three empty pixels between any two,
so 8-connected components of the label image are exactly the objects).

Each object's size class (``tools.measures.size_class``) and shape class
(``tools.measures.shape_class``) are checked on its rasterised mask while the scene is
built; objects whose area falls within 15 % of a size threshold, or whose shape class is
not the intended one, are redrawn, so the classes are unambiguous.

``make_questions(scene)`` writes questions with the RSVQA-HR templates and grammar and
answers them with the tools' semantics: presence = at least one object, count = number
of objects, comparison = counts compared, area = union of the rasterised masks in true
ground m2. Relations reuse ``tools.spatial`` (centroids for left/right/top/bottom, mask
distance within ``settings.next_to_m`` for "next to"); questions whose relation is within
one pixel of a tie are not asked.

The pixels are painted by :mod:`viper_rs.synthetic.paint` (surfaces, cast shadows, camera
blur and noise, as a ~1 m camera records them); the class names are in
:mod:`viper_rs.synthetic.classes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

from viper_rs.core import vocabulary
from viper_rs.core.config import Settings
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.core.vocabulary import SHAPE_WORDS, SIZE_WORDS
from viper_rs.synthetic.classes import (
    BUILDING_CLASSES,
    COMMERCIAL,
    GRASS,
    PARKING,
    RESIDENTIAL,
    ROAD,
    TREE,
    WATER,
)
from viper_rs.synthetic.classes import (
    CLASSES as CLASSES,
)
from viper_rs.synthetic.paint import paint
from viper_rs.tools.measures import shape_class, size_class
from viper_rs.tools.spatial import gap_px, is_above, is_left_of

#: RSVQA-HR concept words used in questions -> the scene classes they cover.
QUESTION_CONCEPTS: dict[str, tuple[str, ...]] = {
    "building": BUILDING_CLASSES,
    "residential building": (RESIDENTIAL,),
    "commercial building": (COMMERCIAL,),
    "road": (ROAD,),
    "water area": (WATER,),
    "wood": (TREE,),
    "forest": (TREE,),
    "grass area": (GRASS,),
    "parking": (PARKING,),
}
_CONCEPT_WEIGHTS = {
    "building": 0.22, "residential building": 0.15, "commercial building": 0.1, "road": 0.12,
    "water area": 0.1, "wood": 0.07, "forest": 0.03, "grass area": 0.09, "parking": 0.12,
}
#: Relation phrases (RSVQA-HR wording) -> tools.spatial relation names.
RELATIONS: dict[str, str] = {phrases[0]: tool for tool, phrases in vocabulary.RELATIONS.items()}
QuestionType = Literal["presence", "count", "comp", "area"]
QUESTION_TYPES: tuple[str, ...] = ("presence", "count", "comp", "area")
_TYPE_SHARES = {"presence": 0.25, "count": 0.3, "comp": 0.25, "area": 0.2}

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


@dataclass
class SceneQuestion:
    """A question with its exact answer.

    ``answer`` uses the RSVQA-HR answer space ("yes"/"no", an integer string, or an area
    like ``"1234m2"`` in true ground m2, rounded); ``value`` is the exact value (area
    unrounded). ``spec`` is the structured form the question was written from.
    """

    question: str
    type: QuestionType
    answer: str
    value: bool | int | float
    spec: dict[str, Any] = field(default_factory=dict)


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


def _choice(rng: np.random.Generator, items: list[Any] | tuple[Any, ...], p: list[float]) -> Any:
    return items[int(rng.choice(len(items), p=np.asarray(p) / np.sum(p)))]


def _object_plan(rng: np.random.Generator, factor: float) -> list[tuple[_Spec, float, float]]:
    """(spec, near-road chance, large-area cap) for every object to draw, biggest first."""

    def count(lo: int, hi: int) -> int:
        return int(rng.integers(round(lo * factor), max(round(hi * factor), round(lo * factor)) + 1))

    plan: list[tuple[_Spec, float, float]] = []
    for _ in range(count(0, 2)):
        irregular = rng.random() < 0.45
        size = "large" if irregular else _choice(rng, ["medium", "large"], [0.5, 0.5])
        plan.append((_Spec(WATER, size, None if irregular else "circular"), 0.1, 2.5))
    for _ in range(count(0, 3)):
        plan.append((_Spec(TREE, _choice(rng, ["medium", "large"], [0.3, 0.7]), None), 0.2, 5.0))
    for _ in range(count(0, 3)):
        shape = _choice(rng, ["rectangular", "square", None], [0.45, 0.2, 0.35])
        plan.append((_Spec(GRASS, _choice(rng, ["medium", "large"], [0.4, 0.6]), shape), 0.3, 3.0))
    for _ in range(count(0, 3)):
        shape = _choice(rng, ["rectangular", "square"], [0.7, 0.3])
        plan.append((_Spec(PARKING, _choice(rng, ["medium", "large"], [0.4, 0.6]), shape), 0.6, 3.0))
    for _ in range(count(0, 4)):
        shape = _choice(rng, ["rectangular", "square", "circular"], [0.55, 0.25, 0.2])
        plan.append((_Spec(COMMERCIAL, _choice(rng, ["medium", "large"], [0.4, 0.6]), shape), 0.6, 3.5))
    for _ in range(count(3, 12)):
        size = _choice(rng, ["small", "medium", "large"], [0.4, 0.45, 0.15])
        shape = _choice(rng, ["rectangular", "square", "circular"], [0.6, 0.35, 0.05])
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


# ---------------------------------------------------------------------------- questions
class _Truth:
    """Ground-truth selections with the tools' semantics for one scene and settings."""

    def __init__(self, scene: Scene, settings: Settings) -> None:
        self.scene = scene
        self.image = scene.image
        self.settings = settings
        self.regions = {o.id: o.region(scene.image) for o in scene.objects}
        self.sizes = {
            o.id: size_class(self.regions[o.id].area_m2, settings.small_max_m2, settings.large_min_m2)
            for o in scene.objects
        }
        self.shapes = {o.id: shape_class(self.regions[o.id]) for o in scene.objects}
        gsd = scene.image.ground_sampling_distance or 1.0
        self.limit_px = settings.next_to_m / gsd

    def select(self, concept: str, modifier: str | None) -> list[SceneObject]:
        classes = QUESTION_CONCEPTS[concept]
        out = [o for o in self.scene.objects if o.cls in classes]
        if modifier in SIZE_WORDS:
            out = [o for o in out if self.sizes[o.id] == modifier]
        elif modifier in SHAPE_WORDS:
            out = [o for o in out if self.shapes[o.id] == modifier]
        return out

    def relate(self, first: list[SceneObject], relation: str, second: list[SceneObject]
               ) -> list[SceneObject] | None:
        """Objects of ``first`` in ``relation`` to some object of ``second``; None on a near-tie."""
        out = []
        for a in first:
            ra = self.regions[a.id]
            hit = False
            for b in second:
                if a.id == b.id:
                    continue
                rb = self.regions[b.id]
                if relation == "next_to":
                    g = gap_px(ra, rb, self.limit_px)
                    if math.isfinite(g) and abs(g - self.limit_px) <= 1.0:
                        return None
                    hit |= g <= self.limit_px
                    continue
                axis = 0 if relation in ("left_of", "right_of") else 1
                if abs(ra.centroid[axis] - rb.centroid[axis]) <= 1.0:
                    return None
                if relation == "left_of":
                    hit |= is_left_of(ra, rb)
                elif relation == "right_of":
                    hit |= is_left_of(rb, ra)
                elif relation == "above":
                    hit |= is_above(ra, rb)
                else:
                    hit |= is_above(rb, ra)
            if hit:
                out.append(a)
        return out

    def area(self, objects: list[SceneObject]) -> float:
        if not objects:
            return 0.0
        union = np.zeros(self.image.shape, dtype=bool)
        for o in objects:
            union |= o.mask
        return float(self.image.mask_area(union))


def _phrase(concept: str, modifier: str | None) -> str:
    return f"{modifier} {concept}" if modifier else concept


def _plural(concept: str, modifier: str | None) -> str:
    # RSVQA-HR pluralises by appending "s" ("place of worships", "cemeterys").
    return _phrase(concept, modifier) + "s"


class _Writer:
    """Draws random question specs and renders them with the RSVQA-HR templates."""

    def __init__(self, rng: np.random.Generator, truth: _Truth) -> None:
        self.rng = rng
        self.truth = truth

    def pick_concept(self, exclude: tuple[str, ...] = ()) -> str:
        names = [c for c in _CONCEPT_WEIGHTS if not set(QUESTION_CONCEPTS[c]) & set(exclude)]
        return _choice(self.rng, names, [_CONCEPT_WEIGHTS[c] for c in names])

    def pick_modifier(self, concept: str, p: float) -> str | None:
        rng = self.rng
        if rng.random() >= p:
            return None
        objs = self.truth.select(concept, None)
        if objs and rng.random() < 0.6:
            present = sorted({self.truth.sizes[o.id] for o in objs}
                             | {s for o in objs if (s := self.truth.shapes[o.id])})
            return present[int(rng.integers(len(present)))]
        words = SIZE_WORDS + SHAPE_WORDS
        return words[int(rng.integers(len(words)))]

    def pick_object(self, p_mod: float = 0.35, p_rel: float = 0.35) -> dict[str, Any]:
        concept = self.pick_concept()
        obj: dict[str, Any] = {"concept": concept, "modifier": self.pick_modifier(concept, p_mod)}
        if self.rng.random() < p_rel:
            self.add_relation(obj)
        return obj

    def add_relation(self, obj: dict[str, Any]) -> None:
        """Attach a relation to a second object whose classes differ from the first's."""
        other = self.pick_concept(exclude=QUESTION_CONCEPTS[obj["concept"]])
        obj["relation"] = list(RELATIONS)[int(self.rng.integers(len(RELATIONS)))]
        obj["other"] = other
        obj["other_modifier"] = self.pick_modifier(other, 0.2)
        obj["det"] = "a" if self.rng.random() < 0.65 else "the"

    def objects_for(self, obj: dict[str, Any]) -> list[SceneObject] | None:
        first = self.truth.select(obj["concept"], obj["modifier"])
        if "relation" not in obj:
            return first
        second = self.truth.select(obj["other"], obj["other_modifier"])
        return self.truth.relate(first, RELATIONS[obj["relation"]], second)

    @staticmethod
    def relation_text(obj: dict[str, Any]) -> str:
        if "relation" not in obj:
            return ""
        # RSVQA-HR leaves an empty slot after the determiner: "next to a  road".
        return f" {obj['relation']} {obj['det']}  {_phrase(obj['other'], obj['other_modifier'])}"

    def draw(self, qtype: str) -> SceneQuestion | None:
        rng = self.rng
        img = " in the image" if rng.random() < 0.15 else ""
        if qtype == "comp":
            a = self.pick_object(p_rel=0.0)
            b = self.pick_object(p_rel=0.0)
            if _phrase(a["concept"], a["modifier"]) == _phrase(b["concept"], b["modifier"]):
                return None
            if rng.random() < 0.35:  # one relation, on either side
                self.add_relation(a if rng.random() < 0.5 else b)
            sa, sb = self.objects_for(a), self.objects_for(b)
            if sa is None or sb is None:
                return None
            op = _choice(rng, ["more", "less", "equal"], [0.35, 0.35, 0.3])
            xa = _plural(a["concept"], a["modifier"]) + self.relation_text(a)
            xb = _plural(b["concept"], b["modifier"]) + self.relation_text(b)
            if op == "equal":
                text = f"Is the number of {xa} equal to the number of {xb}{img}?"
                value = len(sa) == len(sb)
            else:
                text = f"Are there {op} {xa} than {xb}{img}?"
                value = len(sa) > len(sb) if op == "more" else len(sa) < len(sb)
            spec = {"type": qtype, "first": a, "second": b, "op": op,
                    "counts": [len(sa), len(sb)]}
            return SceneQuestion(text, "comp", "yes" if value else "no", bool(value), spec)

        obj = self.pick_object()
        sel = self.objects_for(obj)
        if sel is None:
            return None
        rel = self.relation_text(obj)
        spec = {"type": qtype, "first": obj, "ids": [o.id for o in sel]}
        if qtype == "presence":
            x = _phrase(obj["concept"], obj["modifier"])
            if rng.random() < 0.5:
                text = f"Is there a {x}{rel}{img}?"
            else:
                text = f"Is a {x}{rel} present{img}?"
            value = len(sel) > 0
            return SceneQuestion(text, "presence", "yes" if value else "no", value, spec)
        xs = _plural(obj["concept"], obj["modifier"]) + rel
        if qtype == "count":
            form = int(rng.integers(3))
            if form == 0:
                text = f"How many {xs} are there{img}?"
            elif form == 1:
                text = f"What is the number of {xs}{img}?"
            else:
                text = f"What is the amount of {xs}{img}?"
            return SceneQuestion(text, "count", str(len(sel)), len(sel), spec)
        value = self.truth.area(sel)
        text = f"What is the area covered by {xs}{img}?"
        return SceneQuestion(text, "area", f"{int(round(value))}m2", value, spec)


def answer_matches(value: Any, q: SceneQuestion, area_tolerance: float = 0.1) -> bool:
    """Whether an answer's ``value`` is right for ``q``: yes/no and counts exactly, areas
    within ``area_tolerance`` of the true area (or 1 m2 for tiny areas)."""
    if value is None:
        return False
    if isinstance(q.value, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return abs(float(value) - q.value) <= max(1.0, area_tolerance * abs(q.value))
    return bool(value == q.value) and type(value) is type(q.value)


def _bucket(q: SceneQuestion) -> str:
    """Answer bucket used to balance the answers of each question type."""
    if q.type in ("presence", "comp"):
        return q.answer
    return "zero" if not q.value else "nonzero"


#: Wanted share of the first bucket per type (the rest go to the other bucket).
_BUCKET_SHARE = {"presence": ("yes", 0.55), "comp": ("yes", 0.45), "count": ("zero", 0.25),
                 "area": ("zero", 0.2)}


def make_questions(scene: Scene, n: int = 60, seed: int = 0,
                   settings: Settings | None = None) -> list[SceneQuestion]:
    """``n`` distinct RSVQA-HR style questions on ``scene`` with exact answers.

    Types are mixed about 25 % presence, 30 % count, 25 % comparison, 20 % area; about a
    third carry a size or shape word and a third a relation; presence/comparison answers
    are balanced between yes and no and some counts and areas are zero. Fewer than ``n``
    questions are returned only if the scene cannot support that many distinct ones.
    """
    settings = settings or scene.settings
    rng = np.random.default_rng([int(seed), int(scene.seed), 5150])
    writer = _Writer(rng, _Truth(scene, settings))
    quota = {t: int(round(n * s)) for t, s in _TYPE_SHARES.items()}
    quota["count"] += n - sum(quota.values())
    slots = [t for t in QUESTION_TYPES for _ in range(quota[t])]
    slots = [slots[i] for i in rng.permutation(len(slots))]
    seen: set[str] = set()
    made: dict[str, list[str]] = {t: [] for t in QUESTION_TYPES}
    out: list[SceneQuestion] = []
    for qtype in slots:
        first_bucket, share = _BUCKET_SHARE[qtype]
        done = made[qtype]
        want_first = done.count(first_bucket) < share * (len(done) + 1)
        fallback: SceneQuestion | None = None
        chosen: SceneQuestion | None = None
        for _ in range(150):
            q = writer.draw(qtype)
            if q is None or " ".join(q.question.split()) in seen:
                continue
            if (_bucket(q) == first_bucket) == want_first:
                chosen = q
                break
            fallback = fallback or q
        chosen = chosen or fallback
        if chosen is None:
            continue
        seen.add(" ".join(chosen.question.split()))
        done.append(_bucket(chosen))
        out.append(chosen)
    return out
