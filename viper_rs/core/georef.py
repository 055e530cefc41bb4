"""One check of a raster's georeference, shared by every entry point.

An image's CRS and affine transform come from the file (or the user) and are untrusted.
:func:`georeference_problem` says in one line, naming the file and the bad value, why they
cannot be used; ``None`` means they can. The rules:

- the transform's six numbers are finite, not GDAL's identity default (a file with a CRS
  but no geotransform), it is not singular (pixels have an area) and its pixel axes are
  at least :data:`MIN_AXIS_ANGLE_DEG` apart (rotation is fine, a shear that
  flattens pixels into lines is not), with sides (in CRS units) at most :data:`MAX_ASPECT`
  times apart;
- the pixel size on the ground is from :data:`MIN_PIXEL_M` to :data:`MAX_PIXEL_M` metres
  (1 mm to 10 km: close-range drone imagery to coarse weather-satellite grids): first
  roughly from the CRS units (degrees at the equator's scale; ten times past the range is
  refused before PROJ runs), then as the square root of the centre pixel's geodesic
  sides (the ground sampling distance GeoImage reports) after PROJ places it;
- the CRS is geographic or projected (a local/engineering CRS cannot be placed on the
  globe), and PROJ can carry the image's corners, centre and the centre pixel's sides to
  WGS84 (finite, within ±180 / ±90 degrees) and back to the same place, and to the UTM
  zone of the image centre;
- every corner lies inside the CRS's area of use (as PROJ's database states it) grown by
  :data:`AREA_MARGIN_DEG` degrees on every side: projections stay usable some way past
  the area they are defined for (a country mapped in one UTM zone), not across the globe.

Also :func:`gsd_problem` for a ground sampling distance given by the user (``--gsd``),
:func:`no_georeference_note`, the note an answer carries when areas are in pixels, and
:func:`no_ground_size_message`, the refusal of a question that needs metres.
Layer 1: imports only errors and textsafe of the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from viper_rs.core.errors import ImageError
from viper_rs.core.textsafe import cut, safe_text

#: Smallest plausible pixel size (ground sampling distance), metres (1 mm).
MIN_PIXEL_M = 0.001
#: Largest plausible pixel size (ground sampling distance), metres (10 km).
MAX_PIXEL_M = 10_000.0
#: Largest ratio between a pixel's two sides (in CRS units).
MAX_ASPECT = 50.0
#: Smallest angle between the pixel axes (90 for an unsheared grid, any rotation).
MIN_AXIS_ANGLE_DEG = 30.0
#: Degrees a corner may lie outside the CRS's area of use.
AREA_MARGIN_DEG = 15.0
#: Slack on the ±180 / ±90 degree limits (floating-point edges of global grids).
LONLAT_SLACK_DEG = 1e-6
#: What a corner off the globe means for the image.
_OFF = "off the globe, its pixels have no finite ground size"
#: Metres per degree of latitude (a first, CRS-free estimate of a degree's ground size).
_M_PER_DEG = 111_320.0


def no_georeference_note(name: str, world_file_px: float | None = None) -> str:
    """The note of an answer about an image without a ground size: areas are in pixels
    and size rules assume nothing but what the note says."""
    why = "no georeference"
    if world_file_px is not None:
        why = (f"no georeference (a world file gives {world_file_px:.6g} units per pixel "
               "but no CRS says which units)")
    return f"{_label(name)}: {why}: areas in pixels; pass --gsd M for metres"


def no_ground_size_message(name: str, why: str) -> str:
    """The one line refusing a question that needs metres about image ``name`` without a
    ground size; ``why``: what needs them."""
    return f"{_label(name)} has no ground size; pass --gsd M (metres per pixel): {why}"


def gsd_problem(name: str, gsd: float | None) -> str | None:
    """Why a user-given ground sampling distance (metres per pixel) cannot be used; None
    when it can (or is None)."""
    if gsd is None:
        return None
    try:
        value = float(gsd)
    except (TypeError, ValueError):
        return f"{_label(name)}: --gsd must be a number of metres, got {gsd!r}"
    if not (math.isfinite(value) and MIN_PIXEL_M <= value <= MAX_PIXEL_M):
        return (f"{_label(name)}: --gsd {value:g} m is outside the plausible pixel size range "
                f"{_range()}")
    return None


def georeference_problem(
    name: str, crs: Any, transform: Sequence[float], width: int, height: int
) -> str | None:
    """Why the georeference (``crs``: anything pyproj or rasterio reads; ``transform``: an
    affine's ``a, b, c, d, e, f``) of a ``width`` x ``height`` raster called ``name``
    cannot be used, in one line naming the file and the bad value; None when it can."""
    label = _label(name)
    try:
        t = tuple(float(v) for v in tuple(transform)[:6])
    except (TypeError, ValueError):
        return f"{label}: transform {transform!r} is not six numbers"
    if len(t) != 6:
        return f"{label}: transform {t} is not six numbers"
    problem = _transform_problem(t, width, height)
    if problem is None:
        problem = _crs_problem(crs, t, width, height)
    return None if problem is None else f"{label}: {problem}"


def check_georeference(
    name: str, crs: Any, transform: Sequence[float], width: int, height: int,
    error: type[Exception] = ImageError,
) -> None:
    """Raise ``error`` (ImageError by default) with :func:`georeference_problem`'s line
    when the georeference cannot be used."""
    problem = georeference_problem(name, crs, transform, width, height)
    if problem is not None:
        raise error(problem)


# ------------------------------------------------------------------------- the rules
def _transform_problem(t: tuple[float, ...], width: int, height: int) -> str | None:
    """The transform's own faults: non-finite numbers, no area, sheared, corners that
    overflow; None when it is usable."""
    a, b, c, d, e, f = t
    names = ("a (pixel width)", "b (row rotation)", "c (origin x)", "d (column rotation)",
             "e (pixel height)", "f (origin y)")
    for label, v in zip(names, t, strict=True):
        if not math.isfinite(v):
            return f"transform {label} is {v}; the georeference is broken"
    if t == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        return ("has a CRS but no geotransform (GDAL's identity default), so its pixels "
                "cannot be placed")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return f"size {width} x {height} px has no pixels"
    col, row = math.hypot(a, d), math.hypot(b, e)
    det = a * e - b * d
    if not (math.isfinite(col * row) and math.isfinite(det)):
        return (f"pixel size {col:.3g} x {row:.3g} CRS units is far outside any plausible "
                f"range ({_range()})")
    if col == 0 or row == 0 or det == 0:
        return (f"transform ({_nums(t)}) is singular (determinant {det:g}): its pixels "
                "have no area, 0 m on the ground")
    angle = math.degrees(math.asin(min(1.0, abs(det) / (col * row))))
    if angle < MIN_AXIS_ANGLE_DEG:
        return (f"transform ({_nums(t)}) shears pixels to {angle:.3g} degrees between their "
                f"axes (at least {MIN_AXIS_ANGLE_DEG:g} expected)")
    if max(col, row) > MAX_ASPECT * min(col, row):
        return (f"transform ({_nums(t)}) makes pixels {col:.3g} x {row:.3g} CRS units, "
                f"sides more than {MAX_ASPECT:g} times apart")
    for cc, rr in ((width, 0), (0, height), (width, height)):
        x, y = c + a * cc + b * rr, f + d * cc + e * rr
        if not (math.isfinite(x) and math.isfinite(y)):
            return (f"pixel size {col:.3g} x {row:.3g} CRS units puts the image corner at "
                    f"({x:g}, {y:g})")
    return None


def _crs_problem(crs: Any, t: tuple[float, ...], width: int, height: int) -> str | None:
    """The CRS's faults and where it puts the image; None when it is usable."""
    from pyproj.exceptions import CRSError

    if crs is None:
        return "no CRS"
    try:
        pcrs = _pyproj_crs(_crs_text(crs))
    except (CRSError, ValueError, TypeError) as exc:
        return f"CRS {_crs_short(crs)} is not one PROJ reads ({_first(exc)})"
    if not (pcrs.is_projected or pcrs.is_geographic):
        return (f"CRS {_crs_name(pcrs)} (type: {pcrs.type_name or 'unknown'}) is neither "
                "geographic nor projected, so it cannot be placed on the globe")
    a, b, c, d, e, f = t
    col, row = math.hypot(a, d), math.hypot(b, e)
    unit = _unit_metres(pcrs)
    if unit is None:
        return f"CRS {_crs_name(pcrs)} has no known units of length or angle"
    nominal = max(col, row) * unit
    least = min(col, row) * unit
    if not (math.isfinite(nominal) and nominal <= MAX_PIXEL_M * 10) or least < MIN_PIXEL_M / 10:
        # far outside the range whatever the projection's scale: refused before PROJ runs
        return (f"pixel size {_size(col * unit, row * unit)} is outside the plausible "
                f"range {_range()}")
    return _placement_problem(pcrs, t, width, height)


def _placement_problem(pcrs: Any, t: tuple[float, ...], width: int, height: int) -> str | None:
    """Where PROJ puts the image: corners in WGS84 and the UTM zone, inside the area of
    use, and its pixel size on the ground; None when all hold."""
    from pyproj import Geod
    from pyproj.exceptions import ProjError

    a, b, c, d, e, f = t
    cx, cy = width / 2.0, height / 2.0
    pix = [(0, 0), (width, 0), (0, height), (width, height), (cx, cy), (cx + 1, cy),
           (cx, cy + 1)]
    xs = [c + a * p + b * q for p, q in pix]
    ys = [f + d * p + e * q for p, q in pix]
    try:
        to_ll, from_ll = _transformers(_wkt(pcrs))
        lon, lat = (list(v) for v in to_ll.transform(xs, ys, errcheck=False))
        back_x, back_y = from_ll.transform(lon, lat, errcheck=False)
    except (ProjError, ValueError, TypeError) as exc:
        return f"PROJ cannot carry CRS {_crs_name(pcrs)} to WGS84 ({_first(exc)})"
    for k in range(4):
        if not (math.isfinite(lon[k]) and math.isfinite(lat[k])):
            return (f"{_corner(xs[k], ys[k], pcrs)} cannot be carried to WGS84 (PROJ gives "
                    f"lon {lon[k]}, lat {lat[k]}): {_OFF}")
        if abs(lat[k]) > 90 + LONLAT_SLACK_DEG:
            return (f"{_corner(xs[k], ys[k], pcrs)} is at latitude {lat[k]:.10g}, beyond ±90 "
                    f"degrees: {_OFF}")
        if abs(lon[k]) > 180 + LONLAT_SLACK_DEG:
            return (f"{_corner(xs[k], ys[k], pcrs)} is at longitude {lon[k]:.10g}, beyond "
                    f"±180 degrees: {_OFF}")
    if not all(math.isfinite(v) for v in (*lon, *lat)):
        return (f"the centre pixel of the image in {_crs_name(pcrs)} has no place on the "
                "globe")
    tol = max(0.5 * min(math.hypot(a, d), math.hypot(b, e)), 1e-9 * max(map(abs, xs + ys)))
    for k in range(4):
        miss = math.hypot(back_x[k] - xs[k], back_y[k] - ys[k])
        if not (miss <= tol):
            return (f"image corner ({xs[k]:.10g}, {ys[k]:.10g}) is outside where "
                    f"{_crs_name(pcrs)} is defined (back from WGS84 it lands {miss:.3g} "
                    "CRS units away)")
    problem = _area_of_use_problem(pcrs, lon[:4], lat[:4])
    if problem is not None:
        return problem
    geod = Geod(ellps="WGS84")
    dx = geod.inv(lon[4], lat[4], lon[5], lat[5])[2]
    dy = geod.inv(lon[4], lat[4], lon[6], lat[6])[2]
    gsd = math.sqrt(dx * dy)  # what GeoImage calls the ground sampling distance
    if not (math.isfinite(gsd) and MIN_PIXEL_M <= gsd <= MAX_PIXEL_M):
        return (f"pixel size {_size(dx, dy)} on the ground (at lon {lon[4]:.6g}, lat "
                f"{lat[4]:.6g}) is outside the plausible range {_range()}")
    return _utm_problem(pcrs, xs[:4], ys[:4], lon[4], lat[4])


def _area_of_use_problem(pcrs: Any, lon: list[float], lat: list[float]) -> str | None:
    """A corner farther than :data:`AREA_MARGIN_DEG` outside the CRS's area of use."""
    area = _area_of_use(_wkt(pcrs))
    if area is None:
        return None
    w, s, e, n = area.west, area.south, area.east, area.north
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        return None
    m = AREA_MARGIN_DEG
    span = (e - w) % 360.0 if e != w else 360.0
    if w == -180 and e == 180:
        span = 360.0
    for x, y in zip(lon, lat, strict=True):
        inside_lon = span + 2 * m >= 360 or (x - (w - m)) % 360.0 <= span + 2 * m
        if not (inside_lon and s - m <= y <= n + m):
            return (f"image corner at lon {x:.6g}, lat {y:.6g} is far outside the area of "
                    f"use of {_crs_name(pcrs)} (lon {w:g} to {e:g}, lat {s:g} to {n:g}, "
                    f"{m:g} degree margin)")
    return None


def _utm_problem(pcrs: Any, xs: list[float], ys: list[float], lon: float,
                 lat: float) -> str | None:
    """The corners cannot be carried into the UTM zone of the image centre."""
    from pyproj.exceptions import ProjError

    epsg = utm_epsg(lon, lat)
    try:
        to_utm = _to_utm(_wkt(pcrs), epsg)
        ux, uy = to_utm.transform(xs, ys, errcheck=False)
    except (ProjError, ValueError, TypeError) as exc:
        return f"PROJ cannot carry CRS {_crs_name(pcrs)} to UTM (EPSG:{epsg}) ({_first(exc)})"
    if not all(math.isfinite(v) for v in (*ux, *uy)):
        return f"the image corners have no place in UTM (EPSG:{epsg}) from {_crs_name(pcrs)}"
    return None


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone of a point (zones 1-60, north 326xx / south 327xx)."""
    zone = min(max(int(math.floor((lon + 180.0) / 6.0)) + 1, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


# ------------------------------------------------------------------------- helpers
@lru_cache(maxsize=64)
def _pyproj_crs(text: str) -> Any:
    from pyproj import CRS

    return CRS.from_user_input(text)


@lru_cache(maxsize=64)
def _area_of_use(wkt: str) -> Any:
    """The CRS's area of use: its own, else that of the registered CRS it matches (a WKT
    read from a file seldom carries one)."""
    from pyproj import CRS

    pcrs = CRS.from_wkt(wkt)
    if pcrs.area_of_use is not None:
        return pcrs.area_of_use
    auth = pcrs.to_authority(min_confidence=70)
    if auth is None:
        return None
    try:
        return CRS.from_authority(*auth).area_of_use
    except Exception:  # noqa: BLE001 - an authority code PROJ's database lacks
        return None


@lru_cache(maxsize=64)
def _transformers(wkt: str) -> tuple[Any, Any]:
    """(CRS -> WGS84 lon/lat, back) transformers of a CRS, built once per CRS."""
    from pyproj import Transformer

    return (Transformer.from_crs(wkt, "EPSG:4326", always_xy=True),
            Transformer.from_crs("EPSG:4326", wkt, always_xy=True))


@lru_cache(maxsize=64)
def _to_utm(wkt: str, epsg: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(wkt, f"EPSG:{epsg}", always_xy=True)


def _crs_text(crs: Any) -> str:
    """WKT (or the user's text) of a rasterio/pyproj CRS or a string."""
    if isinstance(crs, str):
        return crs
    to_wkt = getattr(crs, "to_wkt", None)
    if callable(to_wkt):
        return str(to_wkt())
    return str(crs)


def _unit_metres(pcrs: Any) -> float | None:
    """Ground metres per unit of the CRS's first axis (degrees at the equator's scale)."""
    axes = pcrs.axis_info
    if not axes:
        return None
    factor = axes[0].unit_conversion_factor
    if not (isinstance(factor, float | int) and math.isfinite(factor) and factor > 0):
        return None
    if pcrs.is_geographic:  # radians per unit
        return math.degrees(factor) * _M_PER_DEG
    return float(factor)


@lru_cache(maxsize=64)
def _wkt(pcrs: Any) -> str:
    return str(pcrs.to_wkt())


def _corner(x: float, y: float, pcrs: Any) -> str:
    return f"image corner ({x:.10g}, {y:.10g}) in {_crs_name(pcrs)}"


def _crs_name(pcrs: Any) -> str:
    auth = pcrs.to_authority(min_confidence=100)
    if auth:
        return f"{auth[0]}:{auth[1]}"
    return _crs_short(pcrs.name or pcrs.to_wkt())


def _crs_short(crs: Any) -> str:
    return repr(safe_text(cut(_crs_text(crs), 80)))


def _label(name: str) -> str:
    return safe_text(name, 300)


def _first(exc: BaseException) -> str:
    return safe_text((str(exc).strip().splitlines() or [type(exc).__name__])[0], 200)


def _nums(t: Sequence[float]) -> str:
    return ", ".join(f"{v:.6g}" for v in t)


def _size(x: float, y: float) -> str:
    return f"{x:.3g} m" if x == y else f"{x:.3g} x {y:.3g} m"


def _range() -> str:
    return f"{MIN_PIXEL_M:g}-{MAX_PIXEL_M:g} m"
