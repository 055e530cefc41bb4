"""The on-disk chip index: a LanceDB database with one row per chip (vector + footprint).

Layout of an index folder: ``chips.lance`` (the chips), ``skipped.lance`` (ids of chips
that were read but not indexed, e.g. mostly nodata, so re-runs do not read them again),
``viper_index.json`` (which embedder and chip grid made it; an index never mixes two) and
``overlays/`` (each source's low-resolution picture for maps, :mod:`viper_rs.index.overlays`).
Scores are dot products with the query vector (cosine for the unit CLIP/GRAFT vectors,
class fraction for the spectral vectors). Small indexes are searched exactly; from
``ANN_MIN_ROWS`` chips on an IVF-SQ index is built and searched with exact re-ranking.

Format 2 adds the chips' measured attributes (:mod:`viper_rs.index.attributes`: building,
road, water and vegetation cover, building count; NULL = unknown) and what measured them;
:meth:`ChipIndex.search_ranked` ranks by one of them. A format-1 index still opens and is
searched by its vectors; :meth:`ChipIndex.create` (every build) upgrades it in place: the
attribute columns are added empty and the build measures its chips.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viper_rs.core.errors import InputError
from viper_rs.index.attributes import (
    ATTRIBUTE_COLUMNS,
    ATTRIBUTES,
    COUNT,
    INFO_COLUMN,
    RECIPE_COLUMN,
    not_measured,
    parse_info,
)

# LanceDB logs "no existing dataset" as WARN when it creates a table; Ray's worker start
# (fork + exec) triggers lancedb's fork warning, harmless before an exec.
os.environ.setdefault("LANCEDB_LOG", "error")
warnings.filterwarnings("ignore", message="lancedb fork support is experimental",
                        category=RuntimeWarning)

log = logging.getLogger(__name__)

META_FILE = "viper_index.json"
TABLE = "chips"
SKIPPED = "skipped"
FORMAT_VERSION = 2
#: Older formats this version opens (searched by their vectors) and upgrades on a build.
LEGACY_VERSIONS = (1,)
#: Tables smaller than this are searched exactly (brute force is fast and exact there).
ANN_MIN_ROWS = 50_000


@dataclass
class IndexMeta:
    """What made an index: embedder, vector size and chip grid."""

    embedder: str
    model_id: str
    dim: int
    chip_m: float
    overlap: float
    min_valid: float
    dimensions: list[str] | None = None
    version: int = FORMAT_VERSION
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()))

    def same_recipe(self, other: IndexMeta) -> list[str]:
        """Fields that differ from ``other`` in what decides the vectors and chips."""
        keys = ("model_id", "dim", "chip_m", "overlap", "min_valid")
        return [f"{k}: index has {getattr(self, k)!r}, this run {getattr(other, k)!r}"
                for k in keys if getattr(self, k) != getattr(other, k)]


@dataclass
class Hit:
    """One search result: a chip, its score and where it is."""

    rank: int
    score: float
    id: str
    source: str
    source_name: str
    datetime: str | None
    crs: str
    window: tuple[int, int, int, int]
    bbox: tuple[float, float, float, float]
    corners: tuple[float, ...]
    white_point: float
    valid: float
    #: Measured attributes by column (None: unknown or not measured), the detector that
    #: measured each concept, and why each unknown concept is unknown.
    attributes: dict[str, float | int | None] = field(default_factory=dict)
    measured_by: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def center(self) -> tuple[float, float]:
        """Centre (lon, lat) of the footprint's corners."""
        c = self.corners
        return (sum(c[0::2]) / 4.0, sum(c[1::2]) / 4.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["center"] = list(self.center)
        for k in ("window", "bbox", "corners"):
            d[k] = list(d[k])
        return d


def attribute_fields() -> list[Any]:
    """The pyarrow fields of the attribute columns (format 2), nullable: NULL = unknown."""
    import pyarrow as pa

    fields = [pa.field(a.column, pa.int32() if a.kind == COUNT else pa.float32())
              for a in ATTRIBUTES]
    return [*fields, pa.field(RECIPE_COLUMN, pa.string()), pa.field(INFO_COLUMN, pa.string())]


def table_schema(dim: int) -> Any:
    """The pyarrow schema of the chips table: footprint columns, ``dim``-d vectors and the
    measured attributes."""
    import pyarrow as pa

    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("source", pa.string()),
        pa.field("source_name", pa.string()),
        pa.field("source_key", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("datetime", pa.string()),
        pa.field("crs", pa.string()),
        pa.field("col", pa.int32()),
        pa.field("row", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("west", pa.float64()),
        pa.field("south", pa.float64()),
        pa.field("east", pa.float64()),
        pa.field("north", pa.float64()),
        pa.field("corners", pa.list_(pa.float64(), 8)),
        pa.field("white_point", pa.float32()),
        pa.field("valid", pa.float32()),
        *attribute_fields(),
    ])


#: The chips table's columns other than the vector: what ``ChipIndex.add`` takes per row.
FOOTPRINT_COLUMNS = ("id", "source", "source_name", "source_key", "fingerprint", "datetime",
                     "crs", "col", "row", "width", "height", "west", "south", "east", "north",
                     "corners", "white_point", "valid")
#: The attribute columns a format-2 row holds besides its footprint.
ROW_ATTRIBUTE_COLUMNS = (*ATTRIBUTE_COLUMNS, RECIPE_COLUMN, INFO_COLUMN)


class ChipIndex:
    """A chip index folder; ``ChipIndex.open(path)`` or ``ChipIndex.create(path, meta)``."""

    def __init__(self, path: Path, meta: IndexMeta, db: Any) -> None:
        self.path = path
        self.meta = meta
        self._db = db
        self._has_ann: bool | None = None

    # ------------------------------------------------------------------ lifecycle
    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether ``path`` holds an index."""
        return (Path(path) / META_FILE).is_file()

    @classmethod
    def open(cls, path: str | Path) -> ChipIndex:
        """Open an existing index (clear error when ``path`` is not one)."""
        import lancedb

        p = Path(path)
        meta_file = p / META_FILE
        if not meta_file.is_file():
            raise InputError(
                f"{p}: not a viper-rs index (no {META_FILE}); build one with "
                f"`python -m viper_rs index build SOURCES --out {p}`"
            )
        from viper_rs.core.files import loads_json, read_small_text

        what = f"{meta_file}: index description"
        data = loads_json(read_small_text(meta_file, InputError, "index description",
                                          inside=p), InputError, what)
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            meta = IndexMeta(**data)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{meta_file}: unreadable index description ({exc})") from None
        if meta.version != FORMAT_VERSION and meta.version not in LEGACY_VERSIONS:
            raise InputError(f"{p}: index format {meta.version}, this viper-rs reads "
                             f"{FORMAT_VERSION}; rebuild it into a new --out folder")
        return cls(p, meta, lancedb.connect(str(p)))

    @property
    def has_attributes(self) -> bool:
        """Whether the chips table has the measured attribute columns (format 2)."""
        return self.meta.version >= 2

    def outdated(self) -> str | None:
        """Why this index lacks what this viper-rs searches by (None when it is current):
        a format-1 index has no chip attributes until a build upgrades it."""
        if self.has_attributes:
            return None
        return (f"this index (format {self.meta.version}) was built before chips carried "
                "measured attributes (building, road, water, vegetation cover): it is "
                "searched by its embeddings only; run the index build again (app: *Build / "
                "update index*) to add them")

    def upgrade(self) -> bool:
        """Bring a format-1 index to this format in place (attribute columns added empty:
        the next build measures its chips); False when it was current already."""
        if self.has_attributes:
            return False
        log.warning("%s: index format %d upgraded to %d: chip attribute columns added; "
                    "this build measures every chip's attributes (embeddings are kept)",
                    self.path, self.meta.version, FORMAT_VERSION)
        existing = set(self.table.schema.names)
        missing = [f for f in attribute_fields() if f.name not in existing]
        if missing:
            self.table.add_columns(missing)
        self.meta.version = FORMAT_VERSION
        (self.path / META_FILE).write_text(json.dumps(asdict(self.meta), indent=2))
        return True

    @classmethod
    def create(cls, path: str | Path, meta: IndexMeta) -> ChipIndex:
        """Open ``path`` for adding chips made by ``meta``'s recipe (created if new)."""
        import lancedb

        p = Path(path)
        if cls.exists(p):
            index = cls.open(p)
            diff = index.meta.same_recipe(meta)
            if diff:
                raise InputError(
                    f"{p} was built with another embedder or chip grid ({'; '.join(diff)}); "
                    "use the same settings or a new --out folder"
                )
            index.upgrade()
            return index
        if p.exists() and any(p.iterdir()):
            raise InputError(f"{p}: folder exists and is not a viper-rs index; choose a new --out")
        p.mkdir(parents=True, exist_ok=True)
        db = lancedb.connect(str(p))
        db.create_table(TABLE, schema=table_schema(meta.dim), mode="overwrite")
        import pyarrow as pa

        db.create_table(SKIPPED, schema=pa.schema([pa.field("id", pa.string()),
                                                   pa.field("reason", pa.string())]),
                        mode="overwrite")
        (p / META_FILE).write_text(json.dumps(asdict(meta), indent=2))
        return cls(p, meta, db)

    @property
    def table(self) -> Any:
        """The LanceDB chips table."""
        return self._db.open_table(TABLE)

    def __len__(self) -> int:
        return int(self.table.count_rows())

    # ------------------------------------------------------------------ writing
    def known_ids(self) -> set[str]:
        """Ids of chips already indexed or already skipped."""
        ids: set[str] = set()
        for name in (TABLE, SKIPPED):
            t = self._db.open_table(name)
            if t.count_rows():
                ids.update(_scan(t, ["id"]).read_all()["id"].to_pylist())
        return ids

    def indexed_counts(self) -> dict[tuple[str, str], int]:
        """Chips indexed per source version: ``(source_key, fingerprint) -> count``."""
        from collections import Counter

        counts: Counter[tuple[str, str]] = Counter()
        for batch in _scan(self.table, ["source_key", "fingerprint"]):
            counts.update(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(),
                              strict=True))
        return dict(counts)

    def add(self, rows: Sequence[dict[str, Any]], vectors: np.ndarray) -> None:
        """Append chips: footprint dicts with the :data:`FOOTPRINT_COLUMNS` keys and,
        when measured, the :data:`ROW_ATTRIBUTE_COLUMNS` (else stored as not measured)."""
        import pyarrow as pa

        if not rows:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(rows), self.meta.dim):
            raise ValueError(f"vectors {vectors.shape} do not match {len(rows)} rows of "
                             f"dim {self.meta.dim}")
        cols: dict[str, Any] = {k: [r[k] for r in rows] for k in FOOTPRINT_COLUMNS}
        empty = not_measured()
        for k in ROW_ATTRIBUTE_COLUMNS:
            cols[k] = [r.get(k, empty[k]) for r in rows]
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()),
                                                           self.meta.dim)
        schema = table_schema(self.meta.dim)
        self.table.add(pa.table({f.name: cols[f.name] for f in schema}, schema=schema))

    def unmeasured_ids(self, recipe: str) -> set[str]:
        """Ids of chips whose attributes were not measured by ``recipe`` (never measured,
        measured by other models or settings, or indexed before attributes existed)."""
        if not self.has_attributes or not len(self):
            return set()
        where = f"{RECIPE_COLUMN} IS NULL OR {RECIPE_COLUMN} != {_sql(recipe)}"
        return set(_scan(self.table, ["id"], where=where).read_all()["id"].to_pylist())

    def set_attributes(self, rows: Sequence[dict[str, Any]]) -> None:
        """Overwrite the attribute columns of existing chips (dicts with ``id`` and the
        :data:`ROW_ATTRIBUTE_COLUMNS`)."""
        import pyarrow as pa

        if not rows:
            return
        schema = pa.schema([pa.field("id", pa.string(), nullable=False), *attribute_fields()])
        data = pa.table({f.name: [r[f.name] for r in rows] for f in schema}, schema=schema)
        self.table.merge_insert("id").when_matched_update_all().execute(data)

    def add_skipped(self, items: Iterable[tuple[str, str]]) -> None:
        """Record chips that were read but not indexed (id, reason)."""
        import pyarrow as pa

        items = list(items)
        if items:
            self._db.open_table(SKIPPED).add(pa.table({"id": [i for i, _ in items],
                                                       "reason": [r for _, r in items]}))

    def forget_stale(self, source_key: str, fingerprint: str) -> int:
        """Delete chips of ``source_key`` made from another version of the file; returns
        how many."""
        t = self.table
        where = f"source_key = {_sql(source_key)} AND fingerprint != {_sql(fingerprint)}"
        n = int(t.count_rows(where))
        if n:
            t.delete(where)
            log.info("%s changed: %d stale chips removed", source_key, n)
        return n

    def compact(self) -> None:
        """Merge the small fragments appends leave behind (faster reads)."""
        try:
            self.table.optimize()
        except Exception as exc:  # noqa: BLE001 - optimisation is best effort
            log.debug("optimize failed: %s", exc)

    # ------------------------------------------------------------------ ANN
    def has_ann(self) -> bool:
        """Whether the vector column has an ANN index (looked up once per open index)."""
        if self._has_ann is None:
            self._has_ann = any("vector" in list(getattr(ix, "columns", []))
                                for ix in self.table.list_indices())
        return self._has_ann

    def build_ann(self, partitions: int | None = None) -> None:
        """Build (or rebuild) the ANN index on the vectors: IVF with 8-bit scalar
        quantisation, dot product (on 1M 512-d vectors it built 3x faster than IVF-PQ and
        had recall@20 0.91 against 0.68; see eval/bench_index.py)."""
        from lancedb.index import IvfSq

        n = len(self)
        if n < 256:
            raise InputError(f"{n} chips: too few for an ANN index (need 256)")
        parts = partitions or max(1, min(4096, int(np.sqrt(n))))
        self.table.create_index("vector", replace=True,
                                config=IvfSq(distance_type="dot", num_partitions=parts))
        self._has_ann = True

    # ------------------------------------------------------------------ reading
    def search(self, vector: np.ndarray, k: int = 20, exact: bool | None = None,
               nprobes: int = 32, refine: int = 10,
               bbox: tuple[float, float, float, float] | None = None,
               where: str | None = None) -> list[Hit]:
        """The ``k`` best chips for ``vector`` (highest dot product first).

        ``exact=None`` uses the ANN index when there is one; scores are always exact dot
        products (ANN candidates are re-ranked on their stored vectors by LanceDB). ``bbox`` (W, S, E,
        N degrees) keeps chips whose footprint intersects it; ``where`` is a further SQL
        filter on the chips' columns."""
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.meta.dim,):
            raise InputError(f"query vector has shape {vector.shape}, index dim {self.meta.dim}")
        k = max(1, int(k))
        q = self.table.search(vector).distance_type("dot").limit(k)
        clause = _and(bbox_filter(bbox) if bbox is not None else None, where)
        if clause:
            q = q.where(clause, prefilter=True)
        if exact or (exact is None and not self.has_ann()):
            q = q.bypass_vector_index()
        else:
            q = q.nprobes(nprobes).refine_factor(refine)
        rows = q.select([*self._columns(), "_distance"]).to_arrow().to_pylist()
        for r in rows:  # LanceDB's dot distance is 1 - dot, exact (brute force or refined)
            r["score"] = 1.0 - float(r["_distance"])
        rows.sort(key=lambda r: -r["score"])
        return [_hit(i + 1, r) for i, r in enumerate(rows)]

    def _columns(self) -> list[str]:
        """The columns a hit is made of."""
        return [*FOOTPRINT_COLUMNS, *(ROW_ATTRIBUTE_COLUMNS if self.has_attributes else ())]

    def search_ranked(self, column: str, vector: np.ndarray, k: int = 20,
                      exact: bool | None = None, nprobes: int = 32, refine: int = 10,
                      bbox: tuple[float, float, float, float] | None = None
                      ) -> tuple[list[Hit], RankCounts]:
        """The ``k`` chips with the highest measured ``column`` (an attribute), ties broken
        by the dot product with ``vector``; then, when fewer than ``k`` chips hold any of
        it, the chips where it is unknown, and last those measured without it, each by
        the dot product. Also how many chips of each kind the search saw."""
        if column not in ATTRIBUTE_COLUMNS or not self.has_attributes:
            raise InputError(f"the index has no attribute column {column!r}")
        k = max(1, int(k))
        box = bbox_filter(bbox) if bbox is not None else None
        column_values = _scan(self.table, [column], where=box).read_all()[column]
        known = column_values.drop_null().to_numpy(zero_copy_only=False)
        vals = np.asarray(known, dtype=np.float64)
        vals = vals[vals > 0]
        counts = RankCounts(column=column, present=int(vals.size),
                            unknown=int(column_values.null_count),
                            absent=int(len(known) - vals.size))
        hits: list[Hit] = []
        if vals.size:
            nth = vals.size - min(k, vals.size)  # the k-th largest value is the cut
            cut = float(np.partition(vals, nth)[nth])
            above = int((vals > cut).sum())
            if above:
                hits += self.search(vector, above, True, bbox=bbox, where=f"{column} > {cut!r}")
            hits += self.search(vector, k - above, exact, nprobes, refine, bbox,
                                where=f"{column} = {cut!r}")
            hits.sort(key=lambda h: (-float(h.attributes[column] or 0.0), -h.score))
        for tier in (f"{column} IS NULL", f"{column} <= 0"):
            if len(hits) < k:
                hits += self.search(vector, k - len(hits), exact, nprobes, refine, bbox,
                                    where=tier)
        hits = hits[:k]
        for i, h in enumerate(hits):
            h.rank = i + 1
        return hits, counts

    def footprints_and_vectors(
        self, batch_rows: int = 65_536, bbox: tuple[float, float, float, float] | None = None,
    ) -> Iterable[tuple[Any, np.ndarray]]:
        """Every chip (intersecting ``bbox``) as (pyarrow footprint batch, (n, dim) vectors)."""
        for batch in _scan(self.table, [*FOOTPRINT_COLUMNS, "vector"], batch_rows,
                           where=bbox_filter(bbox) if bbox else None):
            if not len(batch):
                continue
            vec = batch.column("vector")
            flat = vec.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            yield batch, flat.reshape(len(batch), self.meta.dim)

    def sources(self) -> list[str]:
        """Distinct source URIs in the index."""
        if not len(self):
            return []
        col = _scan(self.table, ["source"]).read_all()["source"]
        return sorted(set(col.to_pylist()))


@dataclass
class RankCounts:
    """What a ranked search saw: chips holding some of ``column``, chips where it is
    unknown (NULL: not measurable or not measured) and chips measured without it."""

    column: str
    present: int = 0
    unknown: int = 0
    absent: int = 0


def _and(*clauses: str | None) -> str | None:
    """SQL conjunction of the clauses given (None when there are none)."""
    parts = [f"({c})" for c in clauses if c]
    return " AND ".join(parts) if parts else None


def bbox_filter(bbox: tuple[float, float, float, float] | list[float]) -> str:
    """SQL filter: chip footprints that intersect ``bbox`` (W, S, E, N degrees)."""
    w, s, e, n = (float(v) for v in bbox)
    if not (w < e and s < n and all(np.isfinite([w, s, e, n]))):
        raise InputError(f"bbox must be W,S,E,N degrees with W<E and S<N, got {list(bbox)}")
    return f"east >= {w!r} AND west <= {e!r} AND north >= {s!r} AND south <= {n!r}"


def _sql(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def _scan(table: Any, columns: list[str], batch_rows: int = 65_536,
          where: str | None = None) -> Any:
    """A pyarrow RecordBatchReader over every row of ``table`` (these columns)."""
    q = table.search().select(columns)
    if where:
        q = q.where(where)
    return q.limit(None).to_batches(batch_rows)


def _hit(rank: int, r: dict[str, Any]) -> Hit:
    by, unknown = parse_info(r.get(INFO_COLUMN))
    return Hit(
        rank=rank, score=r["score"], id=r["id"], source=r["source"],
        source_name=r["source_name"], datetime=r["datetime"], crs=r["crs"],
        window=(r["col"], r["row"], r["width"], r["height"]),
        bbox=(r["west"], r["south"], r["east"], r["north"]), corners=tuple(r["corners"]),
        white_point=float(r["white_point"]), valid=float(r["valid"]),
        attributes={c: _plain(r.get(c)) for c in ATTRIBUTE_COLUMNS},
        measured_by=by, unknown=unknown,
    )


def _plain(v: Any) -> float | int | None:
    """A stored attribute as a Python number (float32 shares rounded to 6 digits)."""
    if v is None:
        return None
    return int(v) if isinstance(v, int) else round(float(v), 6)


