"""Smoke test of ``eval.bench_index`` at tiny sizes: structure of the figures, not speed."""

from __future__ import annotations

import json
from pathlib import Path

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
    r = bench.bench_build(folder, tmp_path, backends=("in-process", "in-process, no attributes"))
    run, plain = r["runs"]
    assert run["backend"] == "in-process" and run["chips"] == 18  # 3 x 3 chips a scene
    assert run["indexed"] + run["empty"] + run["failed"] == run["chips"]
    assert run["chips_per_s"] > 0 and run["vs_in_process"] == 1.0
    assert run["attributes"] and not plain["attributes"] and plain["indexed"] == run["indexed"]


def _labelled(folder, name, scene, footprints):
    """A labelled tile as in ../shared/data/labeled: image, footprint mask, truth JSON."""
    from viper_rs.core.geo import GeoImage
    from viper_rs.core.raster_write import write_geotiff

    write_geotiff(scene.image, folder / f"{name}.tif")
    mask = GeoImage.from_array(footprints.astype(np.uint8)[None], "mask",
                               crs=scene.image.crs, transform=scene.image.transform)
    write_geotiff(mask, folder / f"{name}_buildings.tif")
    (folder / f"{name}_truth.json").write_text(json.dumps(
        {"building_count": int(footprints.any())}))


def test_search_quality_scores_hits_against_labelled_footprints(tmp_path):
    from viper_rs.synthetic import BUILDING_CLASSES, make_scene

    data = tmp_path / "data"
    (data / "labeled").mkdir(parents=True)
    town = make_scene(0, size=128)
    _labelled(data / "labeled", "town", town, town.class_mask(*BUILDING_CLASSES))
    field = make_scene(1, size=128)  # its pixels become a grass field with no building
    grass = np.random.default_rng(0).normal([[[70]], [[110]], [[60]], [[150]]], 8,
                                            (4, 128, 128))
    field.image.data[:] = grass.clip(0, 255).astype(field.image.data.dtype)
    _labelled(data / "labeled", "field", field, np.zeros(field.image.shape, bool))
    masks = bench.labelled_masks(data)
    assert {Path(p).name for p in masks} == {"town.tif", "field.tif"}
    town_mask = masks[str((data / "labeled" / "town.tif").resolve())]
    share = bench.footprint_share(town_mask, (0, 0, 128, 128))
    assert share == pytest.approx(float(town.class_mask(*BUILDING_CLASSES).mean()))
    assert bench.footprint_share(town_mask, (200, 200, 10, 10)) == 0.0  # outside: no label
    r = bench.run_quality(data, tmp_path, ks=(2,), chip_m=256)
    assert r["labelled_tiles"] == 2 and r["labelled_chips"] == {"holding": 1, "free": 1}
    for rank in ("embedding", "auto"):
        (p,) = r[rank]["precision"]
        assert p["k"] == 2 and p["true"] == 1 and p["precision"] == 0.5 and p["unjudged"] == 0
    assert r["auto"]["ranked_by"] == "building_share"
    assert r["auto"]["top10"][0] == "town.tif"  # the model sees the town's buildings
    assert r["auto"]["hits"][0]["building_share"] > 0
    json.dumps(r)


def test_precision_counts_unjudged_hits_as_misses():
    judged = [{"true": True, "truth_share": 0.3}, {"true": False, "truth_share": None},
              {"true": False, "truth_share": 0.0}, {"true": True, "truth_share": 0.02}]
    assert bench.precision(judged, 4) == {"k": 4, "precision": 0.5, "true": 2, "unjudged": 1}
    assert bench.precision(judged, 2)["precision"] == 0.5


def test_search_small_index(tmp_path):
    s = bench.bench_size(2000, dim=32, queries=5, nprobes=(4, 2), ann=("build_ann", "IVF_PQ"),
                         work=tmp_path)
    assert s["n"] == 2000 and s["fill"]["add_s"] >= 0
    assert s["lance_exact"]["recall"] == 1.0  # LanceDB's exact top 20 = numpy's
    assert s["lance_exact"]["score"] == pytest.approx(1.0, abs=1e-3)
    assert 0 < s["lance_ranked"]["p50_ms"] <= s["lance_ranked"]["p95_ms"]  # by building cover
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
    q = {"data": "/d", "query": "buildings", "labelled_tiles": 61, "min_share": 0.01,
         "labelled_chips": {"holding": 55, "free": 6},
         "build": {"chips": 1499, "seconds": 90.0, "chips_per_s": 16.6,
                   "unknown": {"building: the image is 5 m/px": 1425}}}
    for key, p in (("embedding", 0.0), ("auto", 1.0)):
        q[key] = {"precision": [{"k": 10, "precision": p, "true": int(10 * p),
                                 "unjudged": 10 - int(10 * p)}],
                  "top10": ["kampala_ug_1_2.tif"] if p else ["m_4709963_se_14_1_20090818.tif"]}
    r["quality"] = q
    bench.print_report(r)
    out = capsys.readouterr().out
    assert "3.0 s ray.init before" in out and "2,000" in out and "recall@20" in out
    assert "build_ann=IvfSq" in out
    assert "P@10" in out and "measured cover (after)" in out and "kampala" in out
    assert "unknown on 1425 chips" in out
