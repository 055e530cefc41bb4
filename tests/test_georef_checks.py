"""Issue 23.1: one georeference check for every entry point (viper_rs/core/georef.py).

Broken or implausible georeference (non-finite, huge or tiny pixels, singular or sheared
transforms, a local CRS, latitudes past 90 degrees, coordinates far outside the CRS's area
of use) is refused with one line naming the file and the value: ``ask`` exits 2,
``index build`` and ``region`` leave the file out and list it, ``GeoImage.open`` (also its
CRS override) and ``GeoImage.from_array`` raise ImageError. An image without georeference
answers in pixels with a note saying so (never a silent 1 m); ``--gsd`` measures it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from viper_rs.cli import main
from viper_rs.core.errors import ImageError, InputError
from viper_rs.core.geo import GeoImage
from viper_rs.core.georef import MAX_PIXEL_M, MIN_PIXEL_M, georeference_problem, gsd_problem
from viper_rs.region.grid import build_grid
from viper_rs.tiling.sources import Source, describe

UTM = "EPSG:32633"  # UTM 33N: 12-18 E
#: A valid 0.5 m grid in UTM 33N (about 15 E, 37.9 N).
GOOD = Affine(0.5, 0, 500_000, 0, -0.5, 4_200_000)
LOCAL_WKT = ('LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],'
             'AXIS["X",EAST],AXIS["Y",NORTH]]')
ENG_WKT2 = ('ENGCRS["site grid",EDATUM["site"],CS[Cartesian,2],'
            'AXIS["x",east,ORDER[1],LENGTHUNIT["metre",1]],'
            'AXIS["y",north,ORDER[2],LENGTHUNIT["metre",1]]]')
NAN, INF = float("nan"), float("inf")

#: (file stem, CRS, transform, text the one-line refusal must hold): one per class.
BROKEN = [
    ("nan_pixel", UTM, Affine(NAN, 0, 500_000, 0, -0.5, 4_200_000), "is nan"),
    ("inf_pixel", UTM, Affine(INF, 0, 500_000, 0, -0.5, 4_200_000), "is inf"),
    ("huge_pixel", UTM, Affine(1e30, 0, 500_000, 0, -1e30, 4_200_000), "1e+30"),
    ("overflow_pixel", UTM, Affine(1e200, 0, 500_000, 0, -1e200, 4_200_000), "1e+200"),
    ("tiny_pixel", UTM, Affine(1e-9, 0, 500_000, 0, -1e-9, 4_200_000), "1e-09"),
    ("no_geotransform", UTM, Affine.identity(), "no geotransform"),
    ("zero_transform", UTM, Affine(0, 0, 500_000, 0, 0, 4_200_000), "singular"),
    ("singular", UTM, Affine(0.5, 0.5, 500_000, 0.5, 0.5, 4_200_000), "singular"),
    ("sheared", UTM, Affine(0.5, 0.499, 500_000, 0, -0.001, 4_200_000), "shears"),
    ("local_cs", LOCAL_WKT, GOOD, "cannot be placed on the globe"),
    ("eng_crs", ENG_WKT2, GOOD, "cannot be placed on the globe"),
    ("lat_95", "EPSG:4326", Affine(1e-5, 0, 10, 0, -1e-5, 95), "latitude 95"),
    ("lon_500", "EPSG:4326", Affine(1e-5, 0, 500, 0, -1e-5, 45), "longitude 500"),
    ("utm_far_east", UTM, Affine(0.5, 0, 5e7, 0, -0.5, 4_200_000), "50000000"),
    ("lambert93_south", "EPSG:2154", Affine(0.5, 0, 1.5e7, 0, -0.5, -6e6), "area of use"),
    ("mercator_pole", "EPSG:3857", Affine(1, 0, 0, 0, -1, 1e8), "outside the plausible"),
]
BROKEN_IDS = [b[0] for b in BROKEN]


def write_tif(path: Path, crs, transform: Affine, size: int = 64, seed: int = 0) -> Path:
    """A small 3-band uint8 GeoTIFF with the given CRS and transform set as they are."""
    rng = np.random.default_rng(seed)
    data = rng.integers(40, 200, (3, size, size), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint8", crs=crs, transform=transform) as ds:
        ds.write(data)
    return path


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("viper-rs: error: "), err
    return lines[0]


# --------------------------------------------------------------------------- the rules
def test_valid_georeferences_pass() -> None:
    """Real kinds of georeference stay accepted: UTM, NAD83 UTM, WGS84 degrees (also near
    the poles and the antimeridian), Web Mercator, US survey feet, a rotated grid, a
    south-up grid, a UTM grid just outside its zone, a grid touching the poles' edge."""
    ok = [
        (UTM, GOOD),
        ("EPSG:26910", Affine(1, 0, 560_000, 0, -1, 4_240_000)),
        ("EPSG:4326", Affine(1e-5, 0, -122.3, 0, -1e-5, 38.3)),
        ("EPSG:4326", Affine(1e-4, 0, 179.99, 0, -1e-4, -16.0)),
        ("EPSG:4326", Affine(1e-4, 0, 10.0, 0, -1e-4, 89.99)),
        ("EPSG:3857", Affine(0.2, 0, -8_237_000, 0, -0.2, 4_970_000)),
        ("EPSG:2263", Affine(1, 0, 980_000, 0, -1, 200_000)),  # NY Long Island, US ft
        (UTM, Affine(0.4, -0.3, 500_000, -0.3, -0.4, 4_200_000)),  # rotated 37 degrees
        (UTM, Affine(0.5, 0, 500_000, 0, 0.5, 4_200_000)),  # south-up
        (UTM, Affine(0.5, 0, 1_000_000, 0, -0.5, 4_200_000)),  # ~26 E, beyond zone 33
    ]
    for crs, t in ok:
        assert georeference_problem("x.tif", crs, t, 64, 64) is None, (crs, t)


@pytest.mark.parametrize("stem, crs, transform, needle", BROKEN, ids=BROKEN_IDS)
def test_each_class_is_named_in_one_line(stem, crs, transform, needle) -> None:
    problem = georeference_problem(f"{stem}.tif", crs, transform, 64, 64)
    assert problem is not None and problem.startswith(f"{stem}.tif: ")
    assert needle in problem and "\n" not in problem


def test_stated_range_and_gsd() -> None:
    assert (MIN_PIXEL_M, MAX_PIXEL_M) == (0.001, 10_000.0)
    assert gsd_problem("a.png", 0.3) is None and gsd_problem("a.png", None) is None
    for bad in (1e30, 1e-6, NAN, INF, -1.0):
        assert "a.png: --gsd" in gsd_problem("a.png", bad)


# --------------------------------------------------------------------------- ask
@pytest.mark.parametrize("stem, crs, transform, needle", BROKEN, ids=BROKEN_IDS)
def test_ask_exits_2_with_one_line(tmp_path, capsys, stem, crs, transform, needle) -> None:
    tif = write_tif(tmp_path / f"{stem}.tif", crs, transform)
    code = main(["ask", str(tif), "How many buildings are there?", "--detector", "spectral",
                 "--planner", "rules"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"{stem}.tif" in line and needle in line and "--gsd" in line


def test_open_and_overrides_and_arrays_are_checked(tmp_path) -> None:
    tif = write_tif(tmp_path / "huge.tif", UTM, Affine(1e30, 0, 500_000, 0, -1e30, 4_200_000))
    with pytest.raises(ImageError, match=r"huge\.tif: pixel size 1e\+30 m"):
        GeoImage.open(tif)
    plain = tmp_path / "plain.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(plain)
    with pytest.raises(ImageError, match=r"plain\.png: .*latitude 95"):
        GeoImage.open(plain, crs="EPSG:4326", transform=Affine(1e-5, 0, 10, 0, -1e-5, 95))
    with pytest.raises(ImageError, match=r"plain\.png: CRS 'not a crs' cannot be read"):
        GeoImage.open(plain, crs="not a crs", transform=GOOD)
    with pytest.raises(ImageError, match="cannot be placed on the globe"):
        GeoImage.from_array(np.zeros((3, 8, 8), np.uint8), crs=LOCAL_WKT, transform=GOOD)
    with pytest.raises(ImageError, match="singular"):
        GeoImage.from_array(np.zeros((3, 8, 8), np.uint8), crs=UTM,
                            transform=Affine(0, 0, 500_000, 0, 0, 4_200_000))
    with pytest.raises(ImageError, match=r"--gsd 1e\+30 m"):
        GeoImage.from_array(np.zeros((3, 8, 8), np.uint8), gsd=1e30)
    good = GeoImage.from_array(np.zeros((3, 8, 8), np.uint8), crs=UTM, transform=GOOD)
    assert good.notes == [] and good.pixel_area_m2 == pytest.approx(0.25, rel=1e-3)


def test_gsd_measures_an_image_whose_georeference_is_broken(tmp_path, capsys) -> None:
    """--gsd stands in for a refused georeference, and the answer says so."""
    tif = write_tif(tmp_path / "huge.tif", UTM, Affine(1e30, 0, 500_000, 0, -1e30, 4_200_000))
    code = main(["ask", str(tif), "What is the area of grass?", "--detector", "spectral",
                 "--planner", "rules", "--gsd", "0.5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["area_unit"] == "m2" and out["image"]["crs"] is None
    assert out["image"]["gsd_m"] == pytest.approx(0.5)
    assert any("huge.tif: pixel size 1e+30 m" in n and "--gsd 0.5" in n for n in out["notes"])
    code = main(["ask", str(tif), "What is the area of grass?", "--gsd", "1e30"])
    assert code == 2 and "--gsd 1e+30 m is outside" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- no georeference
def test_world_file_without_crs_answers_in_pixels_with_a_note(tmp_path, capsys) -> None:
    """GDAL reads a .pgw world file's transform but no CRS: the image has no ground size,
    the answer is in pixels and says so; --gsd gives m2 and no such note."""
    from PIL import Image

    png = tmp_path / "tile.png"
    rgb = np.full((64, 64, 3), (90, 140, 60), np.uint8)
    Image.fromarray(rgb).save(png)
    (tmp_path / "tile.pgw").write_text("0.15\n0\n0\n-0.15\n500000\n4200000\n")
    with rasterio.open(png) as ds:  # what GDAL makes of it
        assert ds.crs is None and ds.transform.a == pytest.approx(0.15)
    image = GeoImage.open(png)
    assert image.area_unit == "px" and image.gsd is None and image.crs is None
    assert len(image.notes) == 1 and "0.15 units per pixel" in image.notes[0]
    plain = tmp_path / "plain.png"
    Image.fromarray(rgb).save(plain)
    for window in (None, (8, 8, 32, 32)):  # a window's offset is no world file
        assert GeoImage.open(plain, window=window).notes == [
            f"{plain}: no georeference: areas in pixels; pass --gsd M for metres"]
    # vegetation is told pixel by pixel (grass, told by texture in metres, is refused:
    # tests/test_no_ground_size.py)
    q = "What is the area covered by vegetation?"
    code = main(["ask", str(png), q, "--detector", "spectral", "--planner", "rules", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["area_unit"] == "px" and "px" in out["answer"]
    note = out["notes"][0]
    assert "tile.png: no georeference" in note
    assert "areas in pixels; pass --gsd M for metres" in note
    code = main(["ask", str(png), q, "--detector", "spectral", "--planner", "rules", "--json",
                 "--gsd", "0.15"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["area_unit"] == "m2"
    assert not any("no georeference" in n for n in out["notes"])


def test_no_ground_size_assumptions_are_stated(tmp_path) -> None:
    """Every answer about an image without a ground size carries the no-georeference
    note, and a detector that assumes a scale says which (never a silent 1 m)."""
    from viper_rs.agent import Agent
    from viper_rs.core.config import Settings

    image = GeoImage.from_array(np.full((3, 48, 48), 120, np.uint8), "R,G,B", name="arr")
    assert image.notes == ["arr: no georeference: areas in pixels; pass --gsd M for metres"]
    with Agent(Settings(detector="spectral", planner="rules")) as agent:
        answer = agent.ask(image, "What is the area of vegetation?")
        refused = agent.ask(image, "How many buildings are there?")
    assert answer.error is None and answer.notes[0] == image.notes[0]
    assert any("taken in pixels (1 px as 1 m)" in n for n in answer.notes)
    # a class told in metres is refused, never counted at an assumed 1 m
    assert refused.error["type"] == "no_ground_size" and refused.value is None
    assert refused.error["message"].startswith("arr has no ground size; pass --gsd M")
    grounded = GeoImage.from_array(np.full((3, 48, 48), 120, np.uint8), "R,G,B", gsd=0.3)
    assert grounded.notes == []


# --------------------------------------------------------------------------- index build
def test_index_build_skips_and_lists_bad_files(tmp_path, capsys) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_tif(folder / "good.tif", UTM, GOOD, size=128)
    bad = {stem: needle for stem, _, _, needle in BROKEN}
    for stem, crs, transform, _ in BROKEN:
        write_tif(folder / f"{stem}.tif", crs, transform)
    code = main(["index", "build", str(folder), "--out", str(tmp_path / "idx"), "--embedder",
                 "spectral", "--no-overlays", "--no-attributes", "--quiet", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["sources"] == 1 and report["indexed"] >= 1
    skipped = {Path(uri).stem: why for uri, why in report["skipped_sources"]}
    assert set(skipped) == set(bad)
    for stem, needle in bad.items():
        assert needle in skipped[stem] and "\n" not in skipped[stem]
    # the text report lists them too
    code = main(["index", "build", str(folder), "--out", str(tmp_path / "idx"), "--embedder",
                 "spectral", "--no-overlays", "--no-attributes", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0 and f"{len(bad)} sources not indexed" in text and "nan_pixel.tif" in text


def test_index_build_with_only_bad_files_exits_2(tmp_path, capsys) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_tif(folder / "lat_95.tif", "EPSG:4326", Affine(1e-5, 0, 10, 0, -1e-5, 95))
    code = main(["index", "build", str(folder), "--out", str(tmp_path / "idx"), "--embedder",
                 "spectral", "--no-overlays", "--no-attributes", "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "lat_95.tif" in line and "latitude 95" in line


def test_describe_refuses_with_input_error(tmp_path) -> None:
    tif = write_tif(tmp_path / "sheared.tif", UTM, Affine(0.5, 0.499, 500_000, 0, -0.001,
                                                          4_200_000))
    with pytest.raises(InputError, match=r"sheared\.tif: transform .* shears"):
        describe(str(tif))


# --------------------------------------------------------------------------- region
def test_region_leaves_bad_sources_out_and_lists_them(tmp_path, capsys) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_tif(folder / "good.tif", UTM, GOOD, size=128)
    for stem, crs, transform, _ in BROKEN:
        write_tif(folder / f"{stem}.tif", crs, transform)
    code = main(["region", str(folder), "-q", "How many buildings are there?", "--detector",
                 "spectral", "--planner", "rules", "--no-progress", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["error"] is None
    note = next(n for n in out["notes"] if "left out of the region" in n)
    assert note.startswith(f"{len(BROKEN)} source(s) left out")
    assert "nan_pixel.tif" in note or "eng_crs.tif" in note  # the first three are named


def test_region_with_only_bad_sources_exits_2(tmp_path, capsys) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_tif(folder / "utm_far_east.tif", UTM, Affine(0.5, 0, 5e7, 0, -0.5, 4_200_000))
    code = main(["region", str(folder), "-q", "How many buildings are there?", "--detector",
                 "spectral", "--planner", "rules", "--no-progress"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "utm_far_east.tif" in line and "50000000" in line


def test_region_grid_checks_given_sources() -> None:
    """Sources that never went through describe (an index's, a caller's) are checked by
    the grid: the bad one is skipped with its reason, never a raw PROJ/GEOS error."""
    def source(name: str, crs: str, t: Affine) -> Source:
        return Source(uri=f"/x/{name}", width=64, height=64, count=3, crs=crs,
                      transform=tuple(t)[:6], white_point=255.0, fingerprint=name)

    good = source("good.tif", UTM, GOOD)
    bad = [source(f"{stem}.tif", crs if isinstance(crs, str) else str(crs), t)
           for stem, crs, t, _ in BROKEN]
    grid = build_grid([good, *bad])
    assert grid.used == [0]
    assert {Path(uri).name for uri, _ in grid.skipped} == {f"{b[0]}.tif" for b in BROKEN}
    with pytest.raises(InputError, match="no source could be placed"):
        build_grid(bad)
    assert math.isfinite(grid.transform.a) and grid.width == grid.height == 64


@pytest.mark.parametrize("pixel_m", ["1e30", "0.00001"])
def test_region_gsd_outside_the_range_is_refused(tmp_path, capsys, pixel_m) -> None:
    tif = write_tif(tmp_path / "good.tif", UTM, GOOD)
    code = main(["region", str(tif), "-q", "How many buildings are there?", "--detector",
                 "spectral", "--planner", "rules", "--no-progress", "--gsd", pixel_m])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "outside the plausible pixel size range" in line
