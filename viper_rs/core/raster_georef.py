"""The georeference a read raster ends up with: the file's own CRS, else the user's CRS and
transform, else a plain pixel grid of ``--gsd`` metres (or pixels, with a note saying what a
world file stated)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from affine import Affine

from viper_rs.core.errors import ImageError, first_line
from viper_rs.core.georef import georeference_problem, no_georeference_note
from viper_rs.core.raster_read import Raster

log = logging.getLogger(__name__)


def georeference(
    p: Any, raster: Raster, override_crs: object | None,
    transform_override: Affine | None, gsd: float | None, whole: bool = True,
) -> tuple[Any, Affine, float | None, list[str]]:
    """(CRS, transform, gsd, notes) of a read file: its own CRS, else the override CRS and
    transform, else a plain pixel grid of ``gsd`` metres (or pixels, with a note saying so).

    The georeference is checked (:func:`viper_rs.core.georef.georeference_problem`): a broken
    one is an ImageError naming the value, unless ``gsd`` is given, which then measures
    the image instead (with a note). ``whole``: the raster is the whole file at its own
    resolution (its transform is the file's, e.g. a world file's)."""
    crs, transform = raster.crs, raster.transform
    if crs is None and override_crs is not None:
        if transform_override is None:
            raise ImageError(f"{p}: a CRS override needs a transform too")
        crs = user_crs(str(p), override_crs)
        transform = transform_override
    notes: list[str] = []
    if crs is not None:
        height, width = raster.data.shape[1:]
        problem = georeference_problem(str(p), crs, transform, int(width), int(height))
        if problem is not None and gsd is None:
            raise ImageError(f"{problem}; fix the file's georeference, or pass --gsd M to "
                             "measure it at M metres per pixel instead")
        if problem is not None:
            log.warning("%s; measuring it with --gsd %s instead", problem, gsd)
            notes.append(f"{problem}: set aside, pixels measured as --gsd {gsd:g} m")
            crs = None
        elif gsd is not None:
            log.info("%s has a CRS; its transform defines pixel size (--gsd %s ignored)", p, gsd)
            gsd = None
    if crs is None:
        if gsd is None:
            stated = _world_file_px(raster.transform) if whole else None
            notes.append(no_georeference_note(str(p), stated))
            transform = Affine.identity()
        else:
            transform = Affine(gsd, 0, 0, 0, -gsd, 0)
    return crs, transform, gsd, notes


def user_crs(name: str, crs: object) -> Any:
    """A CRS given by the caller (EPSG code, WKT, PROJ string) as a rasterio CRS;
    ImageError naming it when rasterio cannot read it."""
    import rasterio.crs

    try:
        return rasterio.crs.CRS.from_user_input(crs)
    except Exception as exc:  # noqa: BLE001 - CRSError and the types of odd inputs
        raise ImageError(f"{name}: CRS {str(crs)[:80]!r} cannot be read ({first_line(exc)})"
                         ) from None


def _world_file_px(transform: Affine) -> float | None:
    """The pixel size a file without a CRS states anyway (a world file next to a PNG or
    JPEG gives GDAL a transform, never a CRS), None when it states none."""
    if transform == Affine.identity():
        return None
    size = float(np.sqrt(abs(transform.a * transform.e - transform.b * transform.d)))
    return size if np.isfinite(size) and size > 0 else None
