"""Asking an index: top chips for a text query, as GeoJSON, or a density raster of a concept.

The query goes through the embedder that built the index (:class:`Searcher` refuses an
index whose model differs from the configured one). Scores are dot products: cosine
similarity for CLIP/GRAFT indexes, the fraction of the chip covered by the concept for
the spectral index. A query naming a concept the chips carry a measured attribute of
(buildings, roads, water, vegetation: :mod:`viper_rs.index.attributes`) is ranked by that
attribute, the score breaking ties; chips where it is unknown come after the chips that
hold some of it, and chips measured without it last.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, InputError
from viper_rs.index.attributes import BY_COLUMN, rank_attribute
from viper_rs.index.store import ChipIndex, Hit

log = logging.getLogger(__name__)

#: Density rasters larger than this many pixels get a coarser resolution.
MAX_DENSITY_PIXELS = 25_000_000
#: How a search ranks: by the measured attribute the query names, else by the embedding
#: (``auto``), or by the embedding always.
RANK_MODES = ("auto", "embedding")


@dataclass
class SearchResult:
    """Hits of one query with the notes on how it was scored."""

    query: str
    hits: list[Hit]
    notes: list[str] = field(default_factory=list)
    embedder: str = ""
    model_id: str = ""
    total: int = 0
    ms: float = 0.0
    #: The attribute column the hits are ranked by (None: by the embedding score).
    ranked_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"query": self.query, "embedder": self.embedder, "model_id": self.model_id,
                "chips_in_index": self.total, "ms": round(self.ms, 2), "notes": self.notes,
                "ranked_by": self.ranked_by, "hits": [h.to_dict() for h in self.hits]}

    def geojson(self) -> dict[str, Any]:
        """The hits as an RFC 7946 FeatureCollection of footprint polygons (WGS84)."""
        return hits_geojson(self.hits, {"query": self.query, "embedder": self.embedder,
                                        "model_id": self.model_id, "notes": self.notes,
                                        "ranked_by": self.ranked_by})


class Searcher:
    """An open index and its query embedder (built once, reused across queries)."""

    def __init__(self, index: ChipIndex | str | Path, settings: Settings | None = None,
                 embedder: Any = None) -> None:
        from viper_rs.index.embedders import build_chip_embedder

        self.index = index if isinstance(index, ChipIndex) else ChipIndex.open(index)
        meta = self.index.meta
        self.embedder = embedder or build_chip_embedder(meta.embedder, settings or Settings())
        if self.embedder.model_id != meta.model_id:
            raise ConfigError(
                f"{self.index.path} was built with {meta.model_id}, but the configured "
                f"weights give {self.embedder.model_id}; configure the same model"
            )

    def vector(self, query: str) -> tuple[np.ndarray, list[str]]:
        """The query's vector and notes (unknown concepts raise with the vocabulary)."""
        query = " ".join(str(query).split())
        if not query:
            raise InputError("the query is empty")
        return self.embedder.embed_text(query)

    def search(self, query: str, k: int = 20, exact: bool | None = None,
               bbox: tuple[float, float, float, float] | None = None,
               rank: str = "auto") -> SearchResult:
        """The ``k`` best chips for ``query`` (within ``bbox``, W,S,E,N degrees, if given).

        ``rank="auto"`` ranks by the measured attribute the query names, when the index has
        it (see the module docstring), else by the embedding; ``"embedding"`` always by
        the embedding."""
        import time

        t0 = time.perf_counter()
        if not 1 <= int(k) <= 10_000:
            raise InputError(f"k must be between 1 and 10000, got {k}")
        if rank not in RANK_MODES:
            raise InputError(f"rank must be one of {', '.join(RANK_MODES)}, got {rank!r}")
        v, notes = self.vector(query)
        meta = self.index.meta
        attr, why = rank_attribute(query, meta.embedder) if rank == "auto" else (None, [])
        notes = [*notes, *why]
        ranked_by = None
        if attr is not None and self.index.has_attributes:
            hits, counts = self.index.search_ranked(attr.column, v, k=int(k), exact=exact,
                                                    bbox=bbox)
            ranked_by = attr.column
            notes.append(f"ranked by the {attr.label} measured on each chip "
                         f"({_measured_by(hits, attr.concept)}); the {meta.embedder} "
                         "embedding's score breaks ties")
            notes.extend(_unknown_notes(hits, counts, attr.label, attr.concept, meta.embedder))
        else:
            if attr is not None:
                notes.append(self.index.outdated() or "")
            hits = self.index.search(v, k=int(k), exact=exact, bbox=bbox)
        return SearchResult(query=query, hits=hits, notes=[n for n in notes if n],
                            embedder=meta.embedder, model_id=meta.model_id,
                            total=len(self.index), ms=(time.perf_counter() - t0) * 1000,
                            ranked_by=ranked_by)

    def density(self, query: str, out: str | Path, resolution_m: float | None = None,
                png: bool = True, bbox: tuple[float, float, float, float] | None = None
                ) -> DensityMap:
        """Write the concept's score raster over the indexed region (GeoTIFF + PNG)."""
        v, notes = self.vector(query)
        return write_density(self.index, v, Path(out), query, resolution_m, png, notes, bbox)


def _measured_by(hits: list[Hit], concept: str) -> str:
    """Who measured ``concept`` on the hits: ``by buildingnet`` (several joined by "or")."""
    names = sorted({h.measured_by[concept] for h in hits if concept in h.measured_by})
    return ("by " + " or ".join(names)) if names else "where it could be measured"


def _unknown_notes(hits: list[Hit], counts: Any, label: str, concept: str,
                   embedder: str) -> list[str]:
    """Notes on the chips whose attribute is unknown: how many, why, where they rank."""
    if not counts.unknown:
        return []
    reasons: dict[str, int] = {}
    for h in hits:
        why = h.unknown.get(concept)
        if why:
            reasons[why] = reasons.get(why, 0) + 1
    listed = [h for h in hits if h.attributes.get(counts.column) is None]
    if counts.present or counts.absent:
        text = (f"{label} is unknown on {counts.unknown:,} of the chips searched; they rank "
                f"after the {counts.present:,} chips where it was measured above 0, by the "
                f"{embedder} embedding" + (f" ({len(listed)} of these hits)" if listed else ""))
    else:
        text = (f"{label} is unknown on every chip searched ({counts.unknown:,}): they are "
                f"ranked by the {embedder} embedding")
    if reasons:
        why = max(reasons, key=lambda r: reasons[r])
        text += f"; e.g. {why}"
    elif any(h.attributes.get(counts.column) is None and not h.unknown for h in hits):
        text += "; their chips were indexed without attributes (build the index again)"
    return [text]


def attribute_label(column: str | None) -> str:
    """What people call an attribute column ("" for None)."""
    return BY_COLUMN[column].label if column in BY_COLUMN else ""


# ---------------------------------------------------------------------------- GeoJSON
def footprint_polygon(corners: tuple[float, ...] | list[float]) -> Any:
    """Shapely polygon (lon/lat) of a chip's corners, counter-clockwise (RFC 7946)."""
    from shapely.geometry import Polygon
    from shapely.geometry.polygon import orient

    pts = [(float(corners[i]), float(corners[i + 1])) for i in range(0, 8, 2)]
    return orient(Polygon(pts), 1.0)


def hits_geojson(hits: list[Hit], properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """RFC 7946 FeatureCollection: one Polygon feature per hit, properties = the hit."""
    from shapely.geometry import mapping

    features = []
    for h in hits:
        geom = mapping(footprint_polygon(h.corners))
        geom = {"type": geom["type"],
                "coordinates": [[[round(x, 9), round(y, 9)] for x, y in ring]
                                for ring in geom["coordinates"]]}
        props = {k: v for k, v in h.to_dict().items() if k not in ("corners", "bbox")}
        props["score"] = round(float(h.score), 6)
        features.append({"type": "Feature", "id": h.id, "bbox": [round(b, 9) for b in h.bbox],
                         "geometry": geom, "properties": props})
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if hits:
        fc["bbox"] = [min(h.bbox[0] for h in hits), min(h.bbox[1] for h in hits),
                      max(h.bbox[2] for h in hits), max(h.bbox[3] for h in hits)]
    if properties:
        fc["properties"] = properties  # foreign member (RFC 7946 section 6.1)
    return fc


# ---------------------------------------------------------------------------- density
@dataclass
class DensityMap:
    """Where a density raster was written and what it holds."""

    tif: Path
    png: Path | None
    crs: str
    width: int
    height: int
    resolution: float
    chips: int
    min_score: float
    max_score: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def write_density(index: ChipIndex, vector: np.ndarray, out: Path, query: str = "",
                  resolution_m: float | None = None, png: bool = True,
                  notes: list[str] | None = None,
                  bbox: tuple[float, float, float, float] | None = None) -> DensityMap:
    """Mean chip score per cell over the indexed region (or the chips intersecting
    ``bbox``), as a float32 GeoTIFF (NaN = no chip) in the chips' CRS (EPSG:3857 when
    they have several) plus a colour PNG. A region so wide that its cells would be larger
    than a chip is refused with the extents of its sources (pass ``bbox``)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import MergeAlg
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp
    from shapely.geometry import Polygon

    from viper_rs.index.chips import metres_per_unit

    notes = list(notes or [])
    polys_ll: list[tuple[list[float], str, float]] = []
    extents: dict[str, list[float]] = {}
    for batch, vecs in index.footprints_and_vectors(bbox=bbox):
        scores = vecs @ vector.astype(np.float32)
        corners = batch.column("corners").to_pylist()
        crss = batch.column("crs").to_pylist()
        polys_ll.extend(zip(corners, crss, scores.tolist(), strict=True))
        for name, w, s, e, n in zip(*(batch.column(c).to_pylist() for c in
                                      ("source_name", "west", "south", "east", "north")),
                                    strict=True):
            box = extents.setdefault(name, [w, s, e, n])
            box[:] = [min(box[0], w), min(box[1], s), max(box[2], e), max(box[3], n)]
    if not polys_ll:
        raise InputError(f"{index.path}: no chips" + (f" in bbox {list(bbox)}" if bbox else ""))
    crs_names = {c for _, c, _ in polys_ll}
    target = next(iter(crs_names)) if len(crs_names) == 1 else "EPSG:3857"
    if len(crs_names) > 1:
        notes.append(f"chips in {len(crs_names)} CRSs: the map is in EPSG:3857")
    dst = CRS.from_user_input(target)
    unit = metres_per_unit(dst.to_string())
    if not math.isfinite(unit):
        target, dst, unit = "EPSG:3857", CRS.from_epsg(3857), 1.0
    lon = np.array([c[0::2] for c, _, _ in polys_ll], dtype=np.float64).ravel()
    lat = np.array([c[1::2] for c, _, _ in polys_ll], dtype=np.float64).ravel()
    xs, ys = warp("EPSG:4326", dst, lon.tolist(), lat.tolist())
    xs = np.asarray(xs).reshape(-1, 4)
    ys = np.asarray(ys).reshape(-1, 4)
    stride = index.meta.chip_m * (1.0 - index.meta.overlap)
    res_m = float(resolution_m) if resolution_m else max(stride / 2.0, 1e-6)
    if not (res_m > 0 and math.isfinite(res_m)):
        raise InputError(f"resolution must be a positive number of metres, got {resolution_m}")
    res = res_m / unit
    west, east, south, north = xs.min(), xs.max(), ys.min(), ys.max()
    width = max(1, math.ceil((east - west) / res))
    height = max(1, math.ceil((north - south) / res))
    if width * height > MAX_DENSITY_PIXELS:
        factor = math.sqrt(width * height / MAX_DENSITY_PIXELS)
        if res * factor * unit > index.meta.chip_m:
            listing = "; ".join(f"{name}: {','.join(f'{v:.4f}' for v in box)}"
                                for name, box in sorted(extents.items())[:12])
            raise InputError(
                f"the chips span {(east - west) * unit / 1000:,.0f} x "
                f"{(north - south) * unit / 1000:,.0f} km: one map of them would need cells "
                f"larger than a chip; pass --bbox W,S,E,N for one region (sources: {listing})"
            )
        res *= factor
        notes.append(f"resolution coarsened to {res * unit:.3g} m to stay under "
                     f"{MAX_DENSITY_PIXELS:,} pixels")
        width = max(1, math.ceil((east - west) / res))
        height = max(1, math.ceil((north - south) / res))
    transform = from_origin(west, north, res, res)
    geoms = [Polygon(list(zip(x, y, strict=True))) for x, y in zip(xs, ys, strict=True)]
    scores = [s for _, _, s in polys_ll]
    shape = (height, width)
    total = rasterize(zip(geoms, scores, strict=True), out_shape=shape, transform=transform,
                      fill=0.0, dtype="float32", merge_alg=MergeAlg.add, all_touched=False)
    count = rasterize(((g, 1.0) for g in geoms), out_shape=shape, transform=transform,
                      fill=0.0, dtype="float32", merge_alg=MergeAlg.add, all_touched=False)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        out = out.with_suffix(".tif")
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1,
               "dtype": "float32", "crs": dst, "transform": transform, "nodata": float("nan"),
               "compress": "deflate", "tiled": width >= 256 and height >= 256}
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(mean, 1)
        ds.update_tags(query=query, model_id=index.meta.model_id, embedder=index.meta.embedder,
                       score="mean dot product of the chips covering the cell")
        ds.set_band_description(1, f"score: {query}" if query else "score")
    finite = mean[np.isfinite(mean)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    png_path = _write_png(mean, out.with_suffix(".png"), lo, hi) if png else None
    return DensityMap(tif=out, png=png_path, crs=dst.to_string(), width=width, height=height,
                      resolution=res * unit, chips=len(polys_ll), min_score=lo, max_score=hi,
                      notes=notes)


#: Colour ramp of the PNG (dark blue -> teal -> yellow), low to high score.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                 dtype=np.float32)


def colorize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W, 4) uint8: the ramp over [lo, hi], NaN transparent."""
    ok = np.isfinite(values)
    t = np.where(ok, (values - lo) / (hi - lo) if hi > lo else 0.5, 0.0)
    t = np.clip(t, 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    rgb = _RAMP[i] * (1 - f) + _RAMP[i + 1] * f
    rgba = np.zeros((*values.shape, 4), np.uint8)
    rgba[..., :3] = (rgb + 0.5).astype(np.uint8)
    rgba[..., 3] = np.where(ok, 255, 0)
    return rgba


def _write_png(values: np.ndarray, path: Path, lo: float, hi: float) -> Path:
    from PIL import Image

    Image.fromarray(colorize(values, lo, hi), mode="RGBA").save(path)
    return path
