"""The memory budget of one-image questions (issue 23.3): estimated from the file's header and
checked before any pixel is decoded; every out-of-memory a clear answer, never a traceback."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_peak import cli_peak
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from viper_rs import cli
from viper_rs.core import raster_read
from viper_rs.core.admission import RasterHeader, admission
from viper_rs.core.config import Settings
from viper_rs.core.errors import ImageError, ImageTooLarge
from viper_rs.core.geo import GeoImage
from viper_rs.core.units import bytes_text
from viper_rs.vision.cost import estimate_image, image_admission

REPO = Path(__file__).resolve().parents[1]
BUILDINGS = "How many buildings are there?"
#: A header-only "pixel bomb": 10,000 x 10,000 RGB (100 Mpx, under the 120 Mpx backstop),
#: about 10 GB for the pipeline, a few hundred KB on disk.
BOMB_SIDE = 10_000


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid RGB PNG of ``side`` x ``side`` black pixels, compressed (zlib) to ~0.3 MB."""
    z = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter byte 0 + black pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def bomb_tif(path: Path, side: int = BOMB_SIDE) -> Path:
    """A sparse tiled GeoTIFF declaring ``side`` x ``side`` RGB at 0.3 m with one block
    written (a few KB on disk)."""
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3,
                       dtype="uint8", crs=CRS.from_epsg(32614), tiled=True, compress="deflate",
                       transform=from_origin(500_000, 5_200_000, 0.3, 0.3),
                       sparse_ok=True) as ds:
        ds.write(np.full((3, 256, 256), 120, dtype=np.uint8), window=Window(0, 0, 256, 256))
    return path


def small_png(path: Path, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _cli_peak(args: list[str], env: dict[str, str] | None = None,
              timeout: float = 120) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``python -m viper_rs ARGS`` from a fresh wrapper process: (result, the CLI
    process's peak RSS in MB, seconds)."""
    t0 = time.monotonic()
    rc, out, err, mb = cli_peak(args, env=env, timeout=timeout)
    assert rc is not None, f"killed after {timeout} s: {err[-800:]}"
    return subprocess.CompletedProcess(args, rc, out, err), mb, time.monotonic() - t0


# ---------------------------------------------------------------------- before decoding
@pytest.mark.parametrize("make,extra", [(bomb_png, ["--gsd", "0.3"]), (bomb_tif, [])],
                         ids=["png", "geotiff"])
def test_header_bomb_is_refused_before_decoding_fast_and_small(tmp_path, make, extra) -> None:
    path = make(tmp_path / ("bomb.png" if make is bomb_png else "bomb.tif"))
    assert path.stat().st_size < 1_000_000
    p, peak_mb, took = _cli_peak(["ask", str(path), BUILDINGS, "--detector", "spectral",
                                  "--planner", "rules", *extra])
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "10,000 x 10,000 px" in err  # what was too large
    assert "GB of memory, over the 6.0 GB budget" in err  # the estimate (~11 GB), the budget
    assert "--image-max-memory-mb" in err and "VIPER_RS_IMAGE_MAX_MEMORY_MB" in err
    assert "crop it" in err  # the ways out: a region is read in chips, a plain PNG resampled
    assert ("python -m viper_rs region FILE -q QUESTION" if make is bomb_tif
            else "resample it coarser and give its new ground size (--gsd)") in err
    # decoding 100 Mpx alone takes 300 MB for the pixels and seconds; the refusal neither
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"
    assert took < 60


def test_check_runs_between_header_and_first_pixel(tmp_path, monkeypatch) -> None:
    path = bomb_png(tmp_path / "bomb.png", side=2000)
    seen = []

    def no_decoding(*a, **k):
        raise AssertionError("pixels decoded before the budget check")

    def refuse(header: RasterHeader) -> None:
        seen.append(header)
        raise ImageTooLarge("refused")

    monkeypatch.setattr(raster_read, "_read_pixels", no_decoding)
    with admission(refuse), pytest.raises(ImageTooLarge, match="refused"):
        GeoImage.open(path, gsd=0.3)
    h = seen[0]
    assert (h.width, h.height, h.bands, h.itemsize, h.driver) == (2000, 2000, 3, 1, "PNG")
    # outside the block nothing is checked (the backstop alone): the pixels are read
    with pytest.raises(ImageError, match="pixels decoded before the budget check"):
        GeoImage.open(path, gsd=0.3)


def test_estimate_comes_from_the_header_window_and_decimation(tmp_path) -> None:
    path = bomb_tif(tmp_path / "bomb.tif", side=4000)
    headers = []
    with admission(headers.append):
        GeoImage.open(path, window=(0, 0, 2000, 1000))
        GeoImage.open(path, window=(0, 0, 4000, 4000), out_size=(400, 400))
    window, small = headers
    assert (window.width, window.height, window.ground_pixel_m) == (2000, 1000, pytest.approx(0.3))
    assert small.pixels == 160_000 and small.decimated
    assert small.ground_pixel_m == pytest.approx(3.0)
    s = Settings()
    assert estimate_image(small, s).memory_bytes < estimate_image(window, s).memory_bytes


def test_setting_moves_the_threshold(tmp_path, monkeypatch) -> None:
    path = small_png(tmp_path / "small.png", 256)
    headers = []
    with admission(headers.append):
        GeoImage.open(path, gsd=0.5)
    need_mb = estimate_image(headers[0], Settings(), 0.5).memory_bytes / 1e6
    with admission(image_admission(Settings(image_max_memory_mb=int(need_mb) + 1), 0.5)):
        assert GeoImage.open(path, gsd=0.5).shape == (256, 256)
    low = Settings(image_max_memory_mb=int(need_mb) - 1)
    with admission(image_admission(low, 0.5)), pytest.raises(ImageTooLarge) as e:
        GeoImage.open(path, gsd=0.5)
    assert f"over the {bytes_text((int(need_mb) - 1) * 1e6)} budget" in str(e.value)
    with admission(image_admission(Settings(image_max_time_s=1.0), 0.5)), \
            pytest.raises(ImageTooLarge, match="over the 1 s budget"):
        GeoImage.open(path, gsd=0.5)
    # the CLI flag and the environment variable set it
    assert cli.main(["ask", str(path), BUILDINGS, "--gsd", "0.5", "--planner", "rules",
                     "--image-max-memory-mb", str(int(need_mb) - 1)]) == 2
    monkeypatch.setenv("VIPER_RS_IMAGE_MAX_MEMORY_MB", "1")
    assert cli.main(["ask", str(path), BUILDINGS, "--gsd", "0.5", "--planner", "rules"]) == 2


def test_app_refuses_an_upload_over_the_budget_before_decoding(tmp_path, monkeypatch) -> None:
    from viper_rs.ui.catalog import Catalog

    monkeypatch.setattr(raster_read, "_read_pixels", lambda *a, **k: pytest.fail("decoded"))
    cat = Catalog(demo=(), settings=Settings())
    with pytest.raises(ImageTooLarge, match=r"10,000 x 10,000 px .* over the 6.0 GB budget"):
        cat.add_upload(bomb_png(tmp_path / "bomb.png"), gsd=0.3)
    assert cat.keys == []


# ---------------------------------------------------------------------- out of memory
def _no_memory(*args, **kwargs):
    raise MemoryError()


def test_memory_error_in_the_detector_is_exit_2_with_one_line(tmp_path, monkeypatch,
                                                              capsys) -> None:
    from viper_rs.vision.spectral.detector import SpectralDetector

    path = small_png(tmp_path / "small.png")
    monkeypatch.setattr(SpectralDetector, "class_maps", _no_memory)
    args = ["ask", str(path), BUILDINGS, "--gsd", "0.5", "--detector", "spectral",
            "--planner", "rules", "--json"]
    assert cli.main(args) == 2  # while preparing, before the program
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "small.png" in err and "out of memory" in err
    assert "crop it" in err and "viper_rs region FILE" in err
    # inside a tool call of the program: the answer says so and the exit is 2 too
    from viper_rs.agent import Agent

    monkeypatch.setattr(Agent, "_prepare", lambda self, image, detector, program: None)
    assert cli.main(args) == 2
    answer = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert answer["error"]["type"] == "too_large"
    assert "out of memory running find on small.png (64 x 64 px" in answer["error"]["message"]


def test_memory_error_in_the_app_is_a_message_and_the_app_stays_up(tmp_path, monkeypatch) -> None:
    from viper_rs.ui.catalog import Catalog
    from viper_rs.ui.session import Controller, Options
    from viper_rs.vision.spectral.detector import SpectralDetector

    settings = Settings.from_env(cache_dir=tmp_path / "cache", sandbox_workers=1)
    c = Controller(Catalog(demo=((0, 128, 1.0),)), settings, out_dir=tmp_path / "out")
    try:
        options = Options(detector="spectral", planner="rules")
        original = SpectralDetector.class_maps
        monkeypatch.setattr(SpectralDetector, "class_maps", _no_memory)
        turn = c.ask(c.catalog.default_key, "What is the area covered by water?", options)
        assert "out of memory" in turn.message and "still running" in turn.message
        assert "Internal error" not in turn.message
        monkeypatch.setattr(SpectralDetector, "class_maps", original)
        turn = c.ask(c.catalog.default_key, "What is the area covered by water?", options)
        assert turn.ok, turn.message
    finally:
        c.close()


def test_decoder_memory_error_is_too_large_not_damaged(tmp_path, monkeypatch) -> None:
    path = small_png(tmp_path / "small.png")

    class NoMemory:
        def __init__(self, ds):
            self.ds = ds

        def __getattr__(self, name):
            return _no_memory if name == "read" else getattr(self.ds, name)

    real = raster_read._read_pixels
    monkeypatch.setattr(raster_read, "_read_pixels", lambda p, ds, win, out: real(p, NoMemory(ds), win, out))
    with pytest.raises(ImageTooLarge, match="out of memory decoding 64x64 px") as e:
        GeoImage.open(path)
    assert "damaged" not in str(e.value) and isinstance(e.value, ImageError)


def test_region_chip_out_of_memory_is_failed_not_empty(tmp_path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from test_region import big_scene, cut

    from viper_rs.region import RegionOptions, ask_region, open_region
    from viper_rs.region.oracle import MosaicOracle

    class NoMemoryOnOneChip(MosaicOracle):
        def score_map(self, image, query):
            if image.height * image.width > 0 and self.calls == 4:
                self.calls += 1
                raise MemoryError()
            self.calls += 1
            return super().score_map(image, query)

    scene = big_scene()
    detector = NoMemoryOnOneChip(scene)
    detector.calls = 0
    image = open_region(cut(scene, tmp_path))
    answer, report = ask_region(image, BUILDINGS,
                                RegionOptions(chip_m=256.0, halo_m=0.0, detector=detector,
                                              planner="rules"))
    failed = [c for c in report.chips if c["status"] == "failed"]
    assert len(failed) == 1 and "out of memory" in failed[0]["reason"]
    assert report.coverage["partial"]
    assert any("missing coverage" in n for n in answer.notes)


# ---------------------------------------------------------------------- fewer bytes per pixel
def test_rgb_uint8_of_8_bit_data_is_the_data_without_float_copies() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (3, 500, 400), dtype=np.uint8)
    image = GeoImage.from_array(data, "R,G,B", gsd=1.0)
    old = (np.stack([image.band(r) for r in "RGB"], axis=-1).clip(0, 1) * 255 + 0.5).astype(np.uint8)
    tracemalloc.start()
    out = image.rgb_uint8()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(out, old) and np.array_equal(out, np.moveaxis(data, 0, -1))
    assert peak < 4 * data[0].size  # the uint8 result (3 B/px), no float32 copy (12+ B/px)
    deep = GeoImage.from_array(data.astype(np.uint16) * 200, "R,G,B", gsd=1.0)
    old = (np.stack([deep.band(r) for r in "RGB"], axis=-1).clip(0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(deep.rgb_uint8(), old)
    tracemalloc.start()
    rgb = deep.rgb()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rgb.dtype == np.float32 and rgb.shape == (500, 400, 3)
    assert peak < 17 * data[0].size  # the result (12 B/px) and one band (4 B/px)


def test_integer_images_skip_the_finite_test_and_keep_their_mask() -> None:
    valid = np.ones((300, 200), dtype=bool)
    valid[0] = False
    data = np.ones((3, 300, 200), dtype=np.uint8)
    tracemalloc.start()
    image = GeoImage.from_array(data, "R,G,B", gsd=1.0, valid=valid)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.valid.sum() == 299 * 200 and image.white_point == 255.0
    assert peak < data[0].size  # no bands x H x W boolean array (3 B/px)
    # 16-bit data: the white point's percentile from one copy of the valid values
    deep = data.astype(np.uint16) * 1000
    tracemalloc.start()
    image = GeoImage.from_array(deep, "R,G,B", gsd=1.0, valid=valid)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.white_point == 1023.0
    assert peak < 10 * data[0].size  # 6 B/px of values and one band's; numpy's took 22
    f = np.ones((3, 4, 4), dtype=np.float32)
    f[1, 2, 2] = np.nan
    image = GeoImage.from_array(f, "R,G,B", gsd=1.0)
    assert not image.valid[2, 2] and image.valid.sum() == 15 and image.data[1, 2, 2] == 0
