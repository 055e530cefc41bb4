"""The pixels of a synthetic scene: R, G, B, NIR reflectance as an airborne camera of about
1 m would record it.

What is drawn, per surface (every length in metres, converted with the scene's GSD):

- **ground** (everything that is no object): dry, bare soil with field-sized, metre-sized
  and fine variation of brightness and hue; never vegetated, paved or wet.
- **residential buildings**: pitched roofs (gable or hip; a cone on round ones) whose
  facets are lit by their slope towards the sun, with a soft ridge and shingle grain.
- **commercial buildings**: flat, bright membrane roofs with a parapet rim and rooftop
  units (with their shadows); round ones are tanks with a lit dome.
- **trees**: canopy of sunlit and shaded crowns (strong texture, high NIR).
- **grass**: smooth lawn (weak texture), sometimes with faint mowing stripes.
- **water**: dark, smooth, with a lighter shallow rim.
- **roads**: asphalt with patches, sub-pixel lane markings (dashed centre line, edge lines).
- **parking lots**: asphalt with rows of stalls (sub-pixel stripes, 2.6 x 5 m) and parked
  cars of common colours, each with a short shadow.
- **cast shadows**: buildings and trees throw shadows (length = height x the sun's
  cotangent; one sun per scene) on whatever lies beside them.

The image is then blurred as a camera's optics do (0.5 px) and given sensor noise. Objects
keep their ground-truth masks exactly: nothing is painted outside an object's mask except
shadows and the blur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from viper_rs.synthetic.classes import COMMERCIAL, GRASS, PARKING, RESIDENTIAL, ROAD, TREE, WATER

Colour = tuple[float, float, float, float]

#: Mean reflectance (R, G, B, NIR, 0..1) of the bare ground between objects (dry soil:
#: red-brown, no excess green, NIR a little below red, so not vegetated).
GROUND: Colour = (0.44, 0.36, 0.28, 0.42)
#: Mean reflectance per surface; roofs and cars have several variants.
COLOURS: dict[str, list[Colour]] = {
    RESIDENTIAL: [(0.62, 0.36, 0.29, 0.40), (0.50, 0.50, 0.52, 0.45), (0.56, 0.56, 0.58, 0.50)],
    COMMERCIAL: [(0.84, 0.85, 0.87, 0.74), (0.76, 0.78, 0.80, 0.67)],
    ROAD: [(0.24, 0.24, 0.26, 0.21)],
    WATER: [(0.15, 0.22, 0.21, 0.065), (0.12, 0.19, 0.21, 0.05)],
    TREE: [(0.10, 0.21, 0.09, 0.56)],
    GRASS: [(0.29, 0.49, 0.20, 0.50)],
    PARKING: [(0.27, 0.27, 0.29, 0.24)],
}
#: Car paint (R, G, B, NIR) and how often each is seen.
CAR_COLOURS: list[tuple[Colour, float]] = [
    ((0.80, 0.80, 0.80, 0.72), 0.25), ((0.60, 0.61, 0.62, 0.55), 0.2),
    ((0.35, 0.35, 0.36, 0.32), 0.15), ((0.09, 0.09, 0.10, 0.09), 0.22),
    ((0.55, 0.12, 0.10, 0.30), 0.09), ((0.12, 0.18, 0.40, 0.20), 0.09),
]
#: Lane and stall markings (white paint).
PAINT: Colour = (0.82, 0.82, 0.80, 0.75)
#: Share of direct light left in a cast shadow (skylight).
SHADOW_LIGHT = 0.52
#: Object heights (m): (low, high) per class that casts a shadow.
HEIGHTS_M: dict[str, tuple[float, float]] = {
    RESIDENTIAL: (4.0, 7.0), COMMERCIAL: (6.0, 11.0), TREE: (7.0, 13.0),
}
#: Shadow length per metre of height (cotangent of the sun's elevation, 53-63 degrees).
SUN_COTANGENT = (0.5, 0.75)
#: Parking layout (m): stall width and depth, aisle width, car length and width, margin.
STALL_W, STALL_D, AISLE_W, CAR_L, CAR_W, LOT_MARGIN = 2.6, 5.0, 6.5, 4.5, 1.8, 0.8
#: Share of stalls taken by a car (drawn per lot).
OCCUPANCY = (0.05, 0.3)
#: Width (m) of painted lines (sub-pixel at 1 m: they only lighten a pixel a little).
LINE_W = 0.12
#: Standard deviation (px) of the camera's blur and of the sensor noise (reflectance).
BLUR_PX, NOISE = 0.5, 0.01


class Painted(Protocol):
    """What the painter reads of an object."""

    cls: str
    mask: np.ndarray
    polygon: BaseGeometry


def paint(
    rng: np.random.Generator, objects: Sequence[Painted], n: int, gsd: float,
    transform: Affine, road_lines: Sequence[tuple[LineString, float]] = (),
) -> np.ndarray:
    """(4, n, n) uint8 R, G, B, NIR of the scene: ground, every object's surface, cast
    shadows, camera blur and noise. ``road_lines`` are the roads' centre lines (pixel
    coordinates) and widths (px), in the order of the road objects."""
    p = _Painter(rng, n, gsd, transform)
    img = p.ground()
    lines = iter(road_lines)
    for o in objects:
        poly = p.to_px(o.polygon)
        if o.cls == RESIDENTIAL:
            p.pitched_roof(img, o.mask, poly)
        elif o.cls == COMMERCIAL:
            p.flat_roof(img, o.mask, poly)
        elif o.cls == TREE:
            p.canopy(img, o.mask)
        elif o.cls == GRASS:
            p.lawn(img, o.mask)
        elif o.cls == WATER:
            p.water(img, o.mask)
        elif o.cls == ROAD:
            p.road(img, o.mask, next(lines, None))
        elif o.cls == PARKING:
            p.parking(img, o.mask, poly)
    shade = np.zeros((n, n), np.float32)
    for o in objects:
        if o.cls in HEIGHTS_M:
            lo, hi = HEIGHTS_M[o.cls]
            p.cast_shadow(shade, p.to_px(o.polygon), o.mask, float(rng.uniform(lo, hi)))
    img *= (1.0 - (1.0 - SHADOW_LIGHT) * shade)[None]
    for k in range(4):
        img[k] = ndimage.gaussian_filter(img[k], BLUR_PX, mode="nearest")
    img += rng.normal(0.0, NOISE, img.shape).astype(np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (``sigma`` in pixels)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), max(sigma, 0.3))
    return (f - f.mean()) / (f.std() + 1e-9)


class _Painter:
    """One scene's painting state: random source, grid, and its sun."""

    def __init__(self, rng: np.random.Generator, n: int, gsd: float, transform: Affine) -> None:
        self.rng = rng
        self.n = n
        self.gsd = gsd
        self.inverse = ~transform
        # Shadows point away from the sun, northwards (up the image) give or take 60 deg.
        angle = math.radians(float(rng.uniform(-150.0, -30.0)))
        self.shadow_dir = (math.cos(angle), math.sin(angle))  # (dx, dy) in pixels
        self.to_sun = (-self.shadow_dir[0], -self.shadow_dir[1])
        self.cot = float(rng.uniform(*SUN_COTANGENT))

    # ------------------------------------------------------------------ helpers
    def px(self, metres: float) -> float:
        """Metres -> pixels."""
        return metres / self.gsd

    def to_px(self, geom: BaseGeometry) -> BaseGeometry:
        """A CRS geometry in pixel coordinates (x = column, y = row, pixel edges)."""
        a, b, c, d, e, f = self.inverse[:6]
        return affinity.affine_transform(geom, [a, b, d, e, c, f])

    def colour(self, cls: str) -> np.ndarray:
        """One variant of the class's colour, with a little brightness jitter."""
        variants = COLOURS[cls]
        base = np.asarray(variants[int(self.rng.integers(len(variants)))], np.float32)
        return base * np.float32(self.rng.uniform(0.94, 1.06))

    def texture(self, sigmas_m: Sequence[tuple[float, float]]) -> np.ndarray:
        """Sum of smooth noise fields: (scale m, amplitude) each; zero mean."""
        out = np.zeros((self.n, self.n), np.float32)
        for sigma_m, amp in sigmas_m:
            out += np.float32(amp) * smooth_noise(self.rng, (self.n, self.n), self.px(sigma_m))
        return out

    def coverage(self, geom: BaseGeometry, supersample: int = 4
                 ) -> tuple[np.ndarray, int, int] | None:
        """Share of each pixel covered by ``geom`` (pixel coordinates) on a crop: (cover,
        row0, col0), None when it misses the image."""
        minx, miny, maxx, maxy = geom.bounds
        c0, r0 = max(int(math.floor(minx)), 0), max(int(math.floor(miny)), 0)
        c1, r1 = min(int(math.ceil(maxx)), self.n), min(int(math.ceil(maxy)), self.n)
        if c1 <= c0 or r1 <= r0 or geom.is_empty:
            return None
        k = supersample
        fine = rasterize([(geom, 1)], out_shape=((r1 - r0) * k, (c1 - c0) * k),
                         transform=Affine(1 / k, 0, c0, 0, 1 / k, r0), fill=0, dtype="uint8")
        cover = fine.reshape(r1 - r0, k, c1 - c0, k).mean(axis=(1, 3), dtype=np.float32)
        return cover, r0, c0

    def blend(self, img: np.ndarray, geom: BaseGeometry, colour: np.ndarray,
              within: np.ndarray, supersample: int = 4, alpha: float = 1.0) -> None:
        """Paint ``geom`` (pixel coordinates) with ``colour`` by its pixel coverage, only
        on ``within`` pixels."""
        out = self.coverage(geom, supersample)
        if out is None:
            return
        cover, r0, c0 = out
        h, w = cover.shape
        a = cover * within[r0:r0 + h, c0:c0 + w] * np.float32(alpha)
        crop = img[:, r0:r0 + h, c0:c0 + w]
        crop += (colour[:, None, None] - crop) * a[None]

    def pixels(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, x, y) of a mask's pixels; x, y are their centres."""
        rr, cc = np.nonzero(mask)
        return rr, cc, cc + 0.5, rr + 0.5

    # ------------------------------------------------------------------ surfaces
    def ground(self) -> np.ndarray:
        """Bare soil everywhere: field-sized and metre-sized brightness, a hue drift."""
        n = self.n
        img = np.empty((4, n, n), np.float32)
        img[:] = np.asarray(GROUND, np.float32)[:, None, None]
        light = 1.0 + self.texture([(30.0, 0.07), (5.0, 0.03), (0.8, 0.02)])
        hue = self.texture([(20.0, 0.02)])  # redder / greyer soil (redness 0.17-0.29)
        img *= light[None]
        img[0] *= 1.0 + hue
        img[2] *= 1.0 - hue
        return img

    def pitched_roof(self, img: np.ndarray, mask: np.ndarray, poly: BaseGeometry) -> None:
        """Facets lit by their slope towards the sun, a soft ridge, shingle grain."""
        rng = self.rng
        base = self.colour(RESIDENTIAL)
        rr, cc, x, y = self.pixels(mask)
        edges = _edges(poly)
        if _is_rectangle(poly) and rng.random() < 0.6:  # gable: the two long sides only
            lengths = np.hypot(*(edges[:, 1] - edges[:, 0]).T)
            edges = edges[np.argsort(lengths)[-2:]]
        normal = _soft_normals(edges, x, y, softness=0.5)
        slope = np.float32(rng.uniform(0.10, 0.18))
        lit = 1.0 + slope * (normal @ np.asarray(self.to_sun, np.float32))
        grain = 1.0 + 0.025 * rng.standard_normal(rr.size).astype(np.float32)
        img[:, rr, cc] = base[:, None] * (lit * grain)[None]

    def flat_roof(self, img: np.ndarray, mask: np.ndarray, poly: BaseGeometry) -> None:
        """A bright flat roof: faint sheets, a parapet rim and rooftop units (round roofs:
        a tank's lit dome)."""
        rng = self.rng
        base = self.colour(COMMERCIAL)
        rr, cc, x, y = self.pixels(mask)
        if not _is_rectangle(poly) and poly.length > 0 and _roundness(poly) > 0.85:
            normal = _soft_normals(_edges(poly), x, y, softness=2.0)
            lit = 1.0 + 0.08 * (normal @ np.asarray(self.to_sun, np.float32))
            img[:, rr, cc] = base[:, None] * lit[None]
            return
        sheets = 1.0 + self.texture([(6.0, 0.015)])
        img[:, rr, cc] = base[:, None] * sheets[rr, cc][None]
        rim = mask & ~ndimage.binary_erosion(mask, iterations=max(1, round(self.px(0.6))))
        img[:, rim] *= np.float32(0.93)
        inner = poly.buffer(-self.px(2.0))
        if inner.is_empty:
            return
        angle = _orientation(poly)
        area_m2 = poly.area * self.gsd ** 2
        for _ in range(min(12, max(1, int(area_m2 / 250)))):
            length, width = self.px(rng.uniform(2.0, 4.0)), self.px(rng.uniform(1.5, 3.0))
            minx, miny, maxx, maxy = inner.bounds
            centre = (rng.uniform(minx, maxx), rng.uniform(miny, maxy))
            unit = _rect(centre, length, width, angle)
            if not inner.contains(unit):
                continue
            shadow = affinity.translate(unit, *(self.px(1.2) * v for v in self.shadow_dir))
            self.blend(img, shadow.difference(unit), base * np.float32(0.6), mask)
            grey = np.float32(rng.uniform(0.55, 0.8))
            self.blend(img, unit, np.asarray([grey, grey, grey * 1.02, grey * 0.9], np.float32),
                       mask)

    def canopy(self, img: np.ndarray, mask: np.ndarray) -> None:
        """Crowns lit on the sun's side and shaded on the other, with dark gaps."""
        base = self.colour(TREE)
        h = self.texture([(1.4, 1.0), (0.7, 0.5)])
        gy, gx = np.gradient(h)
        towards = gx * self.to_sun[0] + gy * self.to_sun[1]
        towards /= towards.std() + 1e-6
        lit = np.clip(1.0 + 0.18 * h + 0.22 * towards, 0.35, 1.8)
        img[:, mask] = base[:, None] * lit[mask][None]

    def lawn(self, img: np.ndarray, mask: np.ndarray) -> None:
        """Smooth grass: a slow change of colour, faint grain, sometimes mowing stripes."""
        rng = self.rng
        base = self.colour(GRASS)
        f = 1.0 + self.texture([(8.0, 0.03), (0.6, 0.012)])
        if rng.random() < 0.5:
            rr, cc = np.mgrid[0:self.n, 0:self.n]
            theta = rng.uniform(0, math.pi)
            along = (cc * math.cos(theta) + rr * math.sin(theta)) * self.gsd
            f += np.float32(0.02) * np.sign(np.sin(along * math.pi / rng.uniform(2.0, 3.5)))
        img[:, mask] = base[:, None] * f[mask][None]

    def water(self, img: np.ndarray, mask: np.ndarray) -> None:
        """Dark, smooth water with a lighter shallow rim."""
        base = self.colour(WATER)
        f = 1.0 + self.texture([(10.0, 0.04)])
        img[:, mask] = base[:, None] * f[mask][None]
        depth = ndimage.distance_transform_edt(mask) * self.gsd
        shallow = np.clip(1.0 - depth / 2.5, 0.0, 1.0).astype(np.float32) * mask * 0.35
        light = np.asarray((0.20, 0.25, 0.22, 0.09), np.float32)
        img += (light[:, None, None] - img) * shallow[None]

    def road(self, img: np.ndarray, mask: np.ndarray,
             line: tuple[LineString, float] | None) -> None:
        """Asphalt with patches and wear, a dashed centre line and solid edge lines."""
        base = self.colour(ROAD)
        f = 1.0 + self.texture([(15.0, 0.04), (1.0, 0.025)])
        img[:, mask] = base[:, None] * f[mask][None]
        if line is None:
            return
        centre, width = line
        within = mask
        paint = np.asarray(PAINT, np.float32)
        dash, gap = self.px(3.0), self.px(6.0)
        dashes = []
        for a, b in zip(centre.coords[:-1], centre.coords[1:], strict=True):
            seg = LineString([a, b])
            t = 0.0
            while t < seg.length:
                dashes.append(_substring(seg, t, min(t + dash, seg.length)))
                t += dash + gap
        half = self.px(LINE_W) / 2
        marks = [d.buffer(half, cap_style="flat") for d in dashes if d.length > 0]
        edge_off = width / 2 - self.px(0.8)
        if edge_off > self.px(1.5):
            for side in (edge_off, -edge_off):
                off = centre.offset_curve(side, join_style="mitre")
                if not off.is_empty:
                    marks.append(off.buffer(half, cap_style="flat"))
        if marks:
            self.blend(img, unary_union(marks), paint, within, supersample=_fine(self.gsd),
                       alpha=0.9)

    def parking(self, img: np.ndarray, mask: np.ndarray, poly: BaseGeometry) -> None:
        """Asphalt in rows of stalls (sub-pixel stripes) with parked cars."""
        rng = self.rng
        base = self.colour(PARKING)
        f = 1.0 + self.texture([(10.0, 0.03), (1.0, 0.02)])
        img[:, mask] = base[:, None] * f[mask][None]
        angle = _orientation(poly)  # rows run along the lot's long side
        ux, uy = math.cos(angle), math.sin(angle)  # along the rows
        vx, vy = -uy, ux  # across the rows
        cx, cy = poly.centroid.x, poly.centroid.y
        inner = poly.buffer(-self.px(LOT_MARGIN))
        if inner.is_empty:
            return
        # Extent of the lot along u and v from its centroid.
        pts = np.asarray(poly.exterior.coords)
        du = (pts[:, 0] - cx) * ux + (pts[:, 1] - cy) * uy
        dv = (pts[:, 0] - cx) * vx + (pts[:, 1] - cy) * vy
        occupancy = rng.uniform(*OCCUPANCY)
        stall_w, stall_d = self.px(STALL_W), self.px(STALL_D)
        period = 2 * stall_d + self.px(AISLE_W)
        v = dv.min() + self.px(LOT_MARGIN)
        stripes, cars = [], []
        while v + stall_d <= dv.max() - self.px(LOT_MARGIN) + 1e-6:
            rows = [v, v + stall_d] if v + 2 * stall_d <= dv.max() else [v]
            for row in rows:
                u = du.min() + self.px(LOT_MARGIN)
                while u + stall_w <= du.max():
                    centre = (cx + (u + stall_w / 2) * ux + (row + stall_d / 2) * vx,
                              cy + (u + stall_w / 2) * uy + (row + stall_d / 2) * vy)
                    stall = _rect(centre, stall_w, stall_d, angle)
                    if inner.contains(stall):
                        a = (cx + u * ux + row * vx, cy + u * uy + row * vy)
                        b = (a[0] + stall_d * vx, a[1] + stall_d * vy)
                        stripes.append(LineString([a, b]))
                        if rng.random() < occupancy:
                            jitter = rng.normal(0, self.px(0.15), 2)
                            cars.append(((centre[0] + jitter[0], centre[1] + jitter[1]),
                                         angle + rng.normal(0, 0.03)))
                    u += stall_w
            v += period
        half = self.px(LINE_W) / 2
        if stripes:
            marks = unary_union([s.buffer(half, cap_style="flat") for s in stripes])
            self.blend(img, marks, np.asarray(PAINT, np.float32), mask,
                       supersample=_fine(self.gsd), alpha=0.9)
        colours = [np.asarray(c, np.float32) for c, _ in CAR_COLOURS]
        weights = np.asarray([w for _, w in CAR_COLOURS])
        shift = [self.px(0.8) * s for s in self.shadow_dir]
        for centre, car_angle in cars:
            car = _rect(centre, self.px(CAR_W), self.px(CAR_L), car_angle)
            shadow = affinity.translate(car, *shift).difference(car)
            self.blend(img, shadow, base * np.float32(SHADOW_LIGHT), mask, alpha=0.8)
            paint = colours[int(rng.choice(len(colours), p=weights / weights.sum()))]
            self.blend(img, car, paint, mask)
            # the windscreen and cabin roof, darker
            glass = _rect(centre, self.px(CAR_W * 0.8), self.px(CAR_L * 0.3), car_angle)
            self.blend(img, glass, paint * np.float32(0.55), mask, alpha=0.7)

    # ------------------------------------------------------------------ shadows
    def cast_shadow(self, shade: np.ndarray, poly: BaseGeometry, own: np.ndarray,
                    height_m: float) -> None:
        """Add the shadow an object of ``height_m`` casts (away from the sun) to ``shade``
        (0..1 coverage), outside the object itself."""
        length = self.px(height_m * self.cot)
        dx, dy = (length * s for s in self.shadow_dir)
        moved = affinity.translate(poly, dx, dy)
        swept = [poly, moved]
        for a, b in _edges(poly):
            quad = Polygon([tuple(a), tuple(b), (b[0] + dx, b[1] + dy), (a[0] + dx, a[1] + dy)])
            if quad.is_valid and quad.area > 0:
                swept.append(quad)
        shadow = unary_union(swept).difference(poly)
        out = self.coverage(shadow)
        if out is None:
            return
        cover, r0, c0 = out
        h, w = cover.shape
        cover = cover * ~own[r0:r0 + h, c0:c0 + w]
        np.maximum(shade[r0:r0 + h, c0:c0 + w], cover, out=shade[r0:r0 + h, c0:c0 + w])


# ---------------------------------------------------------------------------- geometry
def _edges(poly: BaseGeometry) -> np.ndarray:
    """(k, 2, 2) exterior edges (a, b) of a polygon (the largest part of a multi-part one)."""
    if poly.geom_type == "MultiPolygon":
        poly = max(poly.geoms, key=lambda g: g.area)
    pts = np.asarray(poly.exterior.coords, np.float64)
    return np.stack([pts[:-1], pts[1:]], axis=1)


def _soft_normals(edges: np.ndarray, x: np.ndarray, y: np.ndarray,
                  softness: float) -> np.ndarray:
    """(m, 2) float32 unit outward normals of the roof facet over each point: the facet of
    the nearest edge, blended with the next nearest over ``softness`` px (a soft ridge)."""
    out = np.zeros((x.size, 2), np.float32)
    a, b = edges[:, 0], edges[:, 1]
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1]) + 1e-9
    # Outward normals: the polygon's centre lies on the inner side.
    centre = edges[:, 0].mean(axis=0)
    nrm = np.stack([d[:, 1], -d[:, 0]], axis=1) / length[:, None]
    mid = (a + b) / 2
    flip = ((mid - centre) * nrm).sum(axis=1) < 0
    nrm[flip] *= -1
    for s in range(0, x.size, 20_000):
        px, py = x[s:s + 20_000, None], y[s:s + 20_000, None]
        t = np.clip(((px - a[:, 0]) * d[:, 0] + (py - a[:, 1]) * d[:, 1]) / length ** 2, 0, 1)
        dist = np.hypot(px - (a[:, 0] + t * d[:, 0]), py - (a[:, 1] + t * d[:, 1]))
        w = np.exp(-(dist - dist.min(axis=1, keepdims=True)) / max(softness, 1e-3))
        v = w @ nrm / w.sum(axis=1, keepdims=True)
        out[s:s + 20_000] = v
    return out


def _is_rectangle(poly: BaseGeometry) -> bool:
    """Whether the polygon is a four-cornered box (any rotation)."""
    return poly.geom_type == "Polygon" and len(poly.exterior.coords) == 5


def _roundness(poly: BaseGeometry) -> float:
    """4 pi area / perimeter^2 (1 for a circle, 0.79 for a square)."""
    return 4 * math.pi * poly.area / (poly.length ** 2)


def _orientation(poly: BaseGeometry) -> float:
    """Angle (radians) of the long side of the polygon's minimum rotated rectangle."""
    rect = poly.minimum_rotated_rectangle
    pts = np.asarray(rect.exterior.coords)
    sides = np.diff(pts[:3], axis=0)
    long = sides[int(np.argmax(np.hypot(sides[:, 0], sides[:, 1])))]
    return math.atan2(long[1], long[0])


def _rect(centre: tuple[float, float], along: float, across: float, angle: float) -> Polygon:
    """A rectangle ``along`` x ``across`` px centred on ``centre``, its first side at
    ``angle`` (radians)."""
    r = box(-along / 2, -across / 2, along / 2, across / 2)
    r = affinity.rotate(r, angle, origin=(0, 0), use_radians=True)
    return affinity.translate(r, *centre)


def _substring(seg: LineString, t0: float, t1: float) -> LineString:
    """The part of a straight segment between distances ``t0`` and ``t1`` from its start."""
    a, b = seg.interpolate(t0), seg.interpolate(t1)
    return LineString([(a.x, a.y), (b.x, b.y)])


def _fine(gsd: float) -> int:
    """Supersampling that resolves a painted line's width at ``gsd`` (4 to 10)."""
    return int(min(10, max(4, math.ceil(2 * gsd / LINE_W))))
