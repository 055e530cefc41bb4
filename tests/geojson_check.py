"""An RFC 7946 checker for the GeoJSON the project writes (tests only)."""

from __future__ import annotations

import json
import math
from typing import Any

from shapely.geometry import LinearRing


def _position(p: Any) -> None:
    assert isinstance(p, list) and len(p) in (2, 3), f"bad position {p!r}"
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in p), p
    assert -180 <= p[0] <= 180 and -90 <= p[1] <= 90, f"not lon/lat degrees: {p}"


def _ring(ring: list, exterior: bool) -> None:
    assert len(ring) >= 4, "a linear ring has at least four positions (3.1.6)"
    for p in ring:
        _position(p)
    assert ring[0] == ring[-1], "rings are closed (3.1.6)"
    ccw = LinearRing([tuple(p[:2]) for p in ring]).is_ccw
    assert ccw == exterior, "exterior rings counter-clockwise, holes clockwise (3.1.6)"


def _geometry(g: Any) -> None:
    assert g is None or isinstance(g, dict)
    if g is None:
        return
    kind, coords = g["type"], g.get("coordinates")
    if kind == "Point":
        _position(coords)
    elif kind == "Polygon":
        for i, ring in enumerate(coords):
            _ring(ring, exterior=i == 0)
    elif kind == "MultiPolygon":
        for poly in coords:
            for i, ring in enumerate(poly):
                _ring(ring, exterior=i == 0)
    else:
        raise AssertionError(f"unexpected geometry type {kind}")


def _bbox(b: Any) -> None:
    assert isinstance(b, list) and len(b) == 4, "2D bbox has 4 numbers (5)"
    assert b[1] <= b[3], "bbox south <= north (5)"


def check_rfc7946(fc: dict[str, Any]) -> None:
    """Assert ``fc`` is a valid RFC 7946 FeatureCollection (raises AssertionError)."""
    text = json.dumps(fc, allow_nan=False)  # NaN/Infinity are not JSON
    fc = json.loads(text)
    assert fc["type"] == "FeatureCollection"
    assert "crs" not in fc, "RFC 7946 removed the crs member (4)"
    assert isinstance(fc["features"], list)
    if "bbox" in fc:
        _bbox(fc["bbox"])
    for f in fc["features"]:
        assert f["type"] == "Feature"
        assert "geometry" in f and "properties" in f
        assert "crs" not in f
        if "id" in f:
            assert isinstance(f["id"], str | int | float)
        if "bbox" in f:
            _bbox(f["bbox"])
        _geometry(f["geometry"])
