"""Smoke test of ``eval.bench_index`` at tiny sizes: structure of the figures, not speed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval import bench_index as bench


def test_vectors_are_unit_and_clustered():
    v = bench.clustered_vectors(3000, 32, clusters=10, chunk=1000)
    assert v.shape == (3000, 32) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    q = bench.query_vectors(v, 5)
    assert q.shape == (5, 32) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    # each query's best match scores far above a random vector's typical score
    top = bench.numpy_top_k(v, q[0], k=20)
    scores = v[top] @ q[0]
    assert np.all(np.diff(scores) <= 0) and scores[0] > 0.9


def test_indexing_in_process(tmp_path):
    folder = tmp_path / "scenes"
    assert len(bench.write_scenes(folder, 2, size=256)) == 2
    r = bench.bench_build(folder, tmp_path, backends=("in-process",))
    (run,) = r["runs"]
    assert run["backend"] == "in-process" and run["chips"] == 18  # 3 x 3 chips a scene
    assert run["indexed"] + run["empty"] + run["failed"] == run["chips"]
    assert run["chips_per_s"] > 0 and run["vs_in_process"] == 1.0


def test_search_small_index(tmp_path):
    s = bench.bench_size(2000, dim=32, queries=5, nprobes=(4, 2), ann=("build_ann", "IVF_PQ"),
                         work=tmp_path)
    assert s["n"] == 2000 and s["fill"]["add_s"] >= 0
    assert s["lance_exact"]["recall"] == 1.0  # LanceDB's exact top 20 = numpy's
    assert s["lance_exact"]["score"] == pytest.approx(1.0, abs=1e-3)
    kinds = [(a["kind"], a["nprobes"]) for a in s["ann"]]
    assert kinds[0][0].startswith("build_ann=Ivf")  # labelled with the type it built
    assert kinds == [(kinds[0][0], 4), (kinds[0][0], 2), ("IVF_PQ", 4), ("IVF_PQ", 2)]
    for lat in (s["numpy"], s["lance_exact"], *s["ann"]):
        assert 0 < lat["p50_ms"] <= lat["p95_ms"]
    for a in s["ann"]:
        assert 0.0 <= a["recall"] <= 1.0 and 0.0 < a["score"] <= 1.0 + 1e-3
        assert a["speedup_vs_numpy"] > 0
    json.dumps(s)


def test_ann_kinds_are_checked():
    assert bench._kinds("build_ann, ivf_pq") == ("build_ann", "IVF_PQ")
    with pytest.raises(Exception, match="unknown ANN index"):
        bench._kinds("HNSW")


def test_report_prints_tables(capsys):
    lat = {"p50_ms": 1.0, "p95_ms": 2.0}
    r = {
        "machine": bench.machine(),
        "indexing": {"scenes": 2, "scene_px": 256, "embedder": "spectral", "chip_m": 128.0,
                     "overlap": 0.25,
                     "runs": [{"backend": "ray running", "chips": 18, "seconds": 5.0,
                               "embed_seconds": 4.0, "chips_per_s": 4.5,
                               "vs_in_process": 0.5, "ray_init_s": 3.0}]},
        "search": [{"n": 2000, "dim": 32, "queries": 5, "table_mb": 1.0,
                    "fill": {"add_s": 0.1, "add_rows_per_s": 20000, "compact_s": 0.1},
                    "numpy": lat, "lance_exact": lat,
                    "ann": [{"kind": "build_ann=IvfSq", "build_s": 0.2, "index_mb": 0.1,
                             "nprobes": 4, "recall": 0.9, "score": 0.99, "speedup_vs_numpy": 1.0,
                             "speedup_vs_exact": 1.0, **lat}]}],
    }
    bench.print_report(r)
    out = capsys.readouterr().out
    assert "3.0 s ray.init before" in out and "2,000" in out and "recall@20" in out
    assert "build_ann=IvfSq" in out
