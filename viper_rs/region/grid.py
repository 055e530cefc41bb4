"""The working grid of a region: one CRS, one pixel size, the requested area."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from affine import Affine
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from viper_rs.core.errors import InputError
from viper_rs.core.georef import check_georeference, utm_epsg
from viper_rs.core.ground_area import linear_unit_factor
from viper_rs.tiling.sources import Source

#: Points per side when a rectangle is carried into another CRS (curved edges).
DENSIFY = 21
#: Sources whose footprints are less than this apart (km) belong to one group (cluster).
CLUSTER_GAP_KM = 50.0
#: The widest extent (km, corner to corner) the sources of one question may span: one
#: working grid (one UTM zone's projection) stays true to about 0.6% in area within it.
#: Groups of sources farther apart are refused with a --bbox for each group.
MAX_SPAN_KM = 1000.0
#: Kilometres per degree of latitude (and of longitude at the equator).
KM_PER_DEGREE = 111.32


@dataclass
class WorkingGrid:
    """Pixel grid of a region: ``crs``, ``transform`` of pixel (0, 0), ``width`` x ``height``.

    ``area`` is the requested area (bbox intersected with the sources' footprints, or their
    union) and ``footprints`` each used source's footprint, all in the working CRS.
    ``used`` indexes the sources given to :func:`build_grid` that take part (one per
    footprint), ``skipped`` names the sources that could not be placed and why, and
    ``outside`` counts the sources that do not meet the bbox.
    """

    crs: Any  # rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    area: Any  # shapely geometry, working CRS
    footprints: list[Any]  # shapely polygons, working CRS, one per used source
    used: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    outside: int = 0
    #: Groups of used sources less than :data:`CLUSTER_GAP_KM` apart (indexes into
    #: ``footprints``); chips are laid out over each group, never the space between.
    clusters: list[list[int]] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.height, self.width

    @cached_property
    def crs_text(self) -> str:
        """The working CRS written as sources write theirs (``Source.crs``)."""
        return str(self.crs.to_string())

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

    return CRS.from_epsg(utm_epsg(lon, lat))


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
    """A rectangle of ``src_crs`` as a polygon in ``dst_crs``; ValueError when a corner or
    edge point has no finite place there."""
    from rasterio.warp import transform as warp

    xs, ys = _ring(*rect)
    if src_crs != dst_crs:
        xs, ys = warp(src_crs, dst_crs, xs, ys)
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        raise ValueError("points outside the target CRS's domain")
    poly = Polygon(zip(xs, ys, strict=True)).buffer(0)
    if poly.is_empty or not poly.area > 0:
        raise ValueError("no area left in the target CRS")
    return poly


def _carry(src: Source, crs: Any, dst: Any) -> Polygon:
    """A source's footprint in ``dst``; InputError saying why when it cannot be carried."""
    try:
        return _to_crs(crs, dst, source_rect(src))
    except Exception as exc:  # noqa: BLE001 - PROJ/GDAL raise many types
        from rasterio.crs import CRS

        name = CRS.from_user_input(dst).to_string()
        raise InputError(f"{src.name}: its footprint cannot be carried into {name} "
                         f"({str(exc).strip() or type(exc).__name__})") from None


def _padded(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """WGS84 bounds grown by 1% of their size (at least 1e-4 degree) on every side."""
    w, s, e, n = bounds
    dx, dy = max(0.01 * (e - w), 1e-4), max(0.01 * (n - s), 1e-4)
    return w - dx, s - dy, e + dx, n + dy


def _inside(inner: Sequence[float], outer: Sequence[float]) -> bool:
    """Whether box ``inner`` (W,S,E,N) lies inside box ``outer``."""
    return (outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2]
            and inner[3] <= outer[3])


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
    """The working grid of the sources that meet ``bbox`` (WGS84 W,S,E,N; every source
    without one): their common projected CRS (else the UTM zone of the centre of the area
    they cover, or ``crs``), the finest pixel size among them (or ``pixel_m``), covering
    ``bbox`` intersected with their footprints, or their union.

    Sources outside the bbox take no part (``outside``); sources whose georeference is
    refused (:func:`viper_rs.core.georef.georeference_problem`) or whose footprint cannot be
    carried into WGS84 or the working CRS are left out with the reason (``skipped``). The
    bbox is never carried into the working CRS whole: only its part over each source's
    extent is, so a box as large as the globe works. Raises InputError when no source is
    given, none can be placed or the bbox touches none."""
    from rasterio.crs import CRS

    if not sources:
        raise InputError("no readable source raster")
    skipped: list[tuple[str, str]] = []
    crss: dict[int, Any] = {}
    lonlat: dict[int, Polygon] = {}
    for k, s in enumerate(sources):
        try:
            check_georeference(s.name, s.crs, s.transform, s.width, s.height, InputError)
            crss[k] = CRS.from_user_input(s.crs)
            lonlat[k] = _carry(s, crss[k], "EPSG:4326")
        except Exception as exc:  # noqa: BLE001 - a bad CRS string, PROJ errors
            skipped.append((s.uri, str(exc)))
    ks = list(lonlat)
    outside = 0
    if bbox is not None:
        wanted = box(*bbox)
        pieces = {k: lonlat[k].intersection(wanted) for k in ks}
        ks = [k for k in ks if not pieces[k].is_empty and pieces[k].area > 0]
        outside = len(lonlat) - len(ks)
        if not ks:
            raise InputError(f"--bbox {','.join(f'{v:g}' for v in bbox)} touches no source")
        ll_area = unary_union([pieces[k] for k in ks])
    elif not ks:
        raise InputError("no source could be placed on the globe: "
                         + "; ".join(why for _, why in skipped[:3]))
    else:
        ll_area = unary_union([lonlat[k] for k in ks])
    clusters = check_span(sources, ks, [pieces[k] for k in ks] if bbox is not None
                          else [lonlat[k] for k in ks])
    kept = [crss[k] for k in ks]
    if crs is not None:
        work = CRS.from_user_input(crs)
    elif all(c == kept[0] for c in kept) and kept[0].is_projected:
        work = kept[0]
    else:
        work = utm_crs(ll_area.centroid.x, ll_area.centroid.y)
    footprints: dict[int, Polygon] = {}
    areas: dict[int, Any] = {}
    for k in ks:
        src = sources[k]
        try:
            footprints[k] = _carry(src, crss[k], work)
            if bbox is None:
                continue
            ext = _padded(lonlat[k].bounds)
            if _inside(ext, bbox):  # the box holds the whole source
                areas[k] = footprints[k]
                continue
            part = (max(bbox[0], ext[0]), max(bbox[1], ext[1]), min(bbox[2], ext[2]),
                    min(bbox[3], ext[3]))
            try:
                areas[k] = footprints[k].intersection(_to_crs("EPSG:4326", work, part))
            except Exception as exc:  # noqa: BLE001 - PROJ errors
                raise InputError(f"{src.name}: the box over it cannot be carried into "
                                 f"{work.to_string()} ({exc})") from None
        except InputError as exc:
            footprints.pop(k, None)
            skipped.append((src.uri, str(exc)))
    if bbox is not None:
        ks = [k for k in ks if k in areas and not areas[k].is_empty and areas[k].area > 0]
        if not ks:
            raise InputError(f"--bbox {','.join(f'{v:g}' for v in bbox)} touches no source"
                             + (f" that can be placed ({skipped[0][1]})" if skipped else ""))
        area = unary_union([areas[k] for k in ks])
    else:
        ks = [k for k in ks if k in footprints]
        if not ks:
            raise InputError("no source could be placed in the working CRS: "
                             + "; ".join(why for _, why in skipped[:3]))
        area = unary_union([footprints[k] for k in ks])
    used = [sources[k] for k in ks]
    pos = {k: n for n, k in enumerate(ks)}
    groups = [[pos[k] for k in g if k in pos] for g in clusters]
    unit = linear_unit_factor(work)
    size = (pixel_m if pixel_m else min(source_gsd_m(s) for s in used)) / unit
    if not (size > 0 and math.isfinite(size)):
        raise InputError(f"pixel size must be a positive number of metres, got {pixel_m}")
    # Snap to the finest source already in the working CRS, so its pixels are copied as they are.
    refs = [Affine(*sources[k].transform) for k in ks
            if crss[k] == work and abs(min(sources[k].resolution) - size) < 1e-9 * max(size, 1)]
    ox, oy = (refs[0].c, refs[0].f) if refs else (0.0, 0.0)
    minx, miny, maxx, maxy = area.bounds
    eps = 1e-6
    k0 = math.floor((minx - ox) / size + eps)
    k1 = math.ceil((maxx - ox) / size - eps)
    j0 = math.floor((oy - maxy) / size + eps)  # rows counted down from oy
    j1 = math.ceil((oy - miny) / size - eps)
    transform = Affine(size, 0.0, ox + k0 * size, 0.0, -size, oy - j0 * size)
    return WorkingGrid(crs=work, transform=transform, width=max(k1 - k0, 1),
                       height=max(j1 - j0, 1), area=area,
                       footprints=[footprints[k] for k in ks], used=ks, skipped=skipped,
                       outside=outside, clusters=[g for g in groups if g])


def span_km(bounds: Sequence[float]) -> float:
    """Corner-to-corner extent (km) of a WGS84 box (W, S, E, N), measured along the
    parallel nearest the equator (where a degree of longitude is longest)."""
    w, s, e, n = bounds
    lat = 0.0 if s <= 0.0 <= n else min(abs(s), abs(n))
    return math.hypot((e - w) * math.cos(math.radians(min(lat, 89.9))), n - s) * KM_PER_DEGREE


def source_clusters(polys: Sequence[Any], gap_km: float = CLUSTER_GAP_KM) -> list[list[int]]:
    """Groups of WGS84 footprints (indexes into ``polys``) chained by gaps under
    ``gap_km``, each sorted, in order of their first member."""
    import shapely

    if not polys:
        return []
    pad = []
    for p in polys:
        w, s, e, n = p.bounds
        dy = gap_km / KM_PER_DEGREE / 2
        lat = min(max(abs(s), abs(n)) + dy, 89.0)
        dx = dy / math.cos(math.radians(lat))
        pad.append(box(w - dx, s - dy, e + dx, n + dy))
    merged = unary_union(pad)
    parts = list(getattr(merged, "geoms", [merged]))
    which, part = shapely.STRtree(parts).query([p.representative_point() for p in polys],
                                               predicate="intersects")
    groups: dict[int, set[int]] = {}
    for i, g in zip(which.tolist(), part.tolist(), strict=True):
        groups.setdefault(g, set()).add(i)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def check_span(sources: Sequence[Source], ks: Sequence[int], polys: Sequence[Any]) -> list[list[int]]:
    """The groups (:func:`source_clusters`, as indexes into ``sources``) of the sources
    ``ks`` with WGS84 footprints ``polys``; InputError when together they span more than
    :data:`MAX_SPAN_KM` (one working grid across an ocean), naming each group's sources
    and a ``--bbox`` that asks about it alone."""
    if not polys:
        return []
    whole = unary_union(list(polys)).bounds
    groups = [[ks[i] for i in g] for g in source_clusters(polys)]
    if span_km(whole) <= MAX_SPAN_KM:
        return groups
    at = {k: i for i, k in enumerate(ks)}
    boxes = [unary_union([polys[at[k]] for k in g]).bounds for g in groups[:5]]
    parts = []
    for g, b in zip(groups[:5], boxes, strict=True):
        w, s, e, n = _padded(b)
        names = ", ".join(sources[k].name for k in g[:2]) + (" ..." if len(g) > 2 else "")
        parts.append(f"{len(g)} source(s) ({names}) --bbox={w:.4f},{s:.4f},{e:.4f},{n:.4f}")
    more = f"; and {len(groups) - 5} more group(s)" if len(groups) > 5 else ""
    raise InputError(
        f"the sources are far apart: they lie {span_km(whole):,.0f} km across in "
        f"{len(groups)} group(s), and one question's working grid spans at most {MAX_SPAN_KM:,.0f} km "
        f"(never the empty space between far-apart sources); ask about each group with a "
        f"smaller box (--bbox): " + "; ".join(parts) + more)
