"""A corpus of hostile and malformed input files (issue 23) and a bounded runner for them.

Each :class:`Case` writes its file(s) into a temporary folder (nothing here is over a few
MB; nothing is committed but this code): header-only pixel bombs, broken georeference, odd
formats behind a ``.tif`` name, truncated and empty files, special files, hostile names,
region inputs (far-apart tiles, a list naming itself, forged resume folders, an all-NaN
tile, hundreds of tiny tiles) and valid files. ``tests/test_hostile_corpus.py`` runs every
case through ``ask``, ``region`` and ``index build`` and checks the outcome class.

:class:`Runner` runs the CLI (``viper_rs.cli.main``) in a worker subprocess, one command
at a time, in-process there (a fresh interpreter per command would cost ~2 s each): the
parent kills the worker (and its process group) when a command runs past the time limit
or its resident memory past the memory limit, reports that as the outcome, and starts a
new worker for the next command. Peak memory per command is the worker's VmHWM, reset
before each command (``/proc/self/clear_refs``).

Run as ``python tests/hostile_corpus.py --worker`` by the runner only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUESTION = "How many buildings are there?"
#: The detector and planner every command uses: no model weights, no LLM.
ENGINE = ("--detector", "spectral", "--planner", "rules")
#: Exit codes of the CLI: a clear refusal is 2.
REFUSED = 2
#: Hostile pieces of file names: CSI colour, OSC 8 hyperlink (no "/" fits in a name), BEL,
#: CR, newline, right-to-left override.
ESC_NAME = "esc\x1b[31mred\x1b[0m"
OSC_NAME = "osc\x1b]8;;https:evil.example\x07link\x1b]8;;\x07"
CTRL_NAME = "bel\x07cr\rnl\nend"
BIDI_NAME = "bidi\u202efit.exe"


# ---------------------------------------------------------------------------- expectations
@dataclass(frozen=True)
class Expect:
    """What a command must do with a case.

    ``refuse``: exit 2 with one ``viper-rs: error:`` line naming the file; ``answer``:
    exit 0 with the reference answer; ``either``: one or the other; ``skip`` (index
    build): exit 0, the case's file listed as skipped, the companion valid tile indexed;
    ``index``: exit 0 with the case's files indexed (or listed as skipped when they have no
    CRS) and nothing failed."""

    kind: str
    #: Name of the reference (see :data:`REFERENCES`) the answer must equal; None: any.
    truth: str | None = None
    #: Whether a refusal must name the case's file (not for a region over its budget: the
    #: refusal is about the area, with its estimate).
    names: bool = True
    #: Whether the answer's scanned area may be at most the reference's (nodata is never
    #: ground that was scanned).
    scanned_at_most: bool = False


REFUSE = Expect("refuse")
SKIP = Expect("skip")
INDEX = Expect("index")


def answer(truth: str | None) -> Expect:
    """Exit 0 with the answer of reference ``truth`` (any answer when None)."""
    return Expect("answer", truth)


def either(truth: str | None = None, names: bool = True) -> Expect:
    """A clear refusal, or exit 0 with the answer of reference ``truth`` (any when None)."""
    return Expect("either", truth, names)


@dataclass
class Inputs:
    """What a case wrote: the sources passed to the commands (``named``: the file the
    refusal must name), extra flags per command, and commands to run first (``setup``,
    then ``after_setup``; a forged resume folder)."""

    sources: list[Path]
    named: Path | None = None
    ask_flags: list[str] = field(default_factory=list)
    region_flags: list[str] = field(default_factory=list)
    setup: list[list[str]] = field(default_factory=list)
    after_setup: Callable[[], None] | None = None
    #: A listener the command must not connect to (a network path in the input).
    listener: Listener | None = None


@dataclass(frozen=True)
class Case:
    """One corpus case: its class, how it is made and what each command must do with it
    (absent: the command is not run on it)."""

    name: str
    klass: str
    make: Callable[[Path], Inputs]
    ask: Expect | None = None
    region: Expect | None = None
    index: Expect | None = None


# ---------------------------------------------------------------------------- writers
def scene_image(seed: int = 0, size: int = 256) -> Any:
    """The synthetic scene's GeoImage (R,G,B,NIR uint8, UTM 18N, 1 m)."""
    from viper_rs.synthetic import make_scene

    return make_scene(seed, size=size).image


def write_tif(path: Path, data: Any, crs: Any, transform: Any, **profile: Any) -> Path:
    """A GeoTIFF of ``data`` (bands, rows, cols) with any ``crs``/``transform`` given."""
    import rasterio

    bands, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands,
                       dtype=data.dtype.name, crs=crs, transform=transform, **profile) as ds:
        ds.write(data)
    return path


def valid_tif(path: Path, seed: int = 0, size: int = 256, origin: tuple[float, float] | None = None,
              crs: str | None = None) -> Path:
    """Synthetic scene ``seed`` as a GeoTIFF (its own UTM place unless ``origin``/``crs``)."""
    from affine import Affine

    image = scene_image(seed, size)
    transform = image.transform if origin is None else Affine(1.0, 0, origin[0], 0, -1.0, origin[1])
    return write_tif(path, image.data, crs or image.crs, transform)


def rgb(seed: int = 0, size: int = 256) -> Any:
    """(rows, cols, 3) uint8 of the scene's R,G,B."""
    import numpy as np

    return np.ascontiguousarray(np.moveaxis(scene_image(seed, size).data[:3], 0, -1))


def png_zeros(path: Path, width: int, height: int) -> Path:
    """An RGB PNG declaring ``width`` x ``height`` px of zeros, its IDAT zlib-compressed
    (a few hundred KB for 100 Mpx)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" * (1 + 3 * width)  # filter byte + pixels
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))
    return path


def jpeg_declaring(path: Path, width: int, height: int, progressive: bool) -> Path:
    """A tiny JPEG (16 x 16 px of data) whose frame header declares ``width`` x ``height``:
    a decoder that trusts it allocates the declared size."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb(0, 64)[:16, :16]).save(buf, "JPEG", progressive=progressive, quality=90)
    data = bytearray(buf.getvalue())
    marker = b"\xff\xc2" if progressive else b"\xff\xc0"
    at = data.index(marker)
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def _plain_png(path: Path, seed: int = 0, size: int = 256) -> Path:
    from PIL import Image

    Image.fromarray(rgb(seed, size)).save(path, "PNG")
    return path


# ---------------------------------------------------------------------------- cases
def _companion(d: Path) -> Path:
    """The valid tile an ``index build`` gets beside a case's file (it must be indexed)."""
    return valid_tif(d / "companion.tif", seed=1)


def _one(path: Path, **kw: Any) -> Inputs:
    return Inputs(sources=[path], named=path, **kw)


def png_bomb(d: Path) -> Inputs:
    return _one(png_zeros(d / "bomb110mpx.png", 11_000, 10_000), ask_flags=["--gsd", "0.5"],
                region_flags=["--gsd", "0.5"])


def sparse_tif_bomb(d: Path) -> Inputs:
    import rasterio
    from affine import Affine

    path = d / "sparse200k.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200_000, height=200_000, count=3,
                       dtype="uint8", crs="EPSG:32618", tiled=True, blockxsize=1024,
                       blockysize=1024, sparse_ok=True, BIGTIFF="YES",
                       transform=Affine(0.5, 0, 500_000, 0, -0.5, 4_500_000)):
        pass
    return _one(path)


def jpeg_progressive_bomb(d: Path) -> Inputs:
    return _one(jpeg_declaring(d / "progressive100mpx.jpg", 10_000, 10_000, True),
                ask_flags=["--gsd", "0.5"])


def jpeg_baseline_bomb(d: Path) -> Inputs:
    return _one(jpeg_declaring(d / "baseline25mpx.jpg", 5_000, 5_000, False),
                ask_flags=["--gsd", "0.5"])


def _georef(name: str, a: float, e: float, crs: str = "EPSG:32618",
            origin: tuple[float, float] = (500_000.0, 4_500_000.0)) -> Callable[[Path], Inputs]:
    def make(d: Path) -> Inputs:
        from affine import Affine

        t = Affine(a, 0.0, origin[0], 0.0, e, origin[1])
        return _one(write_tif(d / f"{name}.tif", scene_image().data, crs, t))

    make.__name__ = name
    return make


def zero_transform(d: Path) -> Inputs:
    from affine import Affine

    return _one(write_tif(d / "zero_transform.tif", scene_image().data, "EPSG:32618",
                          Affine(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)))


LOCAL_WKT = 'LOCAL_CS["site grid",LOCAL_DATUM["unknown",32767],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'


def unknown_local_crs(d: Path) -> Inputs:
    from affine import Affine
    from rasterio.crs import CRS

    return _one(write_tif(d / "local_crs.tif", scene_image().data, CRS.from_wkt(LOCAL_WKT),
                          Affine(1.0, 0, 1000.0, 0, -1.0, 2000.0)))


def png_world_file(d: Path) -> Inputs:
    """A PNG with a world file of 0.15 m pixels but no CRS: never silently 1 m."""
    path = _plain_png(d / "worldfile.png")
    (d / "worldfile.pgw").write_text("0.15\n0\n0\n-0.15\n500000\n4500000\n")
    return _one(path)


def vrt_other_file(d: Path) -> Inputs:
    """A VRT named .tif pointing at another raster of the machine."""
    (d / "secret").mkdir()
    other = valid_tif(d / "secret" / "other.tif", seed=2)
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
        f'relativeToVRT="0">{other}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
        "</VRTRasterBand>" for b in (1, 2, 3))
    path = d / "vrt_other.tif"
    path.write_text(f'<VRTDataset rasterXSize="256" rasterYSize="256"><SRS>EPSG:32618</SRS>'
                    "<GeoTransform>500000, 1, 0, 4500000, 0, -1</GeoTransform>"
                    f"{bands}</VRTDataset>")
    return _one(path)


def vrt_dev_zero(d: Path) -> Inputs:
    """A raw VRT band reading /dev/zero."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}" subClass="VRTRawRasterBand">'
        '<SourceFilename relativeToVRT="0">/dev/zero</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>4096</LineOffset>"
        "</VRTRasterBand>" for b in (1, 2, 3))
    path = d / "vrt_devzero.tif"
    path.write_text('<VRTDataset rasterXSize="4096" rasterYSize="4096"><SRS>EPSG:32618</SRS>'
                    "<GeoTransform>500000, 1, 0, 4500000, 0, -1</GeoTransform>"
                    f"{bands}</VRTDataset>")
    return _one(path)


class Listener:
    """A TCP socket on 127.0.0.1 that accepts nothing: :meth:`contacted` tells whether
    anything connected (a VRT must never make the process reach the network)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def contacted(self) -> bool:
        """Whether a connection is waiting (consumed)."""
        ready, _, _ = select.select([self.sock], [], [], 0.2)
        if not ready:
            return False
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            conn.close()
        return True

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()


#: The listener of the network case (made by the case, checked by the test).
LISTENER: Listener | None = None


def vrt_http(d: Path) -> Inputs:
    """A VRT whose source is http://127.0.0.1:PORT/ (a listener that only records)."""
    global LISTENER
    if LISTENER is None:
        LISTENER = Listener()
    url = f"/vsicurl/http://127.0.0.1:{LISTENER.port}/tile.tif"
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
        f'relativeToVRT="0">{url}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
        "</VRTRasterBand>" for b in (1, 2, 3))
    path = d / "vrt_http.tif"
    path.write_text(f'<VRTDataset rasterXSize="256" rasterYSize="256"><SRS>EPSG:32618</SRS>'
                    "<GeoTransform>500000, 1, 0, 4500000, 0, -1</GeoTransform>"
                    f"{bands}</VRTDataset>")
    LISTENER.contacted()  # nothing left from an earlier command
    return _one(path, listener=LISTENER)


def gif_as_tif(d: Path) -> Inputs:
    from PIL import Image

    path = d / "gif.tif"
    Image.fromarray(rgb(0, 64)).convert("P").save(path, "GIF")
    return _one(path)


def envi_as_tif(d: Path) -> Inputs:
    """Raw bytes named .tif with an ENVI header beside (GDAL's ENVI driver opens it)."""
    path = d / "envi.tif"
    path.write_bytes(bytes(rgb(0, 64).transpose(2, 0, 1).tobytes()))
    (d / "envi.hdr").write_text(
        "ENVI\nsamples = 64\nlines = 64\nbands = 3\nheader offset = 0\nfile type = ENVI Standard\n"
        "data type = 1\ninterleave = bsq\nbyte order = 0\n"
        "map info = {UTM, 1, 1, 500000, 4500000, 1, 1, 18, North, WGS-84}\n")
    return _one(path)


def netcdf_as_tif(d: Path) -> Inputs:
    """A netCDF file (GDAL's copy of a small GeoTIFF) named .tif."""
    from rasterio.shutil import copy

    src = valid_tif(d / "src.tif", 0, 64)
    path = d / "netcdf.tif"
    copy(src, d / "nc.nc", driver="netCDF")
    src.unlink()
    (d / "nc.nc").rename(path)
    return _one(path)


def truncated_tif(d: Path) -> Inputs:
    full = valid_tif(d / "full.tif")
    data = full.read_bytes()
    path = d / "truncated.tif"
    path.write_bytes(data[: len(data) // 3])
    full.unlink()
    return _one(path)


def zero_bytes(d: Path) -> Inputs:
    path = d / "empty.tif"
    path.write_bytes(b"")
    return _one(path)


def text_as_tif(d: Path) -> Inputs:
    path = d / "notes.tif"
    path.write_text("II*\x00 this is not a TIFF\n")
    return _one(path)


def fifo(d: Path) -> Inputs:
    path = d / "fifo.tif"
    os.mkfifo(path)
    return _one(path)


def symlink_dev_zero(d: Path) -> Inputs:
    path = d / "devzero.tif"
    path.symlink_to("/dev/zero")
    return _one(path)


def directory_tif(d: Path) -> Inputs:
    path = d / "folder.tif"
    path.mkdir()
    (path / "inner.txt").write_text("x")
    return _one(path)


#: Unix sockets bound by the socket case (kept open while the corpus runs).
SOCKETS: list[socket.socket] = []


def unix_socket(d: Path) -> Inputs:
    path = d / "socket.tif"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    SOCKETS.append(s)
    return _one(path)


def _named(stem: str, valid: bool) -> Callable[[Path], Inputs]:
    def make(d: Path) -> Inputs:
        path = d / f"{stem}.tif"
        if valid:
            valid_tif(path)
        else:
            path.write_bytes(b"not a raster")
        return _one(path)

    make.__name__ = f"named_{'valid' if valid else 'broken'}"
    return make


def long_name(d: Path) -> Inputs:
    """A valid GeoTIFF whose name is NAME_MAX (255) bytes long."""
    limit = os.pathconf(d, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    path = d / ("L" * (limit - 4) + ".tif")
    valid_tif(path)
    return _one(path)


def far_apart(d: Path) -> Inputs:
    """Two small tiles about 11,000 km apart (New York area and off eastern Australia)."""
    a = valid_tif(d / "west.tif", seed=0, size=128)
    b = valid_tif(d / "east.tif", seed=1, size=128, origin=(500_000.0, 6_500_000.0),
                  crs="EPSG:32756")
    return Inputs(sources=[a, b], named=b)


def list_naming_itself(d: Path) -> Inputs:
    tile = valid_tif(d / "tile.tif")
    lst = d / "sources.txt"
    lst.write_text(f"{tile}\n{lst}\n")
    return Inputs(sources=[lst], named=lst)


def _resume_folder(d: Path) -> Path:
    folder = d / "resume"
    folder.mkdir()
    return folder


def resume_nested_manifest(d: Path) -> Inputs:
    tile = valid_tif(d / "tile.tif")
    folder = _resume_folder(d)
    (folder / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    return Inputs(sources=[tile], named=folder, region_flags=["--resume", str(folder)])


def resume_manifest_dev_zero(d: Path) -> Inputs:
    tile = valid_tif(d / "tile.tif")
    folder = _resume_folder(d)
    (folder / "manifest.json").symlink_to("/dev/zero")
    return Inputs(sources=[tile], named=folder, region_flags=["--resume", str(folder)])


def _forged(shape: tuple[int, int] | None) -> Callable[[Path], Inputs]:
    """A resume folder of a real run whose stored chips are rewritten: all one building
    (``shape`` None) or claiming a ``shape`` (100000 x 100000) the arrays do not have."""

    def make(d: Path) -> Inputs:
        import numpy as np

        tile = valid_tif(d / "tile.tif")
        folder = d / "resume"
        argv = ["region", str(tile), "-q", QUESTION, "--json", *ENGINE, "--no-progress",
                "--resume", str(folder)]

        def forge() -> None:
            for npz in folder.glob("*.npz"):
                with np.load(npz, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                meta = json.loads(str(arrays["meta"]))
                h, w = meta["shape"]
                if shape is None:
                    arrays["packed"] = np.packbits(np.ones(h * w, bool))
                    arrays["scores"] = np.ones(h * w, np.float32)
                    if "instances" in arrays:
                        arrays["instances"] = np.ones(h * w, arrays["instances"].dtype)
                else:
                    meta["shape"] = list(shape)
                arrays["meta"] = np.array(json.dumps(meta))
                with open(npz, "wb") as fh:
                    np.savez(fh, **arrays)

        return Inputs(sources=[tile], named=folder, region_flags=["--resume", str(folder)],
                      setup=[argv], after_setup=forge)

    make.__name__ = "forged_chip" if shape is None else "forged_shape"
    return make


def nan_tile_beside_real(d: Path) -> Inputs:
    """An all-NaN float32 tile east of the real one: it must not count as ground."""
    import numpy as np
    from affine import Affine

    real = valid_tif(d / "real.tif")
    t = scene_image().transform
    nan = np.full((4, 256, 256), np.nan, np.float32)
    write_tif(d / "nan.tif", nan, "EPSG:32618", Affine(t.a, 0, t.c + 256 * t.a, 0, t.e, t.f))
    return Inputs(sources=[real, d / "nan.tif"], named=d / "nan.tif")


def many_tiny_tiles(d: Path) -> Inputs:
    """The 192 x 192 px scene cut into 576 tiles of 8 x 8 px (a folder)."""
    from affine import Affine

    image = scene_image(0, 192)
    t = image.transform
    folder = d / "tiles"
    folder.mkdir()
    for r in range(0, 192, 8):
        for c in range(0, 192, 8):
            write_tif(folder / f"t_{r:03d}_{c:03d}.tif", image.data[:, r:r + 8, c:c + 8],
                      image.crs, Affine(t.a, 0, t.c + c * t.a, 0, t.e, t.f + r * t.e))
    return Inputs(sources=[folder], named=folder)


def valid_geotiff(d: Path) -> Inputs:
    return _one(valid_tif(d / "scene.tif"))


def valid_png(d: Path) -> Inputs:
    return _one(_plain_png(d / "scene.png"), ask_flags=["--gsd", "1.0"])


def valid_jpeg(d: Path) -> Inputs:
    from PIL import Image

    path = d / "scene.jpg"
    Image.fromarray(rgb()).save(path, "JPEG", quality=95)
    return _one(path, ask_flags=["--gsd", "1.0"])


def valid_tile_alone(d: Path) -> Inputs:
    return _one(valid_tif(d / "scene.tif"))


# The answers the valid and "still answers" cases must give, each from a clean input run
# the same way (name -> (make, command)): the scene in memory (no file read at all), or
# the scene read whole as one tile.
REFERENCES: dict[str, tuple[str, Callable[[Path], Inputs] | None]] = {
    "scene": ("memory", None),
    "scene192_region": ("region", lambda d: _one(valid_tif(d / "whole.tif", 0, 192))),
    "real_alone": ("region", lambda d: _one(valid_tif(d / "real.tif"))),
    "png_at_0.15m": ("ask", lambda d: _one(_plain_png(d / "plain.png"),
                                           ask_flags=["--gsd", "0.15"])),
    "far_apart_sum": ("region-sum", lambda d: Inputs(
        sources=[valid_tif(d / "w.tif", 0, 128),
                 valid_tif(d / "e.tif", 1, 128, (500_000.0, 6_500_000.0), "EPSG:32756")])),
}

_BAD = dict(ask=REFUSE, region=REFUSE, index=SKIP)

CASES: list[Case] = [
    # header-only pixel bombs: refused with an estimate, or answered within the limits
    Case("png_110mpx_zeros", "pixel bomb", png_bomb, ask=either(), region=either(names=False),
         index=SKIP),
    Case("tif_sparse_200k", "pixel bomb", sparse_tif_bomb, ask=either(),
         region=either(names=False), index=SKIP),
    Case("jpeg_progressive_100mpx", "pixel bomb", jpeg_progressive_bomb, ask=either(),
         index=SKIP),
    Case("jpeg_baseline_25mpx", "pixel bomb", jpeg_baseline_bomb, ask=either(), index=SKIP),
    # broken georeference
    Case("pixel_nan", "georeference", _georef("pixel_nan", float("nan"), float("nan")), **_BAD),
    Case("pixel_inf", "georeference", _georef("pixel_inf", float("inf"), -float("inf")), **_BAD),
    Case("pixel_1e30", "georeference", _georef("pixel_1e30", 1e30, -1e30), **_BAD),
    Case("pixel_1e200", "georeference", _georef("pixel_1e200", 1e200, -1e200), **_BAD),
    Case("zero_transform", "georeference", zero_transform, **_BAD),
    Case("local_crs", "georeference", unknown_local_crs, **_BAD),
    Case("wgs84_lat_95", "georeference",
         _georef("lat95", 0.00001, -0.00001, "EPSG:4326", (10.0, 95.0)), **_BAD),
    # its world file's 0.15 m pixels are used, or it is refused: never taken as 1 m
    Case("png_world_file", "georeference", png_world_file, ask=either("png_at_0.15m"),
         index=SKIP),
    # other formats behind .tif
    Case("vrt_other_file", "format", vrt_other_file, **_BAD),
    Case("vrt_dev_zero", "format", vrt_dev_zero, **_BAD),
    Case("vrt_http", "format", vrt_http, **_BAD),
    Case("gif_as_tif", "format", gif_as_tif, **_BAD),
    Case("envi_as_tif", "format", envi_as_tif, **_BAD),
    Case("netcdf_as_tif", "format", netcdf_as_tif, **_BAD),
    # truncated and empty
    Case("truncated_tif", "truncated", truncated_tif, **_BAD),
    Case("zero_bytes", "truncated", zero_bytes, **_BAD),
    Case("text_as_tif", "truncated", text_as_tif, **_BAD),
    # special files
    Case("fifo", "special file", fifo, **_BAD),
    Case("symlink_dev_zero", "special file", symlink_dev_zero, **_BAD),
    Case("directory_tif", "special file", directory_tif, ask=REFUSE, region=REFUSE),
    Case("unix_socket", "special file", unix_socket, **_BAD),
    # hostile names: a valid image answers, a broken one is one escaped line
    Case("name_esc_valid", "name", _named(ESC_NAME, True), ask=answer("scene"),
         region=answer("scene"), index=INDEX),
    Case("name_osc_valid", "name", _named(OSC_NAME, True), ask=answer("scene")),
    Case("name_ctrl_valid", "name", _named(CTRL_NAME, True), ask=answer("scene"),
         region=answer("scene")),
    Case("name_bidi_valid", "name", _named(BIDI_NAME, True), ask=answer("scene")),
    Case("name_esc_broken", "name", _named(ESC_NAME, False), ask=REFUSE, index=SKIP),
    Case("name_osc_broken", "name", _named(OSC_NAME, False), ask=REFUSE),
    Case("name_ctrl_broken", "name", _named(CTRL_NAME, False), ask=REFUSE, region=REFUSE),
    Case("name_bidi_broken", "name", _named(BIDI_NAME, False), ask=REFUSE),
    Case("name_max_len", "name", long_name, ask=answer("scene"), region=answer("scene"),
         index=INDEX),
    # region inputs
    Case("tiles_11000km_apart", "region", far_apart,
         region=either("far_apart_sum", names=False)),
    Case("list_naming_itself", "region", list_naming_itself, region=either("scene"),
         index=either()),
    Case("resume_manifest_nested", "region", resume_nested_manifest, region=REFUSE),
    Case("resume_manifest_dev_zero", "region", resume_manifest_dev_zero, region=REFUSE),
    Case("resume_forged_chip", "region", _forged(None), region=either("scene")),
    Case("resume_forged_shape", "region", _forged((100_000, 100_000)), region=either("scene")),
    Case("nan_tile_beside_real", "region", nan_tile_beside_real,
         region=Expect("answer", "real_alone", scanned_at_most=True)),
    Case("576_tiles_8px", "region", many_tiny_tiles, region=either("scene192_region")),
    # valid files answer as before
    Case("valid_geotiff", "valid", valid_geotiff, ask=answer("scene"), region=answer("scene"),
         index=INDEX),
    Case("valid_png_gsd", "valid", valid_png, ask=answer("scene"), index=INDEX),
    # JPEG compression moves the spectral answer (2 of the scene's 3 here): any answer.
    Case("valid_jpeg_gsd", "valid", valid_jpeg, ask=answer(None), index=INDEX),
]


# ---------------------------------------------------------------------------- argv
def argv_for(command: str, inputs: Inputs, d: Path, n: int = 0) -> list[str]:
    """The CLI arguments of ``command`` (ask, region, index) on a case's inputs."""
    srcs = [str(p) for p in inputs.sources]
    if command == "ask":
        return ["ask", srcs[0], QUESTION, "--json", *ENGINE, *inputs.ask_flags]
    if command == "region":
        return ["region", *srcs, "-q", QUESTION, "--json", *ENGINE, "--no-progress",
                *inputs.region_flags]
    return ["index", "build", *srcs, str(_companion(d)), "--out", str(d / f"index{n}"),
            "--json", "--quiet", "--embedder", "spectral", "--no-attributes", "--no-overlays"]


# ---------------------------------------------------------------------------- runner
@dataclass
class Outcome:
    """How one command ended: ``status`` ok (it returned ``rc``), timeout, memory (killed
    past the limit) or crash (the worker died); its output, seconds and peak RSS (MB)."""

    status: str
    rc: int | None
    out: str
    err: str
    seconds: float
    peak_mb: float


#: Longest wait for a new worker to import the CLI (seconds).
STARTUP_S = 180.0


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Runner:
    """Runs CLI commands in a worker subprocess, bounded in time and resident memory."""

    def __init__(self, workdir: Path, timeout_s: float = 30.0, memory_mb: float = 2048.0,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.count = 0

    def _start(self) -> subprocess.Popen:
        """The worker, started when there is none; a new one is waited for until it has
        imported the CLI's commands (not charged to the next command's time)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = proc = subprocess.Popen(
                [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env,
                cwd=self.workdir, start_new_session=True)
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], STARTUP_S)
            if not ready or proc.stdout.readline().strip() != b"ready":
                self._kill()
                raise RuntimeError(f"the corpus worker did not start in {STARTUP_S:g} s")
        return self.proc

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its own children
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)

    def run(self, argv: list[str], timeout_s: float | None = None) -> Outcome:
        """Run ``viper_rs.cli.main(argv)`` in the worker."""
        return self._request({"argv": argv}, timeout_s)

    def probe(self, sleep_s: float = 0.0, allocate_mb: int = 0) -> Outcome:
        """The worker sleeps ``sleep_s`` and holds ``allocate_mb`` MB: the runner's own
        bounds are tested with it."""
        return self._request({"probe": [sleep_s, allocate_mb]}, None)

    def truth(self, seed: int = 0, size: int = 256) -> Outcome:
        """The answer to :data:`QUESTION` on synthetic scene ``seed`` in memory (no file)."""
        return self._request({"truth": [seed, size]}, None)

    def _request(self, request: dict[str, Any], timeout_s: float | None) -> Outcome:
        self.count += 1
        out = self.workdir / f"run{self.count}.out"
        err = self.workdir / f"run{self.count}.err"
        request = {**request, "out": str(out), "err": str(err)}
        limit = self.timeout_s if timeout_s is None else timeout_s
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        start = time.monotonic()
        peak = 0.0
        status = "crash"
        reply: dict[str, Any] = {}
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], 0.1)
                if ready:
                    line = proc.stdout.readline()
                    if line:
                        reply = json.loads(line)
                        status = "ok"
                    break
                peak = max(peak, _rss_mb(proc.pid))
                if peak > self.memory_mb:
                    status = "memory"
                    break
                if time.monotonic() - start > limit:
                    status = "timeout"
                    break
                if proc.poll() is not None:
                    break
        except (BrokenPipeError, OSError, ValueError):
            status = "crash"
        seconds = time.monotonic() - start
        if status != "ok":
            self._kill()

        def text(path: Path) -> str:
            try:
                return path.read_bytes().decode("utf-8", "backslashreplace")
            except OSError:
                return ""

        peak = max(peak, float(reply.get("peak_mb", 0.0)))
        if peak > self.memory_mb and status == "ok":
            status = "memory"
        return Outcome(status, reply.get("rc"), text(out), text(err),
                       float(reply.get("seconds", seconds)), peak)

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None and self.proc.poll() is None and self.proc.stdin:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
        self._kill()


# ---------------------------------------------------------------------------- worker
def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _truth(seed: int, size: int) -> int:
    from viper_rs.agent import Agent
    from viper_rs.core.config import Settings

    settings = Settings.from_env(detector="spectral", planner="rules")
    with Agent(settings) as agent:
        result = agent.ask(scene_image(seed, size), QUESTION)
    print(json.dumps({"value": result.value, "answer": result.answer}))
    return 0 if result.error is None else 1


def worker() -> None:
    """Serve requests (one JSON line each) on stdin; each command's fd 1 and 2 go to the
    files the request names; the reply (one JSON line) goes to the original stdout."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    # The commands' own imports (models' libraries) once, before the first command's clock.
    import viper_rs.agent.loop  # noqa: F401
    import viper_rs.index.build  # noqa: F401
    import viper_rs.region.api  # noqa: F401
    from viper_rs.cli import main  # imported once: every command after it is cheap

    reply.write("ready\n")
    for line in sys.stdin:
        request = json.loads(line)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
        sys.stdout.flush()
        sys.stderr.flush()
        fds = []
        for fd, name in ((1, "out"), (2, "err")):
            f = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
            fds.append(fd)
        start = time.monotonic()
        try:
            if "truth" in request:
                rc = _truth(*request["truth"])
            elif "probe" in request:
                sleep_s, allocate_mb = request["probe"]
                held = bytearray(allocate_mb * 2**20)
                for i in range(0, len(held), 4096):
                    held[i] = 1
                time.sleep(sleep_s)
                del held
                rc = 0
            else:
                rc = main(request["argv"])
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported as Python would, the worker lives on
            import traceback

            traceback.print_exc()
            rc = 1
        seconds = time.monotonic() - start
        sys.stdout.flush()
        sys.stderr.flush()
        reply.write(json.dumps({"rc": rc, "seconds": seconds, "peak_mb": _peak_mb()}) + "\n")


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker()
