"""The working grid of a region: one CRS, one pixel size, the requested area."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from affine import Affine
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from viper_rs.errors import InputError
from viper_rs.geo import linear_unit_factor
from viper_rs.index.sources import Source

#: Points per side when a rectangle is carried into another CRS (curved edges).
DENSIFY = 21


@dataclass
class WorkingGrid:
    """Pixel grid of a region: ``crs``, ``transform`` of pixel (0, 0), ``width`` x ``height``.

    ``area`` is the requested area (bbox intersected with the sources' footprints, or their
    union) and ``footprints`` each source's footprint, all in the working CRS.
    """

    crs: Any  # rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    area: Any  # shapely geometry, working CRS
    footprints: list[Any]  # shapely polygons, working CRS, one per source

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.height, self.width

    @property
    def pixel_size(self) -> float:
        """Pixel side in CRS units."""
        return float(self.transform.a)

    def window_transform(self, r0: int, c0: int) -> Affine:
        """Transform of a window whose pixel (0, 0) is grid pixel (r0, c0)."""
        return self.transform @ Affine.translation(c0, r0)

    def window_box(self, r0: int, c0: int, r1: int, c1: int) -> Any:
        """Rows r0:r1, columns c0:c1 as a shapely box in the working CRS."""
        x0, y0 = self.transform @ (c0, r0)
        x1, y1 = self.transform @ (c1, r1)
        return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def lonlat_bounds(self, r0: int, c0: int, r1: int, c1: int) -> list[float]:
        """WGS84 [W, S, E, N] of a window."""
        from rasterio.warp import transform_bounds

        b = self.window_box(r0, c0, r1, c1).bounds
        return [round(v, 7) for v in transform_bounds(self.crs, "EPSG:4326", *b, densify_pts=DENSIFY)]


def utm_crs(lon: float, lat: float) -> Any:
    """The WGS84 UTM zone CRS of a point."""
    from rasterio.crs import CRS

    zone = min(max(int(math.floor((lon + 180.0) / 6.0)) + 1, 1), 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def parse_bbox(text: str | Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """``"W,S,E,N"`` (degrees) as four floats; InputError when malformed."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise InputError(f"--bbox must be W,S,E,N in degrees, got {text!r}") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"--bbox must be four numbers W,S,E,N, got {text!r}")
    w, s, e, n = vals
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise InputError(f"--bbox {text!r} is not a W,S,E,N box in degrees (W < E, S < N)")
    return w, s, e, n


def _ring(x0: float, y0: float, x1: float, y1: float) -> tuple[list[float], list[float]]:
    """Densified outline of a rectangle (xs, ys)."""
    t = [i / (DENSIFY - 1) for i in range(DENSIFY)]
    xs = [x0 + (x1 - x0) * f for f in t] + [x1] * DENSIFY + [x1 - (x1 - x0) * f for f in t] + [x0] * DENSIFY
    ys = [y0] * DENSIFY + [y0 + (y1 - y0) * f for f in t] + [y1] * DENSIFY + [y1 - (y1 - y0) * f for f in t]
    return xs, ys


def _to_crs(src_crs: Any, dst_crs: Any, rect: tuple[float, float, float, float]) -> Polygon:
    """A rectangle of ``src_crs`` as a polygon in ``dst_crs``."""
    from rasterio.warp import transform as warp

    xs, ys = _ring(*rect)
    if src_crs != dst_crs:
        xs, ys = warp(src_crs, dst_crs, xs, ys)
    return Polygon(zip(xs, ys, strict=True)).buffer(0)


def source_rect(src: Source) -> tuple[float, float, float, float]:
    """A source's bounds in its own CRS (minx, miny, maxx, maxy)."""
    t = Affine(*src.transform)
    xs, ys = zip(*(t @ (c, r) for c, r in ((0, 0), (src.width, 0), (0, src.height),
                                              (src.width, src.height))), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def source_gsd_m(src: Source) -> float:
    """A source's pixel size in metres (degrees converted at the equator's scale)."""
    from rasterio.crs import CRS

    crs = CRS.from_user_input(src.crs)
    res = min(src.resolution)
    if crs.is_geographic:
        return res * 111_320.0
    return res * linear_unit_factor(crs)


def build_grid(
    sources: Sequence[Source],
    bbox: Sequence[float] | None = None,
    pixel_m: float | None = None,
    crs: Any = None,
) -> WorkingGrid:
    """The working grid for ``sources``: the sources' common projected CRS (else the UTM
    zone of the area's centre, or ``crs``), the finest source pixel size (or ``pixel_m``),
    covering ``bbox`` (WGS84 W,S,E,N) intersected with the footprints, or their union.
    Raises InputError when no source is given or the bbox touches none."""
    from rasterio.crs import CRS

    if not sources:
        raise InputError("no readable source raster")
    crss = [CRS.from_user_input(s.crs) for s in sources]
    if crs is not None:
        work = CRS.from_user_input(crs)
    elif all(c == crss[0] for c in crss) and crss[0].is_projected:
        work = crss[0]
    else:
        if bbox is not None:
            lon, lat = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
        else:
            ll = unary_union([_to_crs(c, "EPSG:4326", source_rect(s))
                              for s, c in zip(sources, crss, strict=True)])
            lon, lat = ll.centroid.x, ll.centroid.y
        work = utm_crs(lon, lat)
    footprints = [_to_crs(c, work, source_rect(s)) for s, c in zip(sources, crss, strict=True)]
    area = unary_union(footprints)
    if bbox is not None:
        area = area.intersection(_to_crs("EPSG:4326", work, tuple(bbox)))
        if area.is_empty or area.area <= 0:
            raise InputError(f"--bbox {','.join(str(v) for v in bbox)} touches no source")
    unit = linear_unit_factor(work)
    size = (pixel_m if pixel_m else min(source_gsd_m(s) for s in sources)) / unit
    if not (size > 0 and math.isfinite(size)):
        raise InputError(f"pixel size must be a positive number of metres, got {pixel_m}")
    # Snap to the finest source already in the working CRS, so its pixels are copied as they are.
    refs = [Affine(*s.transform) for s, c in zip(sources, crss, strict=True)
            if c == work and abs(min(s.resolution) - size) < 1e-9 * max(size, 1)]
    ox, oy = (refs[0].c, refs[0].f) if refs else (0.0, 0.0)
    minx, miny, maxx, maxy = area.bounds
    eps = 1e-6
    k0 = math.floor((minx - ox) / size + eps)
    k1 = math.ceil((maxx - ox) / size - eps)
    j0 = math.floor((oy - maxy) / size + eps)  # rows counted down from oy
    j1 = math.ceil((oy - miny) / size - eps)
    transform = Affine(size, 0.0, ox + k0 * size, 0.0, -size, oy - j0 * size)
    return WorkingGrid(crs=work, transform=transform, width=max(k1 - k0, 1),
                       height=max(j1 - j0, 1), area=area, footprints=footprints)
