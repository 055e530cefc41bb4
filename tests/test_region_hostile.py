"""Hostile and malformed region inputs and stores (issue 23, point 4): every case a clear
answer or a clear refusal, bounded, never a wrong number.

Sources far apart never make an ocean-wide grid; many tiny sources are read without a
reprojection each; source lists and resume manifests are read with depth, size and link
limits and never from a FIFO or device; stored chips are checked before they are trusted;
a region nothing of which was scanned is no answer; NaN is never valid ground.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from test_region import big_scene, cut

from viper_rs.core.config import Settings
from viper_rs.core.errors import InputError
from viper_rs.core.geo import GeoImage
from viper_rs.core.raster_write import write_geotiff
from viper_rs.region import RegionOptions, ask_region, estimate_region, open_region
from viper_rs.region.chips import layout, read_chip
from viper_rs.region.oracle import MosaicOracle
from viper_rs.region.resume import MANIFEST, ResumeStore
from viper_rs.synthetic import BUILDING_CLASSES
from viper_rs.tiling.sources import LIST_MAX_DEPTH, expand, scan

BUILDINGS = "How many buildings are there?"
WATER = "How many water areas are there?"


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> list[Path]:
    return cut(big_scene(), tmp_path_factory.mktemp("mosaic"))


def land(px: int, seed: int = 0) -> np.ndarray:
    """(4, px, px) uint8: vegetation with a pond."""
    rng = np.random.default_rng(seed)
    img = np.empty((4, px, px), dtype=np.int16)
    img[:] = np.array([60, 100, 50, 200])[:, None, None]
    q = px // 4
    img[:, q:px - q, q:px - q] = np.array([20, 40, 50, 10])[:, None, None]
    img += rng.integers(-4, 5, img.shape).astype(np.int16)
    return img.clip(0, 255).astype(np.uint8)


def tile(path: Path, data: np.ndarray, crs: str, x0: float, y0: float, m: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = GeoImage.from_array(data, "R,G,B,NIR", crs=crs, transform=Affine(m, 0, x0, 0, -m, y0))
    return write_geotiff(img, path)


def finishes(fn, seconds: float = 20.0):
    """``fn()``'s result or exception, failing the test when it blocks (a FIFO opened)."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"blocked for more than {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


# ----------------------------------------------------------------------------- 1. far apart
def test_sources_an_ocean_apart_are_refused_at_once_with_a_box_per_group(tmp_path) -> None:
    """Two small tiles 11,000 km apart on the equator: no working grid across the Pacific
    (it was 12.7 M px wide, laid out chip by chip past 2 GB); a refusal naming each group
    with a --bbox that asks about it alone."""
    from rasterio.warp import transform as warp

    for k, lon in enumerate((-170.0, -71.0)):
        zone = int((lon + 180) // 6) + 1
        crs = f"EPSG:{32600 + zone}"
        xs, ys = warp("EPSG:4326", crs, [lon], [0.5])
        tile(tmp_path / f"far_{k}.tif", land(64, k), crs, round(xs[0]), round(ys[0]))
    t0 = time.perf_counter()
    with pytest.raises(InputError) as info:
        open_region([tmp_path])
    assert time.perf_counter() - t0 < 30
    msg = str(info.value)
    assert "far apart" in msg and "2 group(s)" in msg and msg.count("--bbox=") == 2
    assert "far_0.tif" in msg and "far_1.tif" in msg
    box = msg.split("--bbox=")[1].split(";")[0].strip()
    image = open_region([tmp_path], bbox=box)
    assert [s.name for s in image.sources] == ["far_0.tif"]


def test_sparse_sources_lay_out_chips_over_themselves_only(tmp_path) -> None:
    """Two tiles 100 km apart in one UTM zone: one grid, two groups, and the chips laid out
    (and estimated) are those over the tiles, not the 100 km between them."""
    tile(tmp_path / "a.tif", land(128, 1), "EPSG:32614", 500_000.0, 5_210_000.0)
    tile(tmp_path / "b.tif", land(128, 2), "EPSG:32614", 600_000.0, 5_170_000.0)
    image = open_region([tmp_path])
    assert image.width > 100_000 and len(image.grid.clusters) == 2
    chips = layout(image, 64.0, 16.0)
    assert 8 <= len(chips) <= 32  # 4 cores per tile, with neighbours the halo touches
    cost = estimate_region(image, "spectral", chip_m=64.0, halo_m=16.0)
    assert cost.chip_positions < 200
    answer, report = ask_region(image, WATER,
                                RegionOptions(chip_m=64.0, detector="spectral", planner="rules"))
    assert answer.error is None
    assert report.coverage["share"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- 2. tiny tiles
def test_many_tiny_tiles_are_copied_not_reprojected(tmp_path, monkeypatch) -> None:
    """A chip over 256 tiles of 8 x 8 px on the working grid reads each tile's pixels as
    they are (no reprojection per tile): the chip equals the whole mosaic."""
    import rasterio.warp

    rng = np.random.default_rng(5)
    whole = rng.integers(1, 255, (4, 128, 128)).astype(np.uint8)
    for i in range(16):
        for j in range(16):
            tile(tmp_path / f"t_{i:02d}_{j:02d}.tif", whole[:, 8 * i:8 * i + 8, 8 * j:8 * j + 8],
                 "EPSG:32614", 500_000.0 + 8 * j, 5_210_000.0 - 8 * i)
    image = open_region([tmp_path])
    assert image.shape == (128, 128)
    calls = []
    real = rasterio.warp.reproject
    monkeypatch.setattr(rasterio.warp, "reproject", lambda *a, **k: calls.append(1) or real(*a, **k))
    chips = [c for c in layout(image, 128.0, 0.0) if c.status != "skipped"]
    assert len(chips) == 1 and len(chips[0].sources) == 256
    img = read_chip(image, chips[0])
    assert calls == []
    assert np.array_equal(img.data, whole) and img.valid.all()


# ----------------------------------------------------------------------------- 3. lists, manifests
def test_a_list_naming_itself_or_nested_too_deep_is_refused(tmp_path) -> None:
    own = tmp_path / "self.txt"
    own.write_text("self.txt\n")
    with pytest.raises(InputError, match="names itself"):
        expand([own])
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("b.txt\n")
    b.write_text("# loop\na.txt\n")
    with pytest.raises(InputError, match="names itself"):
        expand([a])
    for k in range(LIST_MAX_DEPTH + 1):
        (tmp_path / f"n{k}.txt").write_text(f"n{k + 1}.txt\n")
    (tmp_path / f"n{LIST_MAX_DEPTH + 1}.txt").write_text("")
    with pytest.raises(InputError, match="nested more than"):
        expand([tmp_path / "n0.txt"])
    assert expand([tmp_path / "n2.txt"]) == []  # LIST_MAX_DEPTH lists deep: read


def test_list_size_links_and_special_files(tmp_path, mosaic) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    big = folder / "big.txt"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(InputError, match="at most 1,000,000"):
        expand([big])
    out = folder / "out.txt"
    out.write_text(f"../{mosaic[0].parent.name}/tile_0_0.tif\n")
    with pytest.raises(InputError, match="outside the list's folder"):
        expand([out])
    (folder / "link.tif").symlink_to(mosaic[0])
    (folder / "via_link.txt").write_text("link.tif\n")
    with pytest.raises(InputError, match="outside the list's folder"):
        expand([folder / "via_link.txt"])
    absolute = folder / "abs.txt"
    absolute.write_text(f"{mosaic[0]}\n{mosaic[1]}\n")
    assert expand([absolute]) == [str(mosaic[0].resolve()), str(mosaic[1].resolve())]
    # special files are never opened here: expand passes them on (without blocking) and
    # the raster gate refuses each with the reason, so a scan lists them as skipped
    fifo = folder / "fifo.txt"
    os.mkfifo(fifo)
    raster_fifo = folder / "fifo.tif"
    os.mkfifo(raster_fifo)
    (folder / "zero.txt").symlink_to("/dev/zero")
    specials = [fifo, raster_fifo, folder / "zero.txt"]
    assert finishes(lambda: expand(specials)) == [str(p.absolute()) for p in specials]
    found = finishes(lambda: scan(specials))
    assert not found.sources
    reasons = dict(found.skipped)
    assert "is a FIFO" in reasons[str(fifo)] and "is a FIFO" in reasons[str(raster_fifo)]
    assert "character device" in reasons[str(folder / "zero.txt")]


RECIPE = {"question": "q", "detector": "d"}


def test_hostile_manifests_are_refused(tmp_path) -> None:
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InputError, match="nested deeper"):
        ResumeStore(deep, RECIPE)
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / MANIFEST).symlink_to("/dev/zero")
    with pytest.raises(InputError, match="not a regular file"):
        finishes(lambda: ResumeStore(zero, RECIPE))
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / MANIFEST)
    with pytest.raises(InputError, match="not a regular file"):
        finishes(lambda: ResumeStore(fifo, RECIPE))
    big = tmp_path / "big"
    big.mkdir()
    (big / MANIFEST).write_text(json.dumps({**RECIPE, "pad": "x" * 1_100_000}))
    with pytest.raises(InputError, match="at most 1,000,000"):
        ResumeStore(big, RECIPE)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(RECIPE))
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / MANIFEST).symlink_to(elsewhere)
    with pytest.raises(InputError, match="outside its folder"):
        ResumeStore(linked, RECIPE)
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / MANIFEST).write_text("[1, 2]")
    with pytest.raises(InputError, match="not a run's manifest"):
        ResumeStore(listed, RECIPE)
    ok = tmp_path / "ok"
    ResumeStore(ok, RECIPE)
    ResumeStore(ok, RECIPE)  # its own manifest is read back


# ----------------------------------------------------------------------------- 4. forged chips
def _resumed(image, folder: Path):
    return ask_region(image, BUILDINGS,
                      RegionOptions(chip_m=256.0, halo_m=0.0, detector=MosaicOracle(big_scene()),
                                    planner="rules", resume=folder))


def test_forged_stored_chips_refuse_the_resume(mosaic, tmp_path) -> None:
    image = open_region(mosaic)
    truth = len(big_scene().objects_of(*BUILDING_CLASSES))
    folder = tmp_path / "run"
    answer, _ = _resumed(image, folder)
    assert answer.value == truth
    answer, report = _resumed(image, folder)  # an untouched folder resumes
    assert answer.value == truth and report.coverage["computed_chips"] == 0
    stored = sorted(folder.glob("r1c1__*.npz"))
    assert len(stored) == 1 and Path(str(stored[0]) + ".sha256").is_file()
    chip = stored[0]
    original = chip.read_bytes()

    # "All one building": the whole core foreground, one instance id (digest not updated).
    with np.load(chip) as z:
        meta = json.loads(str(z["meta"]))
    h, w = meta["shape"]
    np.savez(chip, meta=np.array(json.dumps(meta)), packed=np.packbits(np.ones(h * w, bool)),
             scores=np.ones(h * w, np.float32), instances=np.full(h * w, 1, np.int32))
    with pytest.raises(InputError, match=r"stored chip r1c1 .*digest.*new --resume folder"):
        _resumed(image, folder)

    # A claimed 100000 x 100000 chip whose digest was rewritten to match: refused from its
    # headers and size, before anything is allocated.
    meta["shape"] = [100_000, 100_000]
    with open(chip, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), packed=np.zeros(16, np.uint8),
                 scores=np.zeros(0, np.float32))
    from viper_rs.region.resume import _file_digest

    Path(str(chip) + ".sha256").write_text(_file_digest(chip))
    with pytest.raises(InputError, match="stored chip r1c1 .*does not fit the chip"):
        _resumed(image, folder)

    chip.write_bytes(original)
    Path(str(chip) + ".sha256").unlink()
    with pytest.raises(InputError, match="stored chip r1c1 .*no readable digest"):
        _resumed(image, folder)


# ----------------------------------------------------------------------------- 5. no coverage
def test_nothing_scanned_is_no_answer_and_exit_2(mosaic, monkeypatch, capsys) -> None:
    """Every chip failing (a MemoryError allocating it) is not "0 at 0%": exit 2 with the
    reason; one chip failing still answers, marked partial."""
    import viper_rs.region.scan as scan
    from viper_rs.cli import main

    args = ["region", *map(str, mosaic), "-q", WATER, "--detector", "spectral", "--planner",
            "rules", "--no-progress"]

    def out_of_memory(image, chip):
        raise MemoryError("Unable to allocate 9.3 GiB")

    monkeypatch.setattr(scan, "read_chip", out_of_memory)
    code = main(args)
    out = capsys.readouterr()
    assert code == 2 and out.out.strip() == ""
    assert "nothing of the region was scanned" in out.err and "MemoryError" in out.err
    assert len(out.err.strip().splitlines()) == 1

    answer, report = ask_region(open_region(mosaic), BUILDINGS,
                                RegionOptions(chip_m=256.0, halo_m=0.0,
                                              detector=MosaicOracle(big_scene()), planner="rules",
                                              reader=out_of_memory))
    assert report.coverage["share"] == 0.0 and len(report.coverage["failed_chips"]) == 9
    assert answer.notes[0].startswith("nothing of the region was scanned")

    def one_fails(image, chip):
        if chip.id == "r0c0":
            raise MemoryError("Unable to allocate")
        return read_chip(image, chip)

    monkeypatch.setattr(scan, "read_chip", one_fails)
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "PARTIAL" in out.out and "missing coverage" in out.out


# ----------------------------------------------------------------------------- 6. NaN ground
def test_an_all_nan_tile_is_never_valid_ground(tmp_path) -> None:
    """The centre tile of the mosaic replaced by an all-NaN float file (no nodata set): its
    ground is not scanned (coverage 8/9) and nothing on it is counted."""
    paths = cut(big_scene(), tmp_path)
    centre = tmp_path / "tile_1_1.tif"
    import rasterio

    with rasterio.open(centre) as ds:
        profile = {**ds.profile, "dtype": "float32", "nodata": None}
    profile.pop("photometric", None)
    with rasterio.open(centre, "w", **profile) as ds:
        ds.write(np.full((profile["count"], profile["height"], profile["width"]), np.nan,
                         np.float32))
    scene = big_scene()
    inst = scene.instances.copy()
    inst[256:512, 256:512] = 0
    ids = {o.id for o in scene.objects_of(*BUILDING_CLASSES)}
    want = len(ids & set(np.unique(inst).tolist()))
    assert want < len(ids)
    image = open_region(paths)
    answer, report = ask_region(image, BUILDINGS,
                                RegionOptions(chip_m=128.0, halo_m=0.0,
                                              detector=MosaicOracle(scene), planner="rules",
                                              settings=Settings()))
    assert answer.value == want
    assert report.coverage["share"] == pytest.approx(8 / 9, rel=1e-3)


def test_hostile_index_descriptions_are_refused(tmp_path) -> None:
    """The chip index's description (the region funnel's --index) is read as bounded as a
    manifest: deep nesting and oversize refused with InputError, never a RecursionError."""
    from viper_rs.index.store import META_FILE, ChipIndex

    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / META_FILE).write_text("{\"a\":" * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(InputError, match="nested deeper"):
        ChipIndex.open(deep)
    big = tmp_path / "big"
    big.mkdir()
    (big / META_FILE).write_text(json.dumps({"pad": "x" * 1_100_000}))
    with pytest.raises(InputError, match="at most 1,000,000"):
        ChipIndex.open(big)
