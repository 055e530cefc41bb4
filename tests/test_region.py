"""Questions about a region (issue 16): one program over many tiles, exact totals.

A large synthetic scene is cut into adjacent GeoTIFFs (objects straddle the tile borders);
with the mosaic oracle every synthetic question asked of the region must get the
single-image ground truth for chip sizes from below the largest object to above a tile.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from viper_rs.agent import Agent
from viper_rs.core.config import Settings
from viper_rs.core.geo import GeoImage
from viper_rs.core.raster_write import write_geotiff
from viper_rs.region import RegionDetector, RegionImage, RegionOptions, ask_region, open_region
from viper_rs.region.chips import layout, read_chip
from viper_rs.region.oracle import MosaicOracle
from viper_rs.synthetic import (
    BUILDING_CLASSES,
    ROAD,
    TREE,
    WATER,
    Scene,
    make_questions,
    make_scene,
)

SIZE, TILE = 768, 256  # 3 x 3 tiles of 256 m at 1 m/px
SEED = 3


@cache
def big_scene() -> Scene:
    return make_scene(SEED, size=SIZE, gsd=1.0)


@cache
def questions() -> list:
    return make_questions(big_scene(), n=60, seed=SEED)


def cut(scene: Scene, folder: Path, other_crs: str | None = None) -> list[Path]:
    """Write the scene as TILE x TILE GeoTIFFs; with ``other_crs`` the centre tile is
    written reprojected (nearest, 1 m) into that CRS, padded so it covers its place."""
    img = scene.image
    paths = []
    for i in range(SIZE // TILE):
        for j in range(SIZE // TILE):
            r0, c0 = i * TILE, j * TILE
            path = folder / f"tile_{i}_{j}.tif"
            if other_crs and (i, j) == (1, 1):
                write_reprojected(img, r0, c0, other_crs, path)
            else:
                tile = GeoImage.from_array(img.data[:, r0:r0 + TILE, c0:c0 + TILE], "R,G,B,NIR",
                                           crs=img.crs, transform=img.transform @ Affine.translation(c0, r0))
                write_geotiff(tile, path)
            paths.append(path)
    return paths


def write_reprojected(img: GeoImage, r0: int, c0: int, crs: str, path: Path) -> None:
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds

    x0, y1 = img.transform @ (c0, r0)
    x1, y0 = img.transform @ (c0 + TILE, r0 + TILE)
    w, s, e, n = transform_bounds(img.crs, crs, x0, y0, x1, y1, densify_pts=21)
    w, s, e, n = math.floor(w) - 4, math.floor(s) - 4, math.ceil(e) + 4, math.ceil(n) + 4
    transform = Affine(1.0, 0, w, 0, -1.0, n)
    out = np.zeros((img.data.shape[0], int(n - s), int(e - w)), dtype=img.data.dtype)
    reproject(img.data, out, src_transform=img.transform, src_crs=img.crs, dst_transform=transform,
              dst_crs=crs, resampling=Resampling.nearest)
    write_geotiff(GeoImage.from_array(out, "R,G,B,NIR", crs=crs, transform=transform), path)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> list[Path]:
    return cut(big_scene(), tmp_path_factory.mktemp("mosaic"))


@pytest.fixture(scope="module")
def agent():
    a = Agent(settings=Settings(), detector=MosaicOracle(big_scene()), planner="rules")
    yield a
    a.close()


def region_detector(image: RegionImage, chip_m: float, halo_m: float = 0.0, reader=None) -> RegionDetector:
    chips = layout(image, chip_m, halo_m)
    return RegionDetector(MosaicOracle(big_scene()), image, chips, settings=Settings(), reader=reader)


def check_all_questions(agent: Agent, image: RegionImage, det: RegionDetector) -> list[str]:
    """Every synthetic question on the region; returns the failures."""
    failures = []
    for q in questions():
        ans = agent.ask(image, q.question, detector=det)
        if ans.error is not None:
            ok = False
        elif q.type == "area":
            ok = isinstance(ans.value, (int, float)) and math.isclose(
                float(ans.value), q.value, rel_tol=0.005, abs_tol=1e-6)
        else:
            ok = ans.value == q.value and type(ans.value) is type(q.value)
        if not ok:
            failures.append(f"{q.question!r}: expected {q.value!r}, got {ans.value!r} "
                            f"error={ans.error}\n{ans.program}")
    return failures


def test_mosaic_cuts_objects() -> None:
    """The fixture is meaningful: objects straddle tile borders."""
    cut_objects = 0
    for o in big_scene().objects:
        rows, cols = np.nonzero(o.mask)
        if len(set(rows // TILE)) > 1 or len(set(cols // TILE)) > 1:
            cut_objects += 1
    assert cut_objects >= 5


def test_grid_is_the_scene_grid(mosaic) -> None:
    image = open_region(mosaic)
    scene = big_scene().image
    assert image.shape == scene.shape
    assert str(image.crs) == str(scene.crs)
    assert tuple(image.transform) == pytest.approx(tuple(scene.transform))
    assert image.ground_sampling_distance == pytest.approx(scene.ground_sampling_distance)


@pytest.mark.parametrize("chip_m", [48.0, 128.0, 300.0, 2000.0])
def test_every_question_matches_the_single_image(mosaic, agent, chip_m) -> None:
    image = open_region(mosaic)
    det = region_detector(image, chip_m)
    failures = check_all_questions(agent, image, det)
    assert not failures, f"chip {chip_m} m: {len(failures)} wrong:\n" + "\n\n".join(failures)
    assert len(det.find(image, "building")) == len(big_scene().objects_of(*BUILDING_CLASSES))


@pytest.mark.parametrize("chip_m, halo_m", [(48.0, 64.0), (128.0, 16.0)])
def test_objects_equal_the_ground_truth_objects(mosaic, chip_m, halo_m) -> None:
    """Every object found on the region is exactly one ground-truth object (mask and area)."""
    image = open_region(mosaic)
    det = region_detector(image, chip_m, halo_m)
    scene = big_scene()
    by_id = {o.id: o for o in scene.objects}
    regions = det.find(image, "building") + det.find(image, "road") + det.find(image, "water")
    want = {o.id for o in scene.objects if o.cls in (*BUILDING_CLASSES, ROAD, WATER)}
    assert sorted(r.extra["instance"] for r in regions) == sorted(want)
    for r in regions:
        truth = by_id[r.extra["instance"]]
        assert np.array_equal(r.mask, truth.mask)
        assert r.area_m2 == pytest.approx(scene.image.mask_area(truth.mask), rel=1e-9)


def test_stitching_without_instances(mosaic) -> None:
    """Components (no instance ids) merge across core borders like one image's components."""
    from viper_rs.vision.components import label_components

    class Components(MosaicOracle):
        instance_ids_global = False

        def score_map(self, image, query):
            smap = super().score_map(image, query)
            smap.instances = None
            return smap

    image = open_region(mosaic)
    for chip_m in (32.0, 100.0):
        det = RegionDetector(Components(big_scene()), image, layout(image, chip_m, 0.0),
                             settings=Settings())
        for query, classes in (("road", (ROAD,)), ("tree", (TREE,)), ("building", BUILDING_CLASSES)):
            regions = det.find(image, query)
            truth = label_components(big_scene().class_mask(*classes), 2)
            assert len(regions) == int(truth.max()), (chip_m, query)


def test_regions_hold_cropped_masks_only(mosaic) -> None:
    image = open_region(mosaic)
    det = region_detector(image, 64.0)
    for query in ("building", "water", "tree"):
        for r in det.find(image, query):
            c0, r0, c1, r1 = r.bbox
            assert r.crop.shape == (r1 - r0, c1 - c0)
            assert r.crop.shape != image.shape
            assert r.crop[0].any() and r.crop[-1].any() and r.crop[:, 0].any() and r.crop[:, -1].any()
    assert not hasattr(image, "data") and not hasattr(image, "valid")


def test_two_utm_zones(tmp_path, agent) -> None:
    """The centre tile in the neighbouring UTM zone (17N): the working CRS is the zone of the
    area's centre (18N); counts, presence, comparisons exact, areas within 0.5 %."""
    paths = cut(big_scene(), tmp_path, other_crs="EPSG:32617")
    image = open_region(paths)
    assert image.crs.to_epsg() == 32618
    assert image.shape == big_scene().image.shape
    det = region_detector(image, 128.0, 8.0)
    failures = check_all_questions(agent, image, det)
    assert not failures, "\n\n".join(failures)
    assert all(c.status == "ok" for c in det.chips)


def test_working_crs_of_another_zone(mosaic) -> None:
    """Read into the neighbouring zone's grid (rotated by about 4.5 degrees, nearest
    resampling of the truth): every object is still found once; areas move by under 1 %.
    (Directional relations are then judged on the rotated grid's axes.)"""
    scene = big_scene()
    image = open_region(mosaic, crs="EPSG:32617")
    assert image.crs.to_epsg() == 32617
    det = region_detector(image, 128.0, 8.0)
    for query, classes in (("building", BUILDING_CLASSES), ("road", (ROAD,)), ("water", (WATER,))):
        regions = det.find(image, query)
        objects = scene.objects_of(*classes)
        assert sorted(r.extra["instance"] for r in regions) == sorted(o.id for o in objects)
        got = sum(r.area_m2 for r in regions)
        want = sum(scene.image.mask_area(o.mask) for o in objects)
        assert got == pytest.approx(want, rel=0.01)


def test_bbox_restricts_the_area(mosaic, agent) -> None:
    from rasterio.warp import transform_bounds

    scene = big_scene().image
    x0, y1 = scene.transform @ (0, 0)
    x1, y0 = scene.transform @ (300, 300)
    bbox = transform_bounds(scene.crs, "EPSG:4326", x0, y0, x1, y1)
    image = open_region(mosaic, bbox=bbox)
    assert 290 <= image.width <= 310 and 290 <= image.height <= 310


def test_failing_chip_is_retried_then_reported(mosaic, agent) -> None:
    image = open_region(mosaic)
    calls: dict[str, int] = {}

    def flaky(img, chip):
        calls[chip.id] = calls.get(chip.id, 0) + 1
        if chip.id == "r0c0" and calls[chip.id] == 1:
            raise OSError("transient read error")
        return read_chip(img, chip)

    answer, report = ask_region(image, "How many buildings are there?",
                                RegionOptions(chip_m=256.0, halo_m=0.0,
                                              detector=MosaicOracle(big_scene()), reader=flaky),
                                agent=agent)
    truth = len(big_scene().objects_of(*BUILDING_CLASSES))
    assert answer.value == truth
    assert all(c["status"] == "ok" for c in report.chips)
    assert not report.coverage["partial"] and report.coverage["share"] == pytest.approx(1.0)

    assert calls["r0c0"] == 2 and calls["r1c1"] == 1
    calls.clear()

    def broken(img, chip):
        calls[chip.id] = calls.get(chip.id, 0) + 1
        if chip.id == "r1c1":
            raise OSError("disk on fire")
        return read_chip(img, chip)

    answer, report = ask_region(image, "How many buildings are there?",
                                RegionOptions(chip_m=256.0, halo_m=0.0,
                                              detector=MosaicOracle(big_scene()), reader=broken),
                                agent=agent)
    status = {c["id"]: c["status"] for c in report.chips}
    assert status["r1c1"] == "failed" and sum(s == "ok" for s in status.values()) == 8
    assert report.coverage["partial"] and report.coverage["failed_chips"] == ["r1c1"]
    assert report.coverage["share"] == pytest.approx(8 / 9, rel=1e-3)
    assert calls["r1c1"] == 2  # retried once, then reported
    assert any("missing coverage" in n for n in answer.notes)
    assert answer.value <= truth


def test_cli_json(mosaic, tmp_path, capsys) -> None:
    from viper_rs.cli import main

    out = tmp_path / "r.geojson"
    gpkg = tmp_path / "out" / "r.gpkg"
    code = main(["region", *map(str, mosaic), "-q", "How many buildings are there?",
                 "--detector", "spectral", "--planner", "rules", "--chip-m", "200", "--json",
                 "--geojson", str(out), "--gpkg", str(gpkg)])
    assert code == 0
    region = json.loads(capsys.readouterr().out)
    code = main(["ask", str(mosaic[0]), "How many buildings are there?", "--detector", "spectral",
                 "--planner", "rules", "--json"])
    single = json.loads(capsys.readouterr().out)
    assert set(single) <= set(region)
    assert {"chips", "coverage"} <= set(region)
    assert len(region["chips"]) == 16 and region["chips"][0]["status"] == "ok"
    assert set(region["chips"][0]) >= {"id", "sources", "footprint_wgs84", "status", "ms"}
    assert region["coverage"]["partial"] is False
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == len(region["regions"]) == region["value"] > 0
    from pyogrio import read_info
    from pyproj import CRS

    info = read_info(gpkg, layer="regions")
    assert info["features"] == region["value"]
    assert CRS.from_user_input(info["crs"]) == CRS.from_user_input(region["image"]["crs"])
    assert sorted(p.name for p in gpkg.parent.iterdir()) == ["r.gpkg"]  # no temporary left
    if fc["features"]:
        lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0]
        assert -80 < lon < -60 and 30 < lat < 50


@pytest.mark.parametrize("extra, what", [
    (["--bbox=10,10,10.1,10.1"], "touches no source"),
    (["--chip-m", "5"], "at least 16 px"),
])
def test_cli_bad_input(mosaic, capsys, extra, what) -> None:
    from viper_rs.cli import main

    code = main(["region", *map(str, mosaic), "-q", "How many buildings are there?",
                 "--detector", "spectral", "--planner", "rules", *extra])
    err = capsys.readouterr().err
    assert code == 2 and what in err and len(err.strip().splitlines()) == 1


def test_cli_unreadable_source_and_unknown_question(mosaic, tmp_path, capsys) -> None:
    from viper_rs.cli import main

    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff")
    code = main(["region", str(junk), "-q", "How many buildings are there?", "--detector", "spectral"])
    err = capsys.readouterr().err
    assert code == 2 and "no readable source" in err
    code = main(["region", *map(str, mosaic), "-q", "Why is the sky blue?", "--detector", "spectral",
                 "--planner", "rules"])
    err = capsys.readouterr().err
    assert code == 2 and "planner" in err and len(err.strip().splitlines()) == 1


def test_a_routing_detector_keeps_the_spectral_region_semantics(mosaic) -> None:
    """``auto`` (buildings by the learned model, the rest by spectral) over a region: the
    spectral part gets the region's statistics and halo, the building model is shared (each
    part keeping one chip's results), and non-building answers equal the spectral
    detector's."""
    import torch

    from viper_rs.region.context import REGION_CACHE_ITEMS, region_halo_m, with_region_stats
    from viper_rs.vision.buildings.detector import BuildingDetector
    from viper_rs.vision.buildings.model import BuildingNet, BuildingNetConfig
    from viper_rs.vision.routed import RoutedDetector
    from viper_rs.vision.spectral import SpectralDetector

    torch.manual_seed(0)
    tiny = BuildingNet(BuildingNetConfig(widths=(4, 8)))
    det = RoutedDetector(SpectralDetector(), BuildingDetector(model=tiny))
    image = open_region(mosaic)
    assert region_halo_m(det, image, 64.0) == region_halo_m(SpectralDetector(), image, 64.0)
    routed = with_region_stats(det, image)
    assert isinstance(routed, RoutedDetector) and routed.buildings.load() is tiny
    assert routed.buildings._cache.max_items == REGION_CACHE_ITEMS == routed.primary.cache_size
    assert routed.primary.stats is not None and det.primary.stats is None
    q = "What is the area covered by trees?"
    a1, _ = ask_region(mosaic, q,
                       RegionOptions(chip_m=300.0, detector=det, planner="rules", progress=False))
    a2, _ = ask_region(mosaic, q,
                       RegionOptions(chip_m=300.0, detector="spectral", planner="rules",
                                     progress=False))
    assert a1.error is None and a1.value == a2.value
    from rasterio.warp import transform_bounds

    scene = big_scene().image  # the building model's part on a 300 m corner (4 chips)
    x0, y1 = scene.transform @ (0, 0)
    x1, y0 = scene.transform @ (300, 300)
    corner = transform_bounds(scene.crs, "EPSG:4326", x0, y0, x1, y1)
    a3, report = ask_region(mosaic, "How many buildings are there?",
                            RegionOptions(bbox=corner, chip_m=150.0, detector=det, planner="rules",
                                          progress=False))
    assert a3.error is None and not report.coverage["partial"]
    assert {r.detector for r in a3.regions} <= {"buildingnet"}
