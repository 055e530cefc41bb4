"""Region-scale index (issue 7): sources, chips, build (in-process, processes, Ray), search,
GeoJSON, density rasters and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import REPO
from tests.geojson_check import check_rfc7946
from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError, UnknownConceptError
from viper_rs.core.raster_write import write_geotiff
from viper_rs.index import ChipGrid, ChipIndex, Searcher, build_index
from viper_rs.index.attributes import ATTRIBUTE_COLUMNS
from viper_rs.index.chips import chip_image, plan, read_size
from viper_rs.index.embedders import SPECTRAL_CLASSES
from viper_rs.index.store import IndexMeta
from viper_rs.synthetic import make_scene
from viper_rs.tiling.chips import starts
from viper_rs.tiling.sources import describe, expand, scan

GRID = ChipGrid(chip_m=128, overlap=0.25)
#: Builds that test chipping, files and backends measure chip attributes with the spectral
#: detector only (quick); the building model's attributes: the `built` index, the
#: processes/Ray comparison and tests/test_index_attributes.py.
QUICK = Settings(building_model=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two synthetic 384 m scenes as GeoTIFFs (EPSG:32618) and their ground truth."""
    folder = tmp_path_factory.mktemp("tiles")
    out = {}
    for seed in (0, 1):
        scene = make_scene(seed, size=384)
        write_geotiff(scene.image, folder / f"scene{seed}.tif")
        out[seed] = scene
    return folder, out


@pytest.fixture(scope="module")
def built(scenes, tmp_path_factory):
    folder, _ = scenes
    out = tmp_path_factory.mktemp("ix") / "index"
    report = build_index([folder], out, embedder="spectral", grid=GRID, progress=False)
    return out, report


# ---------------------------------------------------------------------------- chips
def test_starts_cover_the_axis_with_the_last_chip_flush():
    assert starts(384, 128, 96) == [0, 96, 192, 256]
    assert starts(100, 128, 96) == [0]
    assert starts(128, 128, 96) == [0]


def test_chips_have_the_ground_size_and_a_wgs84_footprint(scenes):
    folder, truth = scenes
    source = describe(str(folder / "scene0.tif"))
    chips = plan(source, GRID)
    assert len(chips) == 16
    assert {c.window[2:] for c in chips} == {(128, 128)}
    assert {c.window[0] for c in chips} == {0, 96, 192, 256}
    img = truth[0].image
    for c in chips:
        lon, lat = img.pixel_to_lonlat(c.window[0] + 64, c.window[1] + 64)
        w, s, e, n = c.bbox
        assert w < lon < e and s < lat < n
        assert len(c.corners) == 8
    # ids are stable and differ between windows
    assert [c.id for c in plan(source, GRID)] == [c.id for c in chips]
    assert len({c.id for c in chips}) == len(chips)
    # pixels of a chip are its window of the file
    chip = chips[5]
    image = chip_image(chip)
    col, row = chip.window[:2]
    assert image.shape == (128, 128)
    np.testing.assert_array_equal(image.data, img.data[:, row:row + 128, col:col + 128])
    assert image.transform.c == pytest.approx(img.transform.c + col)


def test_coarse_pixels_give_fewer_pixels_per_chip(tmp_path):
    scene = make_scene(3, size=128, gsd=4.0)
    write_geotiff(scene.image, tmp_path / "coarse.tif")
    chips = plan(describe(str(tmp_path / "coarse.tif")), GRID)
    assert {c.window[2:] for c in chips} == {(32, 32)}


def test_very_fine_imagery_is_read_averaged_to_a_bounded_chip(tmp_path):
    scene = make_scene(4, size=512, gsd=0.1)
    write_geotiff(scene.image, tmp_path / "drone.tif")
    chips = plan(describe(str(tmp_path / "drone.tif")), ChipGrid(51.2, 0.0))
    assert [(*c.window[2:], read_size(c)) for c in chips] == [(512, 512, None)]
    chips = plan(describe(str(tmp_path / "drone.tif")), ChipGrid(1000.0, 0.0))
    assert chips[0].window[2] == 512  # a source smaller than a chip is one chip
    import viper_rs.index.chips as chips_mod

    old = chips_mod.MAX_CHIP_PX
    chips_mod.MAX_CHIP_PX = 128
    try:
        image = chip_image(chips[0])
    finally:
        chips_mod.MAX_CHIP_PX = old
    assert image.shape == (128, 128)
    assert image.ground_sampling_distance == pytest.approx(0.4, rel=1e-3)
    ref = scene.image.data[:, :4, :4].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(image.data[:, 0, 0], ref, atol=1.0)


def test_bad_grid_is_refused():
    with pytest.raises(InputError, match="chip size"):
        ChipGrid(chip_m=0)
    with pytest.raises(InputError, match="overlap"):
        ChipGrid(overlap=1.0)


# ---------------------------------------------------------------------------- sources
def test_sources_skip_what_cannot_be_indexed(scenes, tmp_path):
    folder, truth = scenes
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage" * 10)
    arr = (np.random.default_rng(0).random((1, 32, 32)) * 255).astype("uint8")
    with rasterio.open(tmp_path / "dsm.tif", "w", driver="GTiff", width=32, height=32, count=1,
                       dtype="uint8", crs="EPSG:32618",
                       transform=rasterio.transform.from_origin(0, 32, 1, 1)) as ds:
        ds.write(arr)
    rgb = np.repeat(arr, 3, axis=0)
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=32, height=32,
                       count=3, dtype="uint8") as ds:
        ds.write(rgb)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# tiles\n{folder / 'scene0.tif'}\n\n")
    found = scan([tmp_path, listing])
    assert [Path(s.uri).name for s in found.sources] == ["scene0.tif"]
    reasons = {Path(u).name: why for u, why in found.skipped}
    assert "1 band" in reasons["dsm.tif"]
    assert "no CRS" in reasons["nocrs.tif"]
    assert "not a readable raster" in reasons["junk.tif"]
    assert "empty.tif" in reasons
    with pytest.raises(InputError, match="no such file"):
        expand([tmp_path / "missing"])


@pytest.mark.parametrize("name,date", [
    ("m_4709963_se_14_1_20140720.tif", "2014-07-20"), ("tile_2021-06-30_rgb.tif", "2021-06-30"),
    ("scene0.tif", None), ("x_20141399.tif", None), ("id_120140720.tif", None),
])
def test_acquisition_date_from_file_names(name, date):
    from viper_rs.tiling.sources import date_from_name

    assert date_from_name(f"/data/{name}") == date


def test_non_8bit_sources_share_one_white_point(tmp_path):
    data = (np.random.default_rng(1).random((4, 64, 64)) * 1800 + 100).astype("uint16")
    with rasterio.open(tmp_path / "a.tif", "w", driver="GTiff", width=64, height=64, count=4,
                       dtype="uint16", crs="EPSG:32631",
                       transform=rasterio.transform.from_origin(0, 64, 1, 1)) as ds:
        ds.write(data)
    assert describe(str(tmp_path / "a.tif")).white_point == 2047.0  # 11-bit


# ---------------------------------------------------------------------------- build
def test_build_indexes_every_chip_once(built, scenes):
    out, report = built
    assert report.indexed == 32 and report.existing == 0 and not report.failed
    assert report.total_rows == 32 and len(ChipIndex.open(out)) == 32
    assert report.chips_per_s > 0
    again = build_index([scenes[0]], out, embedder="spectral", grid=GRID, progress=False)
    assert again.existing == 32 and again.indexed == 0 and again.total_rows == 32


def test_changed_files_are_reindexed_and_new_files_added(scenes, tmp_path):
    folder, truth = scenes
    src = tmp_path / "tiles"
    src.mkdir()
    (src / "a.tif").write_bytes((folder / "scene0.tif").read_bytes())
    out = tmp_path / "ix"
    build_index([src], out, embedder="spectral", grid=GRID, progress=False, settings=QUICK)
    (src / "b.tif").write_bytes((folder / "scene1.tif").read_bytes())
    r = build_index([src], out, embedder="spectral", grid=GRID, progress=False,
                    settings=QUICK)
    assert (r.existing, r.indexed, r.total_rows) == (16, 16, 32)
    os.utime(src / "a.tif", ns=(1, 1))  # a new version of a.tif
    r = build_index([src], out, embedder="spectral", grid=GRID, progress=False,
                    settings=QUICK)
    assert (r.stale, r.existing, r.indexed, r.total_rows) == (16, 16, 16, 32)


# ---------------------------------------------------------------------------- map imagery
def test_map_imagery_is_built_with_the_index_and_updated_like_it(scenes, tmp_path):
    from PIL import Image

    from viper_rs.index.overlays import OVERLAY_DIR, load_overlays

    folder, _ = scenes
    src = tmp_path / "tiles"
    src.mkdir()
    (src / "a.tif").write_bytes((folder / "scene0.tif").read_bytes())
    out = tmp_path / "ix"
    r = build_index([src], out, embedder="spectral", grid=GRID, progress=False,
                    settings=QUICK)
    assert (r.overlays.built, r.overlays.kept, r.overlays.skipped) == (1, 0, [])
    assert "map imagery: 1 sources drawn" in r.summary()
    pictures = load_overlays(out)
    a = pictures[str((src / "a.tif").resolve())]
    assert a.name == "a.tif" and a.png.parent == out / OVERLAY_DIR
    picture = Image.open(a.png)
    assert picture.format == "PNG" and max(picture.size) <= 1024 and picture.mode == "P"
    assert a.data_uri().startswith("data:image/png;base64,iVBOR")
    with rasterio.open(src / "a.tif") as ds:
        from rasterio.warp import transform_bounds

        expected = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    assert np.allclose(a.bounds, expected, atol=2e-5), (a.bounds, expected)
    # again: nothing drawn; a new file: drawn; a changed file: drawn again
    r = build_index([src], out, embedder="spectral", grid=GRID, progress=False,
                    settings=QUICK)
    assert (r.overlays.built, r.overlays.kept) == (0, 1)
    (src / "b.tif").write_bytes((folder / "scene1.tif").read_bytes())
    r = build_index([src], out, embedder="spectral", grid=GRID, progress=False,
                    settings=QUICK)
    assert (r.overlays.built, r.overlays.kept) == (1, 1) and len(load_overlays(out)) == 2
    os.utime(src / "a.tif", ns=(1, 1))
    r = build_index([src], out, embedder="spectral", grid=GRID, progress=False,
                    settings=QUICK)
    assert (r.overlays.built, r.overlays.kept) == (1, 1)
    off = build_index([src], tmp_path / "ix2", embedder="spectral", grid=GRID, progress=False,
                      settings=QUICK,
                      overlays=False)
    assert off.overlays is None and not (tmp_path / "ix2" / OVERLAY_DIR).exists()


def _write(image, crs: str, path: Path, bounds: tuple[float, float, float, float]) -> Path:
    """``image``'s pixels as a GeoTIFF spanning ``bounds`` (in ``crs``)."""
    from rasterio.transform import from_bounds

    profile = {"driver": "GTiff", "width": image.width, "height": image.height,
               "count": image.data.shape[0], "dtype": image.data.dtype.name, "crs": crs,
               "transform": from_bounds(*bounds, image.width, image.height)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image.data)
    return path


def test_map_imagery_of_sources_in_different_crss(scenes, tmp_path):
    from rasterio.warp import transform_bounds

    from viper_rs.index.overlays import render, update_overlays

    folder, truth = scenes
    image = truth[0].image
    utm = str(folder / "scene0.tif")
    with rasterio.open(utm) as ds:
        ll = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    merc = transform_bounds("EPSG:4326", "EPSG:3857", *ll)
    paths = [utm, str(_write(image, "EPSG:4326", tmp_path / "geo.tif", ll)),
             str(_write(image, "EPSG:3857", tmp_path / "merc.tif", merc))]
    sources = [describe(p) for p in paths]
    report = update_overlays(tmp_path / "ix", sources, side=200)
    assert (report.built, report.skipped) == (3, [])
    for source in sources:
        rgba, bounds = render(source, side=200)
        assert rgba.shape[2] == 4 and max(rgba.shape[:2]) <= 200
        assert np.allclose(bounds, ll, atol=3e-5), (source.crs, bounds, ll)
        assert rgba[..., 3].mean() > 0.9 * 255  # the source fills (nearly) all its box
        assert rgba[..., :3][rgba[..., 3] > 0].mean() > 20  # not a black picture
    # a UTM tile is slightly rotated against Web Mercator: its corners are transparent
    utm_rgba, _ = render(sources[0], side=200)
    assert (utm_rgba[[0, 0, -1, -1], [0, -1, 0, -1], 3] == 0).any()


def test_sources_that_cannot_be_drawn_are_skipped_with_a_reason(scenes, tmp_path):
    from viper_rs.index.overlays import known_sources, load_overlays, update_overlays

    folder, truth = scenes
    good = describe(str(folder / "scene0.tif"))
    bad_path = tmp_path / "broken.tif"
    bad_path.write_bytes((folder / "scene1.tif").read_bytes())
    bad = describe(str(bad_path))
    bad_path.write_bytes(b"II*\x00" + b"\x00garbage" * 64)  # damaged after it was indexed
    polar = describe(str(_write(truth[1].image, "EPSG:4326", tmp_path / "polar.tif",
                                (10.0, 87.0, 11.0, 88.0))))
    ix = tmp_path / "ix"
    report = update_overlays(ix, [good, bad, polar])
    assert report.built == 1 and len(report.skipped) == 2
    reasons = dict(report.skipped)
    assert "broken.tif" in reasons[bad.uri] and "readable" in reasons[bad.uri]
    assert "Web Mercator" in reasons[polar.uri]
    assert set(load_overlays(ix)) == {good.key}
    assert known_sources(ix) == {good.key, bad.key, polar.key}
    again = update_overlays(ix, [good, bad, polar])  # remembered: not tried again
    assert (again.built, again.kept, len(again.skipped)) == (0, 1, 2)
    # the file is repaired (a new version): it is drawn
    bad_path.write_bytes((folder / "scene1.tif").read_bytes())
    fixed = update_overlays(ix, [describe(str(bad_path))])
    assert fixed.built == 1 and bad.key in load_overlays(ix)
    # a time budget leaves the rest for the next update
    later = update_overlays(tmp_path / "ix3", [good, describe(str(bad_path))], budget_s=0.0)
    assert later.built == 1 and later.deferred == 1


def test_a_different_recipe_is_refused(built, scenes):
    out, _ = built
    with pytest.raises(InputError, match="chip_m"):
        build_index([scenes[0]], out, embedder="spectral", grid=ChipGrid(64), progress=False)


def test_out_folder_that_is_not_an_index_is_refused(scenes, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a viper-rs index"):
        build_index([scenes[0]], tmp_path, embedder="spectral", grid=GRID, progress=False)


def test_nothing_indexable_is_a_clear_error(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"nope")
    with pytest.raises(InputError, match="no indexable imagery"):
        build_index([tmp_path], tmp_path / "ix", embedder="spectral", progress=False)


def test_mostly_nodata_chips_are_skipped_and_remembered(tmp_path):
    data = np.full((4, 256, 256), 120, np.uint8)
    data[:, :, 128:] = 0  # right half nodata
    with rasterio.open(tmp_path / "half.tif", "w", driver="GTiff", width=256, height=256,
                       count=4, dtype="uint8", crs="EPSG:32618", nodata=0,
                       transform=rasterio.transform.from_origin(500000, 4e6, 1, 1)) as ds:
        ds.write(data)
    out = tmp_path / "ix"
    grid = ChipGrid(128, 0.0)
    r = build_index([tmp_path / "half.tif"], out, embedder="spectral", grid=grid, progress=False)
    assert (r.indexed, r.empty) == (2, 2)
    r = build_index([tmp_path / "half.tif"], out, embedder="spectral", grid=grid, progress=False)
    assert (r.existing, r.indexed, r.empty) == (4, 0, 0)


def test_spectral_vectors_are_class_fractions(built, scenes):
    out, _ = built
    _, truth = scenes
    index = ChipIndex.open(out)
    assert index.meta.dimensions == list(SPECTRAL_CLASSES)
    vecs = np.concatenate([v for _, v in index.footprints_and_vectors()])
    assert vecs.shape == (32, len(SPECTRAL_CLASSES))
    assert (vecs >= 0).all() and (vecs <= 1).all()
    cover = vecs[:, :5].sum(axis=1)  # water, tree, low veg, bare, impervious partition
    assert np.all(cover <= 1.0 + 1e-5) and cover.mean() > 0.9


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_processes_and_ray_give_the_same_index_as_in_process(built, scenes, tmp_path, backend):
    """The Ray test runs on a local Ray instance started for it (--ray-address local)."""
    folder, _ = scenes
    kwargs = {"workers": 2} if backend == "processes" else {"ray_address": "local",
                                                             "workers": 2}
    out = tmp_path / backend
    r = build_index([folder], out, embedder="spectral", grid=GRID, progress=False,
                    batch_chips=4, **kwargs)
    assert r.indexed == 32 and not r.failed
    assert r.backend.startswith("ray") == (backend == "ray")

    def rows(path):
        got = {}
        for batch, vecs in ChipIndex.open(path).footprints_and_vectors():
            for i, cid in enumerate(batch.column("id").to_pylist()):
                got[cid] = vecs[i]
        return got

    ref, other = rows(built[0]), rows(out)
    assert ref.keys() == other.keys()
    for k in ref:
        np.testing.assert_allclose(ref[k], other[k], atol=1e-6)
    # the chip attributes (the building model in every worker) are the same too
    cols = ["id", *ATTRIBUTE_COLUMNS, "attr_recipe"]
    ours = {r["id"]: r for r in ChipIndex.open(out).table.to_arrow().select(cols).to_pylist()}
    theirs = ChipIndex.open(built[0]).table.to_arrow().select(cols).to_pylist()
    assert {r["id"]: r for r in theirs} == ours
    assert all(r["building_share"] is not None for r in theirs)


def test_cli_build_on_a_running_ray_cluster_by_address(scenes, tmp_path):
    """`ray start --head`, then `index build --ray-address HOST:PORT` (the documented
    cluster command), then `ray stop`."""
    import socket

    folder, _ = scenes
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "2",
                            "--include-dashboard", "false", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        p = _cli("build", str(folder), "--out", str(tmp_path / "ix"), "--embedder", "spectral",
                 "--chip-m", "128", "--ray-address", f"127.0.0.1:{port}", "--json",
                 env_extra={"RAY_AUTH_MODE": "disabled"})
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        assert report["indexed"] == 32 and report["backend"] == f"ray(127.0.0.1:{port})"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_unreachable_ray_address_fails_fast_and_leaves_nothing(scenes, tmp_path):
    with socket_port() as port:
        p = _cli("build", str(scenes[0]), "--out", str(tmp_path / "ix"), "--embedder",
                 "spectral", "--ray-address", f"127.0.0.1:{port}")
    assert p.returncode == 2 and "cannot reach the Ray cluster" in p.stderr
    assert not (tmp_path / "ix").exists()


def socket_port():
    """A context giving a local port that nothing listens on."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def cm():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            yield sock.getsockname()[1]

    return cm()


# ---------------------------------------------------------------------------- search
def test_water_search_ranks_chips_with_water_first(built, scenes):
    out, _ = built
    _, truth = scenes
    res = Searcher(out).search("water", k=32)
    assert [h.rank for h in res.hits] == list(range(1, 33))
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True)
    assert any("fraction of the chip covered by water" in n for n in res.notes)

    def true_water(hit):
        seed = int(Path(hit.source).stem[-1])
        c, r, w, h = hit.window
        return truth[seed].class_mask("water area")[r:r + h, c:c + w].mean()

    # each scene has one pond: the chips holding it come first, scored by its fraction
    top = [h for h in res.hits if h.score > 0]
    assert len(top) >= 2
    for h in top:  # a chip may hold only a sliver of the pond, scored as such
        assert true_water(h) > 0 and h.score == pytest.approx(true_water(h), abs=0.03)
    assert max(true_water(h) for h in top) > 0.03
    assert max(true_water(h) for h in res.hits if h.score == 0) < 0.02


def test_search_bbox_and_k(built):
    out, _ = built
    s = Searcher(out)
    hits = s.search("trees", k=5).hits
    assert len(hits) == 5
    w, so, e, n = hits[0].bbox
    inside = s.search("trees", k=50, bbox=(w, so, e, n)).hits
    assert hits[0].id in {h.id for h in inside} and len(inside) < 32
    with pytest.raises(InputError, match="k must be"):
        s.search("trees", k=0)


def test_unknown_concepts_and_empty_queries_are_clear(built):
    s = Searcher(built[0])
    with pytest.raises(UnknownConceptError, match="unknown concept"):
        s.search("unicorn stables")
    with pytest.raises(InputError, match="empty"):
        s.search("   ")


def test_search_geojson_is_rfc7946(built):
    res = Searcher(built[0]).search("buildings", k=10)
    fc = res.geojson()
    check_rfc7946(fc)
    assert len(fc["features"]) == 10
    f = fc["features"][0]
    assert f["properties"]["rank"] == 1 and f["properties"]["score"] == pytest.approx(
        res.hits[0].score, abs=1e-6)
    lon, lat = res.hits[0].center
    ring = np.array(f["geometry"]["coordinates"][0])
    assert ring[:, 0].min() < lon < ring[:, 0].max() and ring[:, 1].min() < lat < ring[:, 1].max()


def test_ann_search_agrees_with_exact_search(tmp_path):
    rng = np.random.default_rng(0)
    n, dim = 3000, 32
    centres = rng.normal(size=(30, dim))
    vecs = centres[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    meta = IndexMeta(embedder="test", model_id="test", dim=dim, chip_m=100, overlap=0,
                     min_valid=0.5)
    index = ChipIndex.create(tmp_path / "ix", meta)
    rows = [{"id": f"c{i}", "source": "s", "source_name": "s", "source_key": "s",
             "fingerprint": "f", "datetime": None, "crs": "EPSG:4326", "col": 0, "row": 0,
             "width": 1, "height": 1, "west": 0.0, "south": 0.0, "east": 1.0, "north": 1.0,
             "corners": [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], "white_point": 255.0,
             "valid": 1.0} for i in range(n)]
    index.add(rows, vecs)
    assert not index.has_ann()
    index.build_ann(partitions=16)
    assert index.has_ann()
    recall = []
    for q in vecs[:20] + 0.05 * rng.normal(size=(20, dim)).astype(np.float32):
        q = q / np.linalg.norm(q)
        exact = index.search(q, k=20, exact=True)
        ann = index.search(q, k=20)
        truth = np.argsort(-(vecs @ q))[:20]
        assert {h.id for h in exact} == {f"c{i}" for i in truth}
        assert [h.score for h in ann] == sorted((h.score for h in ann), reverse=True)
        recall.append(len({h.id for h in exact} & {h.id for h in ann}) / 20)
    assert np.mean(recall) > 0.8


# ---------------------------------------------------------------------------- density
def test_density_raster_is_georeferenced_and_follows_the_scores(built, tmp_path):
    out, _ = built
    s = Searcher(out)
    dm = s.density("water", tmp_path / "water.tif")
    assert dm.png is not None and dm.png.exists() and dm.crs == "EPSG:32618"
    with rasterio.open(dm.tif) as ds:
        grid = ds.read(1)
        assert ds.crs.to_epsg() == 32618 and ds.res == (48.0, 48.0)
        assert np.isnan(ds.nodata)
        best = s.search("water", k=1).hits[0]
        lon, lat = best.center
        from rasterio.warp import transform as warp

        x, y = warp("EPSG:4326", ds.crs, [lon], [lat])
        r, c = ds.index(x[0], y[0])
    finite = grid[np.isfinite(grid)]
    assert finite.size and 0 <= finite.min() and finite.max() <= 1
    assert grid[r, c] >= np.median(finite)
    from PIL import Image

    png = Image.open(dm.png)
    assert png.mode == "RGBA" and png.size == (dm.width, dm.height)
    with pytest.raises(InputError, match="no chips"):
        s.density("water", tmp_path / "none.tif", bbox=(10.0, 10.0, 11.0, 11.0))


# ---------------------------------------------------------------------------- CLI
def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIPER_RS_")}
    env["VIPER_RS_BUILDING_MODEL"] = "false"  # see QUICK
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "viper_rs", "index", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def test_cli_build_search_density_info(scenes, tmp_path):
    folder, _ = scenes
    out = tmp_path / "ix"
    p = _cli("build", str(folder), "--out", str(out), "--embedder", "spectral", "--chip-m",
             "128", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["indexed"] == 32 and report["chips_per_s"] > 0
    p = _cli("search", str(out), "water", "--k", "3", "--geojson")
    assert p.returncode == 0, p.stderr
    fc = json.loads(p.stdout)
    check_rfc7946(fc)
    assert len(fc["features"]) == 3
    p = _cli("search", str(out), "water", "--k", "3")
    assert p.returncode == 0 and "3 best of 32 chips for 'water'" in p.stdout
    p = _cli("density", str(out), "water", "--out", str(tmp_path / "d.tif"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "d.tif").exists() and (tmp_path / "d.png").exists()
    info = json.loads(_cli("info", str(out)).stdout)
    assert info["chips"] == 32 and info["embedder"] == "spectral"


@pytest.mark.parametrize("args,msg", [
    (["search", "{tmp}", "water"], "not a viper-rs index"),
    (["search", "{ix}", "unicorn"], "unknown concept"),
    (["search", "{ix}", "water", "--bbox", "1,2,3"], "--bbox must be"),
    (["build", "--out", "{tmp}/new"], "nothing to index"),
    (["build", "{tmp}/nothing", "--out", "{tmp}/new"], "no such file"),
    (["build", "{src}", "--out", "{tmp}/new", "--overlap", "1.5"], "overlap"),
])
def test_cli_errors_are_one_line_messages(built, scenes, tmp_path, args, msg):
    fill = {"tmp": str(tmp_path), "ix": str(built[0]), "src": str(scenes[0])}
    p = _cli(*[a.format(**fill) for a in args])
    assert p.returncode == 2
    assert msg in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------------------- STAC
def test_stac_search_sources_are_indexed(scenes, tmp_path):
    from tests.test_eval_naip import StacServer

    folder, _ = scenes
    served = tmp_path / "served"
    served.mkdir()
    (served / "scene0.tif").write_bytes((folder / "scene0.tif").read_bytes())
    server = StacServer(served)
    try:
        server.items = [{
            "type": "Feature", "stac_version": "1.0.0", "id": "tile0", "collection": "naip",
            "geometry": {"type": "Polygon", "coordinates": [[[-80, 40], [-79, 40], [-79, 41],
                                                             [-80, 41], [-80, 40]]]},
            "bbox": [-80, 40, -79, 41], "properties": {"datetime": "2021-07-01T00:00:00Z"},
            "assets": {"image": {"href": f"{server.url}/files/scene0.tif",
                                 "type": "image/tiff; application=geotiff"}},
            "links": [],
        }]
        p = _cli("build", "--stac", server.url, "--bbox=-80,40,-79,41", "--out",
                 str(tmp_path / "ix"), "--embedder", "spectral", "--chip-m", "128", "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["indexed"] == 16
        hit = Searcher(tmp_path / "ix").search("water", k=1).hits[0]
        assert hit.source.startswith(server.url) and hit.datetime.startswith("2021-07-01")
    finally:
        server.close()


# ---------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_naip_and_aerial_water_search(shared_data, tmp_path):
    """Acceptance: index the real NAIP/aerial tiles offline (spectral) and find water."""
    out = tmp_path / "ix"
    r = build_index([shared_data / "naip", shared_data / "aerial"], out, embedder="spectral",
                    grid=ChipGrid(512, 0.25), progress=False)
    assert r.embedder == "spectral" and r.indexed > 100 and not r.failed
    names = {Path(u).name for u, _ in r.skipped_sources}
    assert "napa_dsm_1m.tif" in names  # one band
    res = Searcher(out).search("water", k=10)
    assert all(h.score > 0.3 for h in res.hits)
    assert {h.source_name.split("_")[0] for h in res.hits} <= {"m", "ms2.tif"}
    check_rfc7946(res.geojson())
