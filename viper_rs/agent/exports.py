"""An answer's regions as files: a WGS84 GeoJSON FeatureCollection and a GeoPackage layer.

Both are written whole or not at all (a temporary file renamed into place), so an
interrupted or failed export never leaves half a file under the requested name.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.answer import Answer

#: Fields of the GeoPackage layer written by :func:`write_regions_gpkg`.
GPKG_FIELDS: list[str] = ["id", "query", "label", "area", "unit", "score", "centroid_col",
                          "centroid_row", "question", "answer"]
GPKG_LAYER = "regions"


def polygonal(geom: Any) -> Any:
    """The polygonal part of a geometry (Polygon or MultiPolygon), ``None`` if empty."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        from shapely.geometry import MultiPolygon

        parts = []
        for g in geom.geoms:
            p = polygonal(g)
            if p is not None:
                parts.extend(p.geoms if p.geom_type == "MultiPolygon" else [p])
        return MultiPolygon(parts) if parts else None
    return None


def regions_geojson(answer: Answer) -> dict[str, Any]:
    """The answer's regions as an RFC 7946 FeatureCollection (WGS84 lon/lat).

    The regions' polygons are in the CRS named by ``answer.image["crs"]``; without one
    they are written as they are (pixel or local coordinates)."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import mapping

    crs = (answer.image or {}).get("crs")
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform if crs else None

    def lonlat(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(to_ll(xy[:, 0], xy[:, 1]))

    features = []
    for r in answer.regions:
        geom = r.polygon
        if geom is not None and to_ll is not None:
            geom = shapely.transform(geom, lonlat)
        features.append({"type": "Feature", "geometry": mapping(geom) if geom is not None else None,
                         "properties": r.summary()})
    return {"type": "FeatureCollection", "features": features}


def write_regions_geojson(answer: Answer, path: Path) -> Path:
    """Write :func:`regions_geojson` to ``path`` (whole or not at all)."""
    text = json.dumps(regions_geojson(answer))
    with _replacing(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_regions_gpkg(answer: Answer, path: Path, crs: str | None = None) -> Path:
    """Write the answer's polygonal regions as the GeoPackage layer :data:`GPKG_LAYER`
    (fields :data:`GPKG_FIELDS`) in ``crs`` (WKT or any pyproj string; default: the
    answer's image CRS), whole or not at all."""
    import shapely
    from pyogrio.raw import write
    from shapely.geometry import MultiPolygon

    if crs is None:
        crs = (answer.image or {}).get("crs")
    geoms, rows = [], []
    for region in answer.regions:
        poly = polygonal(region.polygon)
        if poly is None:
            continue
        multi = poly if poly.geom_type == "MultiPolygon" else MultiPolygon([poly])
        geoms.append(shapely.to_wkb(multi))
        col, row = region.centroid
        rows.append((int(region.id), str(region.query), str(region.label),
                     float(region.area_m2), str(region.area_unit), float(region.score),
                     float(col), float(row), answer.question or "", answer.answer or ""))
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(GPKG_FIELDS)
    kinds = [np.int64, object, object, np.float64, object, np.float64, np.float64,
             np.float64, object, object]
    field_data = [np.array(c, dtype=k) for c, k in zip(columns, kinds, strict=True)]
    geometry = np.empty(len(geoms), dtype=object)
    geometry[:] = geoms
    if crs is not None and not str(crs).lstrip().startswith(("PROJCS", "GEOGCS", "PROJCRS",
                                                             "GEOGCRS", "COMPD")):
        from pyproj import CRS

        crs = CRS.from_user_input(crs).to_wkt()
    with _replacing(Path(path)) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
        write(str(tmp), geometry, field_data, GPKG_FIELDS, crs=crs, driver="GPKG",
              layer=GPKG_LAYER, geometry_type="MultiPolygon")
    return Path(path)


class _replacing:
    """A temporary path beside ``path`` that replaces it on success and is removed on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix,
                                    dir=self.path.parent)
        os.close(fd)
        os.unlink(name)  # GDAL creates the file itself
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
