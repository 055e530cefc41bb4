"""``python -m eval.bench_index``: indexing throughput and search latency of the chip index.

1. Indexing: writes ``--scenes`` synthetic 1024 x 1024 px, 1 m scenes as GeoTIFFs and
   indexes them with the spectral embedder (128 m chips, 25% overlap) and the chip
   attributes (BuildingNet on every chip: 1 m is in its range), in this process (and once
   more without attributes, as before they existed), in 2 local processes and on a local
   Ray cluster (2 actors), each into a fresh index:
   once as ``--ray-address local`` does it (Ray started and stopped by the build) and
   once on a cluster started beforehand (``ray.init`` timed apart). Prints each build's
   total time, and chips/s of the embedding phase (the start of worker processes and
   Ray actors included, Ray's own start not) with its ratio to the in-process run.
2. Search: for each size in ``--sizes``, fills a ``ChipIndex`` with synthetic unit
   vectors (``--dim``; 1000 Gaussian clusters of Zipf-distributed sizes with noise,
   normalised: embeddings of real chips are clustered by land cover, a few covers
   dominating, not uniform on the sphere, where every neighbour is equally far) and
   times ``--queries`` queries (database vectors with a little noise, normalised) for
   the k = 20 best by dot product: numpy brute force on the vectors in RAM, LanceDB
   exact search, and ANN search (``ChipIndex.search``, refine factor 10, each
   ``--nprobes``) on each ``--ann`` index: ``build_ann`` is ``ChipIndex.build_ann``,
   the others (``IVF_PQ``, the index it built before, by default) are built with the
   same partitions and metric and another quantisation, for comparison. Also timed:
   the top 20 by a measured attribute (``ChipIndex.search_ranked``, exact, on a
   synthetic building cover: a share on 3 chips in 4, else unknown or 0).
   Recall@20 is the share of the exact top 20 an ANN search finds and ``score`` the
   mean score of its hits over the exact top 20's, averaged over the queries. Within
   a cluster the neighbours' scores are nearly tied (rank 20 and rank 100 differ by
   ~0.01), which makes recall@20 a hard test; ``score`` near 1 says the misses were
   as good as the chips they replace.
3. Search quality (``--data``, default ``../shared/data`` when present): indexes the whole
   folder as the app does (spectral embedder, 256 m chips, 25% overlap, chip attributes
   measured: buildings by BuildingNet where it covers the chip) and asks ``buildings``
   for the best 10 and 50 chips, ranked by the embedding alone (as before chip
   attributes) and by the measured building cover (``rank="auto"``). A hit is a true
   building chip when it lies in a labelled tile (``labeled/**/<tile>_truth.json``) whose
   human building footprints (``<tile>_buildings.tif``) cover at least
   :data:`BUILDING_MIN_SHARE` of the chip's window; labelled chips below it are misses,
   and chips of sources without labels (North Dakota prairie with its farmsteads, Napa,
   Rotterdam) are unjudged and count as misses too, so precision@k is a lower bound.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

K = 20
CLUSTERS = 1000
#: Rows per ``ChipIndex.add`` when filling the search benchmark's index.
ADD_CHUNK = 50_000
#: Spread of a vector around its cluster centre (per dimension, before normalising):
#: cosine to the centre is about 1 / sqrt(1 + dim * CLUSTER_NOISE**2) ~ 0.75 at dim 512.
CLUSTER_NOISE = 0.04
#: Spread of a query around the database vector it was made from.
QUERY_NOISE = 0.02
BACKENDS = ("in-process", "in-process, no attributes", "2 processes", "ray local",
            "ray running")
#: A labelled chip holds buildings when human footprints cover at least this share of it
#: (1% of a 76 m tile is 58 m2: one small house).
BUILDING_MIN_SHARE = 0.01
#: The query of the search-quality benchmark and the result depths it scores.
QUALITY_QUERY = "buildings"
QUALITY_K = (10, 50)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZES = (10_000, 100_000, 1_000_000)
NPROBES = (32, 8)
#: ANN indexes timed: what ``ChipIndex.build_ann`` builds, then alternatives: IVF with
#: 8-bit scalar quantisation, product quantisation (~8 dimensions per 8-bit, or 4-bit,
#: code), full vectors, HNSW graphs (8-bit SQ) inside the IVF partitions.
ANN_KINDS = ("build_ann", "IVF_PQ")
ANN_CHOICES = ("build_ann", "IVF_SQ", "IVF_PQ", "IVF_PQ4", "IVF_FLAT", "IVF_HNSW_SQ")


# ---------------------------------------------------------------------------- indexing
def write_scenes(folder: Path, n: int, size: int = 1024) -> list[Path]:
    """``n`` synthetic scenes (``size`` px at 1 m) as GeoTIFFs in ``folder``."""
    from viper_rs.core.raster_write import write_geotiff
    from viper_rs.synthetic import make_scene

    return [write_geotiff(make_scene(seed, size=size, gsd=1.0).image,
                          folder / f"scene_{seed:03d}.tif") for seed in range(n)]


def _say(msg: str) -> None:
    """Progress on stderr (the default run takes minutes)."""
    print(f"[bench_index {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def warm_up() -> None:
    """Pay this process's one-off costs (imports, first class maps) before any timing."""
    import lancedb  # noqa: F401 - after viper_rs.index, which sets its log level

    from viper_rs.core.geo import GeoImage
    from viper_rs.index.embedders import build_chip_embedder

    rng = np.random.default_rng(0)
    image = GeoImage.from_array(rng.integers(0, 255, (4, 64, 64), dtype=np.uint8),
                                "R,G,B,NIR", gsd=1.0)
    build_chip_embedder("spectral").embed([image])


def bench_build(folder: Path, work: Path, backends: tuple[str, ...] = BACKENDS,
                chip_m: float = 128.0) -> dict[str, Any]:
    """Index ``folder`` with each backend into a fresh index under ``work``.

    ``ray local`` is what ``--ray-address local`` does (``build_index`` starts Ray and
    stops it); ``ray running`` joins a local cluster this function started first (timed
    as ``ray_init_s``), as a long-lived service or ``--ray-address auto`` would."""
    from viper_rs.index import ChipGrid, build_index

    warm_up()
    grid = ChipGrid(chip_m=chip_m, overlap=0.25)
    params = {"in-process": (1, None), "in-process, no attributes": (1, None),
              "2 processes": (2, None), "ray local": (2, "local"), "ray running": (2, "local")}
    runs = []
    for i, backend in enumerate(backends):
        workers, address = params[backend]
        attributes = "no attributes" not in backend
        _say(f"indexing: {backend}")
        init_s = _start_ray(workers) if backend == "ray running" else None
        try:
            t0 = time.perf_counter()
            r = build_index([folder], work / f"index_{i}", embedder="spectral", grid=grid,
                            workers=workers, ray_address=address, progress=False,
                            attributes=attributes)
            seconds = time.perf_counter() - t0
        finally:
            if init_s is not None:
                import ray

                ray.shutdown()
        runs.append({"backend": backend, "workers": workers, "attributes": attributes,
                     "chips": r.chips,
                     "indexed": r.indexed, "empty": r.empty, "failed": len(r.failed),
                     "seconds": round(seconds, 2), "embed_seconds": round(r.embed_seconds, 2),
                     "chips_per_s": round(r.chips_per_s, 1), "ray_init_s": init_s})
    base = next((r["chips_per_s"] for r in runs if r["backend"] == "in-process"), None)
    for r in runs:
        r["vs_in_process"] = round(r["chips_per_s"] / base, 2) if base else None
    return {"chip_m": chip_m, "overlap": 0.25, "embedder": "spectral", "runs": runs}


# ---------------------------------------------------------------------------- search quality
def labelled_masks(data: Path) -> dict[str, Path]:
    """Resolved image path -> building footprint mask of every labelled tile under
    ``data`` (``<tile>_truth.json`` beside ``<tile>.tif`` and ``<tile>_buildings.tif``)."""
    out = {}
    for truth in sorted(data.rglob("*_truth.json")):
        tile = truth.name[: -len("_truth.json")]
        image, mask = truth.with_name(f"{tile}.tif"), truth.with_name(f"{tile}_buildings.tif")
        if image.is_file() and mask.is_file():
            out[str(image.resolve())] = mask
    return out


def footprint_share(mask: Path, window: tuple[int, int, int, int]) -> float:
    """Share of ``window`` (col, row, width, height of the image grid) that the labelled
    footprints cover."""
    import rasterio
    from rasterio.windows import Window

    col, row, w, h = window
    with rasterio.open(mask) as ds:
        data = ds.read(1, window=Window(col, row, w, h), boundless=True, fill_value=0)
    return float((data > 0).mean()) if data.size else 0.0


def judge(hits: list[Any], masks: dict[str, Path]) -> list[dict[str, Any]]:
    """Per hit: source, the footprint share of a labelled chip (None: unlabelled), whether
    it is a true building chip, and the measured building cover."""
    out = []
    for h in hits:
        mask = masks.get(str(Path(h.source).resolve()))
        share = footprint_share(mask, h.window) if mask is not None else None
        out.append({"rank": h.rank, "source": h.source_name, "truth_share": share,
                    "true": share is not None and share >= BUILDING_MIN_SHARE,
                    "building_share": h.attributes.get("building_share")})
    return out


def precision(judged: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Precision@k (unjudged hits count as misses), and how many of the k were judged."""
    top = judged[:k]
    return {"k": k, "precision": round(sum(j["true"] for j in top) / k, 3),
            "true": sum(j["true"] for j in top),
            "unjudged": sum(j["truth_share"] is None for j in top)}


def run_quality(data: Path, work: Path | None = None, ks: tuple[int, ...] = QUALITY_K,
                chip_m: float = 256.0) -> dict[str, Any]:
    """Index ``data`` as the app does and score ``buildings`` before (embedding) and after
    (measured building cover) against the labelled tiles."""
    from viper_rs.index import ChipGrid, Searcher, build_index

    masks = labelled_masks(data)
    out: dict[str, Any] = {"data": str(data), "query": QUALITY_QUERY, "labelled_tiles": len(masks),
                           "min_share": BUILDING_MIN_SHARE}
    with tempfile.TemporaryDirectory(prefix="bench_index_q_", dir=work) as tmp:
        _say(f"search quality: indexing {data}")
        t0 = time.perf_counter()
        r = build_index([data], Path(tmp) / "index", embedder="spectral",
                        grid=ChipGrid(chip_m, 0.25), progress=False, overlays=False)
        out["build"] = {"chips": r.total_rows, "seconds": round(time.perf_counter() - t0, 1),
                        "chips_per_s": round(r.chips_per_s, 1), "unknown": r.unknown}
        searcher = Searcher(Path(tmp) / "index")
        out["labelled_chips"] = {"holding": 0, "free": 0}
        indexed = set()
        for batch, _ in searcher.index.footprints_and_vectors():
            for src, c, rw, w, h in zip(*(batch.column(n).to_pylist() for n in
                                          ("source", "col", "row", "width", "height")),
                                        strict=True):
                mask = masks.get(str(Path(src).resolve()))
                if mask is not None:
                    indexed.add(src)
                    true = footprint_share(mask, (c, rw, w, h)) >= BUILDING_MIN_SHARE
                    out["labelled_chips"]["holding" if true else "free"] += 1
        out["labelled_indexed"] = len(indexed)
        for rank in ("embedding", "auto"):
            res = searcher.search(QUALITY_QUERY, k=max(ks), rank=rank)
            judged = judge(res.hits, masks)
            out[rank] = {"ranked_by": res.ranked_by or "embedding",
                         "precision": [precision(judged, k) for k in ks],
                         "top10": [f"{j['source']}" for j in judged[:10]], "hits": judged}
    return out


def _start_ray(cpus: int) -> float:
    """Start a local Ray cluster as ``build_index`` would; seconds it took."""
    from viper_rs.index.build import connect_ray

    t0 = time.perf_counter()
    connect_ray("local", num_cpus=cpus)
    return round(time.perf_counter() - t0, 2)


def run_indexing(scenes: int = 6, size: int = 1024, backends: tuple[str, ...] = BACKENDS,
                 chip_m: float = 128.0) -> dict[str, Any]:
    """Write the scenes and index them with every backend."""
    with tempfile.TemporaryDirectory(prefix="bench_index_") as tmp:
        folder = Path(tmp) / "scenes"
        t0 = time.perf_counter()
        write_scenes(folder, scenes, size)
        out: dict[str, Any] = {"scenes": scenes, "scene_px": size, "gsd_m": 1.0,
                               "write_scenes_s": round(time.perf_counter() - t0, 2)}
        out.update(bench_build(folder, Path(tmp), backends, chip_m))
    return out


# ---------------------------------------------------------------------------- search
def clustered_vectors(n: int, dim: int, clusters: int = CLUSTERS, seed: int = 0,
                      chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 unit vectors around ``clusters`` random unit centres.

    Cluster sizes follow Zipf's law (the k-th largest holds a share ~ 1/k: 13% of the
    vectors in the largest of 1000), as land cover does: a query in a large cluster has
    many near-equal neighbours spread over many IVF partitions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    share = 1.0 / np.arange(1, clusters + 1)
    share /= share.sum()
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        block = centres[rng.choice(clusters, m, p=share)]
        block += CLUSTER_NOISE * rng.standard_normal((m, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[i:i + m] = block
    return out


def query_vectors(vectors: np.ndarray, q: int, seed: int = 1) -> np.ndarray:
    """``q`` unit queries: random database vectors plus a little noise."""
    rng = np.random.default_rng(seed)
    base = vectors[rng.choice(len(vectors), q, replace=False)]
    out = base + QUERY_NOISE * rng.standard_normal(base.shape, dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _dummy_rows(start: int, n: int) -> list[dict[str, Any]]:
    """Footprint rows (every ``ChipIndex.add`` key) for ids ``start .. start + n - 1``."""
    import pyarrow as pa

    from viper_rs.index.store import FOOTPRINT_COLUMNS, table_schema

    known = {"source": "/bench/synthetic.tif", "source_name": "synthetic.tif",
             "source_key": "/bench/synthetic.tif", "datetime": None, "crs": "EPSG:32631",
             "width": 128, "height": 128, "west": 2.0, "south": 48.0, "east": 2.001,
             "north": 48.001, "corners": [2.0, 48.001, 2.001, 48.001, 2.001, 48.0, 2.0, 48.0],
             "white_point": 255.0, "valid": 1.0}
    schema = table_schema(8)
    base: dict[str, Any] = {}
    for k in FOOTPRINT_COLUMNS:  # columns added later get a value of their type
        t = schema.field(k).type
        base[k] = known.get(k, "x" if pa.types.is_string(t) else
                            0.0 if pa.types.is_floating(t) else 0 if pa.types.is_integer(t)
                            else None)
    # measured building cover: a share for 3 chips in 4, unknown (None) or 0 for the rest
    shares = [None if i % 8 == 3 else 0.0 if i % 8 == 7 else ((i * 2654435761) % 1000) / 1000
              for i in range(start, start + n)]
    return [{**base, "id": str(i), "building_share": share, "attr_recipe": "bench"}
            for i, share in zip(range(start, start + n), shares, strict=True)]


def fill_index(path: Path, vectors: np.ndarray, chunk: int = ADD_CHUNK) -> tuple[Any, dict]:
    """A ``ChipIndex`` at ``path`` holding ``vectors`` (id = row number); fill timings."""
    from viper_rs.index import ChipIndex, IndexMeta

    meta = IndexMeta(embedder="bench", model_id="synthetic-clusters", dim=vectors.shape[1],
                     chip_m=128.0, overlap=0.25, min_valid=0.5)
    index = ChipIndex.create(path, meta)
    t_rows = t_add = 0.0
    for i in range(0, len(vectors), chunk):
        t0 = time.perf_counter()
        rows = _dummy_rows(i, min(chunk, len(vectors) - i))
        t1 = time.perf_counter()
        index.add(rows, vectors[i:i + len(rows)])
        t_rows += t1 - t0
        t_add += time.perf_counter() - t1
    t0 = time.perf_counter()
    index.compact()
    return index, {"add_s": round(t_add, 2), "make_rows_s": round(t_rows, 2),
                   "add_rows_per_s": round(len(vectors) / t_add) if t_add else None,
                   "compact_s": round(time.perf_counter() - t0, 2)}


def numpy_top_k(vectors: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    """Row numbers of the ``k`` highest dot products, best first (brute force)."""
    scores = vectors @ q
    top = np.argpartition(scores, -k)[-k:]
    return top[np.argsort(-scores[top])]


def _lat(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def _ratio(slow: dict[str, float], fast: dict[str, float]) -> float | None:
    """How many times faster ``fast`` is than ``slow`` (median latencies)."""
    return float(f"{slow['p50_ms'] / fast['p50_ms']:.3g}") if fast["p50_ms"] > 0 else None


def _timed(fn: Any, queries: np.ndarray) -> tuple[list[Any], dict[str, float]]:
    fn(queries[0])  # warm-up: opens files, loads the index into the cache
    results, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t0)
    return results, _lat(times)


def _quality(found: list[list[Any]], truth: list[np.ndarray],
             best: list[float]) -> dict[str, float]:
    """``recall``: share of the exact top k found (mean over queries); ``score``: mean
    score of the hits found over the exact top k's (1.0 when the misses are ties)."""
    recall = [len({int(h.id) for h in hits} & set(t.tolist())) / len(t)
              for hits, t in zip(found, truth, strict=True)]
    score = [float(np.mean([h.score for h in hits])) / b if hits and b else 0.0
             for hits, b in zip(found, best, strict=True)]
    return {"recall": round(statistics.fmean(recall), 4),
            "score": round(statistics.fmean(score), 4)}


def build_ann(index: Any, kind: str, partitions: int) -> str:
    """Build the ANN index ``kind`` on ``index``'s vectors; its label.

    ``build_ann`` is ``ChipIndex.build_ann`` (labelled with the index type it made); the
    others are alternatives with the same partitions and metric, for comparison."""
    from lancedb.index import IvfFlat, IvfHnswSq, IvfPq, IvfSq

    if kind == "build_ann":
        index.build_ann(partitions=partitions)
        types = [str(ix.index_type) for ix in index.table.list_indices()
                 if "vector" in list(ix.columns)]
        return f"build_ann={types[0] if types else '?'}"
    dim = index.meta.dim
    subs = next(n for n in range(max(1, dim // 8), 0, -1) if dim % n == 0)  # ~8 dims each
    configs = {
        "IVF_SQ": lambda: IvfSq(distance_type="dot", num_partitions=partitions),
        "IVF_PQ": lambda: IvfPq(distance_type="dot", num_partitions=partitions,
                                num_sub_vectors=subs),
        "IVF_PQ4": lambda: IvfPq(distance_type="dot", num_partitions=partitions,
                                 num_sub_vectors=subs, num_bits=4),
        "IVF_FLAT": lambda: IvfFlat(distance_type="dot", num_partitions=partitions),
        "IVF_HNSW_SQ": lambda: IvfHnswSq(distance_type="dot", num_partitions=partitions),
    }
    index.table.create_index("vector", replace=True, config=configs[kind]())
    return kind


def bench_size(n: int, dim: int = 512, queries: int = 50,
               nprobes: tuple[int, ...] = NPROBES, ann: tuple[str, ...] = ANN_KINDS,
               work: Path | None = None) -> dict[str, Any]:
    """Fill an index of ``n`` vectors, then time brute force, exact and ANN searches."""
    t0 = time.perf_counter()
    vectors = clustered_vectors(n, dim)
    qs = query_vectors(vectors, queries)
    out: dict[str, Any] = {"n": n, "dim": dim, "queries": queries,
                           "make_vectors_s": round(time.perf_counter() - t0, 2)}
    with tempfile.TemporaryDirectory(prefix="bench_index_", dir=work) as tmp:
        _say(f"search: filling an index with {n:,} vectors")
        index, fill = fill_index(Path(tmp) / "index", vectors)
        out["fill"] = fill
        truth, out["numpy"] = _timed(lambda q: numpy_top_k(vectors, q), qs)
        best = [float(np.mean(vectors[t] @ q)) for t, q in zip(truth, qs, strict=True)]
        exact, out["lance_exact"] = _timed(lambda q: index.search(q, K, exact=True), qs)
        # a query naming a measured attribute: top 20 by building cover, ties by the vector
        _, out["lance_ranked"] = _timed(
            lambda q: index.search_ranked("building_share", q, K, exact=True)[0], qs)
        out["lance_exact"].update(_quality(exact, truth, best))  # sanity check: 1.0
        _prune(index)  # delete the fragments compaction replaced
        out["table_mb"] = round(_mb(Path(tmp)), 1)
        out["partitions"] = max(1, min(4096, int(np.sqrt(n))))  # as ChipIndex.build_ann
        out["ann"] = []
        for kind in ann:
            _say(f"search: {n:,} vectors, building {kind}")
            t0 = time.perf_counter()
            label = build_ann(index, kind, out["partitions"])
            built = round(time.perf_counter() - t0, 2)
            size = _index_mb(index)
            for p in nprobes:
                found, lat = _timed(lambda q, p=p: index.search(q, K, nprobes=p), qs)
                out["ann"].append({"kind": label, "build_s": built, "index_mb": size,
                                   "nprobes": p, "refine": 10, **lat,
                                   **_quality(found, truth, best),
                                   "speedup_vs_numpy": _ratio(out["numpy"], lat),
                                   "speedup_vs_exact": _ratio(out["lance_exact"], lat)})
    return out


def _prune(index: Any) -> None:
    """Delete the files of every table version but the latest (true disk size)."""
    with warnings.catch_warnings():  # "removes every version": what it is meant to do
        warnings.simplefilter("ignore", UserWarning)
        index.table.optimize(cleanup_older_than=timedelta(0))


def _mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def _index_mb(index: Any) -> float | None:
    """Size of the vector index, as LanceDB reports it."""
    for ix in index.table.list_indices():
        if "vector" in list(ix.columns) and getattr(ix, "size_bytes", None):
            return round(ix.size_bytes / 2**20, 1)
    return None


def run_search(sizes: tuple[int, ...] = SIZES, dim: int = 512, queries: int = 50,
               nprobes: tuple[int, ...] = NPROBES,
               ann: tuple[str, ...] = ANN_KINDS) -> list[dict[str, Any]]:
    """:func:`bench_size` for every size (each size's 2 GB per million vectors freed
    before the next)."""
    out = []
    for n in sizes:
        out.append(bench_size(n, dim, queries, nprobes, ann))
        gc.collect()
    return out


# ---------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    """CPU count and model, Python, LanceDB and Ray versions."""
    import viper_rs.index.store  # noqa: F401 - sets LanceDB's log level before it loads
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpus": os.cpu_count(), "cpu": cpu,
                            "python": platform.python_version(),
                            "load_before": [round(v, 2) for v in os.getloadavg()]}
    for mod in ("lancedb", "ray"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def print_report(r: dict[str, Any]) -> None:
    """The figures as tables."""
    m = r["machine"]
    print(f"machine: {m['cpus']} CPUs ({m['cpu']}); lancedb {m['lancedb']}, ray {m['ray']}; "
          f"load average before {m['load_before']}"
          + (f", after {m['load_after']}" if "load_after" in m else ""))
    ix = r.get("indexing")
    if ix:
        print(f"\nindexing: {ix['scenes']} scenes of {ix['scene_px']} px at 1 m, "
              f"{ix['embedder']} embedder, {ix['chip_m']:g} m chips, "
              f"{ix['overlap']:.0%} overlap")
        print(f"{'backend':<26} {'chips':>6} {'total s':>8} {'embed s':>8} {'chips/s':>8} "
              f"{'x in-proc':>9}")
        for run in ix["runs"]:
            extra = (f"  (+ {run['ray_init_s']} s ray.init before)" if run.get("ray_init_s")
                     else "  (total: Ray start + stop included)" if run["backend"] == "ray local"
                     else "")
            print(f"{run['backend']:<26} {run['chips']:>6} {run['seconds']:>8} "
                  f"{run['embed_seconds']:>8} {run['chips_per_s']:>8} "
                  f"{run['vs_in_process']:>9}{extra}")
    q = r.get("quality")
    if q:
        b = q["build"]
        print(f"\nsearch quality: {q['query']!r} on {q['data']} ({b['chips']} chips, built in "
              f"{b['seconds']} s = {b['chips_per_s']} chips/s with attributes); labelled: "
              f"{q['labelled_tiles']} tiles, {q.get('labelled_indexed', '?')} of them indexed "
              f"(3+ bands and a CRS), {q['labelled_chips']['holding']} chips holding "
              f"buildings (footprints >= {q['min_share']:.0%} of the chip), "
              f"{q['labelled_chips']['free']} without")
        for why, n in sorted(b["unknown"].items(), key=lambda kv: -kv[1])[:3]:
            print(f"  building cover unknown on {n} chips: {why}")
        print(f"{'ranked by':<26} " + " ".join(f"{'P@' + str(p['k']):>6} {'unjudged':>8}"
                                               for p in q["auto"]["precision"]))
        for key, title in (("embedding", "embedding (before)"), ("auto", "measured cover (after)")):
            row = q[key]
            cells = " ".join(f"{p['precision']:>6} {p['unjudged']:>8}" for p in row["precision"])
            print(f"{title:<26} {cells}   top 10: {_places(row['top10'])}")
    rows = r.get("search")
    if rows:
        s0 = rows[0]
        print(f"\nsearch: top {K} by dot product, dim {s0['dim']}, {s0['queries']} queries, "
              f"{CLUSTERS} Zipf-sized clusters; latency p50 / p95 ms")
        print(f"{'vectors':>9} {'add s':>7} {'rows/s':>8} {'compact s':>9} {'MB':>6} "
              f"{'numpy brute force':>17} {'LanceDB exact':>15} {'x numpy':>7} "
              f"{'by building cover':>17}")
        for s in rows:
            f = s["fill"]
            ranked = _pair(s["lance_ranked"]) if "lance_ranked" in s else "-"
            print(f"{s['n']:>9,} {f['add_s']:>7} {f['add_rows_per_s'] or '-':>8} "
                  f"{f['compact_s']:>9} {s['table_mb']:>6.0f} {_pair(s['numpy']):>17} "
                  f"{_pair(s['lance_exact']):>15} "
                  f"{_ratio(s['lance_exact'], s['numpy']) or '-':>7} {ranked:>17}")
        print("\nANN (ChipIndex.search, refine 10; partitions = sqrt(n)); 'score' = mean score "
              "of the hits / the exact top 20's; 'x' = speed-up of the p50")
        print(f"{'vectors':>9} {'index':<15} {'build s':>7} {'MB':>5} {'nprobes':>7} "
              f"{'latency':>15} {'recall@20':>9} {'score':>6} {'x numpy':>7} {'x exact':>7}")
        for s in rows:
            for a in s["ann"]:
                mb = f"{a['index_mb']:.0f}" if a["index_mb"] is not None else "-"
                print(f"{s['n']:>9,} {a['kind']:<15} {a['build_s']:>7} {mb:>5} "
                      f"{a['nprobes']:>7} {_pair(a):>15} {a['recall']:>9} {a['score']:>6} "
                      f"{a['speedup_vs_numpy'] or '-':>7} {a['speedup_vs_exact'] or '-':>7}")


def _place(name: str) -> str:
    """A source file's name without its extension and trailing numbers (tile indices,
    dates): ``kampala_ug_309606_261636.tif`` -> ``kampala_ug``."""
    import re

    stem = name.rsplit(".", 1)[0]
    return re.sub(r"(_\d+)+$", "", stem) or stem


def _places(names: list[str]) -> str:
    """``kampala_ug x3, nairobi_ke x6``: the places of a result list, in order of first hit."""
    counts: dict[str, int] = {}
    for n in names:
        counts[_place(n)] = counts.get(_place(n), 0) + 1
    return ", ".join(f"{p} x{c}" for p, c in counts.items())


def _pair(lat: dict[str, float]) -> str:
    return f"{lat['p50_ms']:.1f} / {lat['p95_ms']:.1f}" if lat["p50_ms"] >= 1 else \
        f"{lat['p50_ms']:.2f} / {lat['p95_ms']:.2f}"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in text.split(",") if v.strip())


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(v.strip() if v.strip() == "build_ann" else v.strip().upper()
                  for v in text.split(",") if v.strip())
    bad = [k for k in kinds if k not in ANN_CHOICES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown ANN index {bad}; choose from "
                                         f"{', '.join(ANN_CHOICES)}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m eval.bench_index", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_ints, default=SIZES,
                   help="index sizes for the search benchmark (comma-separated)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--nprobes", type=_ints, default=NPROBES,
                   help="ANN nprobes settings to time (comma-separated)")
    p.add_argument("--ann", type=_kinds, default=ANN_KINDS,
                   help=f"ANN indexes to compare, of {','.join(ANN_CHOICES)} "
                        f"(default {','.join(ANN_KINDS)})")
    p.add_argument("--scenes", type=int, default=6, help="1024 px scenes to index")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-indexing", action="store_true")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--data", type=Path, default=DATA,
                   help="folder for the search-quality benchmark (default ../shared/data)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    backends = tuple(b for b in BACKENDS if not (args.skip_ray and b.startswith("ray")))
    r: dict[str, Any] = {"machine": machine()}
    if not args.skip_indexing:
        r["indexing"] = run_indexing(args.scenes, backends=backends)
    if not args.skip_quality:
        if args.data.is_dir():
            r["quality"] = run_quality(args.data)
        else:
            _say(f"search quality skipped: {args.data} is absent")
    if not args.skip_search:
        r["search"] = run_search(args.sizes, args.dim, args.queries, args.nprobes, args.ann)
    r["machine"]["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print_report(r)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
