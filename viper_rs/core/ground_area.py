"""True ground area of pixels: metres per CRS unit, per-row pixel areas of projected grids
(corrected by the projection's areal scale) and of geographic grids (geodesic)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from affine import Affine

from viper_rs.core.errors import ImageError

log = logging.getLogger(__name__)


def linear_unit_factor(crs: Any) -> float:
    """Metres per unit of a projected CRS (ImageError when its units are unknown)."""
    try:
        name, factor = crs.linear_units_factor
        return float(factor)
    except Exception:  # no linear units reported: assume metres only for known metre CRSs
        units = (crs.linear_units or "").lower()
        if units in ("metre", "meter", "m", "metres", "meters"):
            return 1.0
        raise ImageError(f"CRS {crs} has unknown linear units; cannot measure ground area") from None


def projected_row_areas(crs: Any, transform: Affine, width: int, height: int) -> np.ndarray:
    """(height,) true ground area in m2 of one pixel in each row of a grid in a projected
    CRS (pixel area corrected by the projection's areal scale at each row's centre)."""
    factor = linear_unit_factor(crs)
    det = abs(transform.a * transform.e - transform.b * transform.d)
    scale = _areal_scale(crs, transform, width, height)
    return det * factor * factor / scale


def _areal_scale(crs, transform: Affine, width: int, height: int) -> np.ndarray:
    """(H,) projection areal scale factor at each row's centre (1.0 = true area).

    Web Mercator (EPSG:3857) inflates areas by sec^2(latitude); UTM by < 0.1%.
    """
    from pyproj import CRS as PCRS
    from pyproj import Proj, Transformer

    try:
        pcrs = PCRS.from_user_input(crs.to_wkt())
        rows = np.arange(height) + 0.5
        cols = np.full(height, width / 2.0)
        xs = transform.c + transform.a * cols + transform.b * rows
        ys = transform.f + transform.d * cols + transform.e * rows
        lon, lat = Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True).transform(xs, ys)
        scale = np.asarray(Proj(pcrs).get_factors(lon, lat).areal_scale, dtype=np.float64)
        if scale.shape != (height,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError("no finite scale factors")
        return scale
    except Exception as exc:  # CRS without a usable inverse: planar area, said in the log
        log.warning("no areal scale factors for CRS %s (%s); using planar pixel area", crs, exc)
        return np.ones(height, dtype=np.float64)


def geodesic_row_areas(transform: Affine, height: int, crs: Any) -> np.ndarray:
    """(height,) geodesic ground area in m2 of one pixel in each row of a grid in a
    geographic CRS (on the CRS's ellipsoid, WGS84 when it names none)."""
    from pyproj import CRS as PCRS
    from pyproj import Geod

    geod = PCRS.from_user_input(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
    areas = np.empty(height, dtype=np.float64)
    for r in range(height):
        corners = [transform @ (0, r), transform @ (1, r), transform @ (1, r + 1), transform @ (0, r + 1)]
        lons = [c[0] for c in corners]
        lats = [c[1] for c in corners]
        a, _ = geod.polygon_area_perimeter(lons, lats)
        areas[r] = abs(a)
    return areas
