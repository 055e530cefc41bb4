"""The raster gate (issue 23, point 2): no input file makes GDAL read another file, a device
or the network, and no special file blocks. Each hostile case goes through ``ask``, the
sources of ``index build`` and ``region``, and the app's upload; valid GeoTIFF, PNG and JPEG
still open."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from viper_rs.cli import main
from viper_rs.core.errors import ImageError, InputError
from viper_rs.core.geo import GeoImage
from viper_rs.core.rasterfile import ALLOWED_DRIVERS, checked_path, open_raster
from viper_rs.tiling.sources import scan
from viper_rs.ui.catalog import Catalog

#: Longest any refusal may take (a FIFO must be refused, not waited on).
LIMIT_S = 30.0
SIZE = 64


# ------------------------------------------------------------------------------ helpers
def write_tif(path: Path, value: int | None = None) -> Path:
    """A 3-band 64 x 64 px GeoTIFF at 1 m in UTM 10N."""
    rng = np.random.default_rng(0)
    data = (rng.random((3, SIZE, SIZE)) * 200).astype("uint8") if value is None else \
        np.full((3, SIZE, SIZE), value, "uint8")
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=3,
                       dtype="uint8", crs="EPSG:32610",
                       transform=from_origin(500_000, 4_200_000, 1, 1)) as ds:
        ds.write(data)
    return path


def write_vrt(path: Path, source: str, raw: bool = False) -> Path:
    """A 3-band VRT (under whatever name ``path`` has) whose pixels come from ``source``:
    a raster (simple source) or, with ``raw``, any file read as raw bytes."""
    if raw:
        band = ('<VRTRasterBand dataType="Byte" band="{b}" subClass="VRTRawRasterBand">'
                f'<SourceFilename relativeToVRT="0">{source}</SourceFilename>'
                f'<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>'
                f'<LineOffset>{SIZE}</LineOffset></VRTRasterBand>')
    else:
        band = ('<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
                f'<SourceFilename relativeToVRT="0">{source}</SourceFilename>'
                '<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>')
    bands = "".join(band.replace("{b}", str(b)) for b in (1, 2, 3))
    path.write_text(f'<VRTDataset rasterXSize="{SIZE}" rasterYSize="{SIZE}">'
                    "<SRS>EPSG:32610</SRS>"
                    "<GeoTransform>500000, 1, 0, 4200000, 0, -1</GeoTransform>"
                    f"{bands}</VRTDataset>")
    return path


class Listener:
    """A loopback TCP server that counts the connections made to it (and closes them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def url(self, name: str = "x.tif") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def bounded(fn: Callable[[], Any], unblock: Path | None = None) -> Any:
    """``fn()`` in a thread that must finish within :data:`LIMIT_S` (a blocked FIFO open
    fails the test instead of hanging it; ``unblock`` is then opened for writing so the
    thread ends)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(LIMIT_S)
    if t.is_alive():
        if unblock is not None:
            fd = os.open(unblock, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        pytest.fail(f"still running after {LIMIT_S:.0f} s (blocked on a special file?)")
    if "error" in out:
        raise out["error"]
    return out["value"]


# -------------------------------------------------------------------------- hostile cases
def _vrt_local(folder: Path, listener: Listener) -> Path:
    (folder / "secret").mkdir()
    secret = write_tif(folder / "secret" / "other.tif", value=77)
    return write_vrt(folder / "x.tif", str(secret))


def _vrt_devzero(folder: Path, listener: Listener) -> Path:
    return write_vrt(folder / "x.tif", "/dev/zero", raw=True)


def _vrt_http(folder: Path, listener: Listener) -> Path:
    return write_vrt(folder / "x.tif", "/vsicurl/" + listener.url())


def _fifo(folder: Path, listener: Listener) -> Path:
    os.mkfifo(folder / "x.tif")
    return folder / "x.tif"


def _link_devzero(folder: Path, listener: Listener) -> Path:
    (folder / "x.tif").symlink_to("/dev/zero")
    return folder / "x.tif"


def _directory(folder: Path, listener: Listener) -> Path:
    (folder / "x.tif").mkdir()
    return folder / "x.tif"


def _socket_file(folder: Path, listener: Listener) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(folder / "x.tif"))
    s.close()  # the socket file stays
    return folder / "x.tif"


#: case -> (maker, words the refusal must hold)
CASES: dict[str, tuple[Callable[[Path, Listener], Path], str]] = {
    "vrt-local": (_vrt_local, "not a readable"),
    "vrt-devzero": (_vrt_devzero, "not a readable"),
    "vrt-http": (_vrt_http, "not a readable"),
    "fifo": (_fifo, "x.tif: is a FIFO"),
    "link-devzero": (_link_devzero, "x.tif: is a link to a character device"),
    "directory": (_directory, "x.tif: is a directory"),
    "socket": (_socket_file, "x.tif: is a socket"),
}


@pytest.fixture(params=sorted(CASES))
def hostile(request, tmp_path: Path, listener: Listener) -> Iterator[tuple[Path, str, Listener]]:
    folder = tmp_path / "in"
    folder.mkdir()
    make, words = CASES[request.param]
    path = make(folder, listener)
    secret = folder / "secret" / "other.tif"
    before = _aged(secret) if secret.exists() else None
    yield path, words, listener
    assert listener.connections == 0, "GDAL connected to the URL inside the file"
    if before is not None and _atime_works(tmp_path):
        assert os.stat(secret).st_atime_ns == before, "the file the VRT names was read"


def _aged(path: Path) -> int:
    """Set ``path``'s access time before its modification time (so a read moves it, even on
    a relatime mount) and return it."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    return os.stat(path).st_atime_ns


def _atime_works(folder: Path) -> bool:
    """Whether reading a file moves its access time here (not on a noatime mount)."""
    probe = folder / "atime-probe"
    probe.write_bytes(b"x")
    before = _aged(probe)
    probe.read_bytes()
    return os.stat(probe).st_atime_ns != before


def test_ask_refuses_with_one_line(hostile, capsys) -> None:
    path, words, _ = hostile
    code = bounded(lambda: main(["ask", str(path), "How many buildings are there?",
                                 "--detector", "spectral", "--planner", "rules"]), path)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "x.tif" in err[0] and words in err[0], err
    assert "Traceback" not in err[0]


def test_index_build_refuses_when_nothing_is_left(hostile, tmp_path, capsys) -> None:
    path, words, _ = hostile
    code = bounded(lambda: main(["index", "build", str(path), "--out", str(tmp_path / "ix"),
                                 "--embedder", "spectral", "--no-overlays", "--quiet"]), path)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    if "directory" not in words:  # a folder named x.tif is searched for tiles (none there)
        assert words in err, err


def test_region_refuses_when_nothing_is_left(hostile, capsys) -> None:
    path, words, _ = hostile
    code = bounded(lambda: main(["region", str(path), "-q", "How many buildings are there?",
                                 "--estimate", "--detector", "spectral"]), path)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    if "directory" not in words:
        assert words in err, err


def test_sources_beside_a_good_tile_are_skipped_with_the_reason(hostile, tmp_path) -> None:
    path, words, _ = hostile
    good = write_tif(tmp_path / "good.tif")
    found = bounded(lambda: scan([good, path]), path)
    assert [Path(s.uri).name for s in found.sources] == ["good.tif"]
    if "directory" not in words:
        assert len(found.skipped) == 1 and words in found.skipped[0][1], found.skipped


def test_app_upload_refuses(hostile) -> None:
    path, words, _ = hostile
    catalog = Catalog(demo=())
    with pytest.raises(ImageError, match=words):
        bounded(lambda: catalog.add_upload(path), path)
    assert catalog.keys == []


def test_region_notes_name_a_refused_source(tmp_path) -> None:
    from viper_rs.region.api import open_region, skipped_notes

    good = write_tif(tmp_path / "good.tif")
    (tmp_path / "other").mkdir()
    os.mkfifo(tmp_path / "other" / "pipe.tif")
    image = bounded(lambda: open_region([good, tmp_path / "other" / "pipe.tif"]),
                    tmp_path / "other" / "pipe.tif")
    notes = skipped_notes(image)
    assert len(notes) == 1 and "pipe.tif" in notes[0] and "FIFO" in notes[0], notes


# ------------------------------------------------------------------------------- sidecars
def test_an_overview_that_is_a_vrt_is_refused(tmp_path) -> None:
    tif = write_tif(tmp_path / "x.tif")
    write_vrt(tmp_path / "x.tif.ovr", "/dev/zero", raw=True)
    with pytest.raises(ImageError, match="not a TIFF overview"):
        GeoImage.open(tif, out_size=(16, 16))


# ---------------------------------------------------------------------------- remote paths
def test_a_url_inside_a_list_file_is_not_followed(tmp_path, listener) -> None:
    good = write_tif(tmp_path / "good.tif")
    listing = tmp_path / "list.txt"
    listing.write_text(f"good.tif\n{listener.url()}\n/vsicurl/{listener.url('y.tif')}\n")
    found = scan([listing])
    assert [Path(s.uri).name for s in found.sources] == [good.name]
    assert len(found.skipped) == 2
    assert all("inside the list" in why for _, why in found.skipped)
    assert listener.connections == 0


def test_a_typed_url_is_read_only_with_the_opt_in(tmp_path, listener) -> None:
    with pytest.raises(ImageError, match="URLs and GDAL /vsi paths are not read here"):
        GeoImage.open(listener.url())
    assert listener.connections == 0
    with rasterio.Env(GDAL_HTTP_TIMEOUT="5", GDAL_HTTP_MAX_RETRY="0"):
        with pytest.raises(ImageError):  # the server closes the connection
            GeoImage.open(listener.url("typed.tif"), remote=True)
    assert listener.connections >= 1  # the typed URL was tried: the opt-in works


def test_a_typed_url_source_is_tried_but_a_listed_one_is_not(tmp_path, listener) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(listener.url("listed.tif") + "\n")
    found = scan([listing])
    assert listener.connections == 0 and "inside the list" in found.skipped[0][1]
    with rasterio.Env(GDAL_HTTP_TIMEOUT="5", GDAL_HTTP_MAX_RETRY="0"):
        found = scan([listener.url("typed.tif")])
    assert not found.sources and listener.connections >= 1


def test_no_network_for_local_files_even_if_a_vrt_were_allowed(tmp_path, listener) -> None:
    vrt = write_vrt(tmp_path / "x.vrt", "/vsicurl/" + listener.url())
    with rasterio.Env(GDAL_HTTP_TIMEOUT="5", GDAL_HTTP_MAX_RETRY="0"):
        with open_raster(vrt, drivers=("VRT",)) as ds:
            with pytest.raises(Exception):  # noqa: B017 - GDAL's error when no source reads
                ds.read()
    assert listener.connections == 0


def test_names_are_never_read_as_gdal_syntax(tmp_path) -> None:
    # a relative name is handed to GDAL as an absolute path
    assert checked_path(write_tif(tmp_path / "a.tif")) == str((tmp_path / "a.tif").absolute())
    with pytest.raises(InputError, match="no such file"):
        checked_path("MEM:::DATAPOINTER=0x0,PIXELS=8,LINES=8", error=InputError)


# ------------------------------------------------------------------------------ valid files
def test_allowed_drivers_are_geotiff_png_jpeg() -> None:
    assert ALLOWED_DRIVERS == ("GTiff", "PNG", "JPEG")


@pytest.mark.parametrize("fmt", ["GTiff", "PNG", "JPEG"])
def test_valid_images_still_open(tmp_path, fmt) -> None:
    suffix = {"GTiff": ".tif", "PNG": ".png", "JPEG": ".jpg"}[fmt]
    path = tmp_path / f"ok{suffix}"
    data = (np.random.default_rng(1).random((3, 40, 48)) * 255).astype("uint8")
    with rasterio.open(path, "w", driver=fmt, width=48, height=40, count=3,
                       dtype="uint8") as ds:
        ds.write(data)
    image = GeoImage.open(path, gsd=0.5)
    assert image.shape == (40, 48) and image.band_names == ["R", "G", "B"]
    key, uploaded = Catalog(demo=()).add_upload(path, gsd=0.5)
    assert uploaded.shape == (40, 48) and key.endswith(path.name)


def test_a_link_to_a_good_tile_opens(tmp_path) -> None:
    good = write_tif(tmp_path / "good.tif")
    (tmp_path / "link.tif").symlink_to(good)
    assert GeoImage.open(tmp_path / "link.tif").shape == (SIZE, SIZE)
    assert [s.width for s in scan([tmp_path / "link.tif"]).sources] == [SIZE]


def test_a_special_file_in_a_source_folder_is_listed_with_the_reason(tmp_path) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_tif(folder / "good.tif")
    os.mkfifo(folder / "pipe.tif")
    (folder / "dev.tif").symlink_to("/dev/zero")
    found = bounded(lambda: scan([folder]), folder / "pipe.tif")
    reasons = dict((Path(u).name, why) for u, why in found.skipped)
    assert "dev.tif: is a link to a character device" in reasons["dev.tif"], reasons
    assert "pipe.tif: is a FIFO" in reasons["pipe.tif"], reasons
    # the good tile beside them is read alone (GDAL told its folder is empty: no sidecar)
    assert "good.tif" not in reasons, reasons
    assert [Path(s.uri).name for s in found.sources] == ["good.tif"]


@pytest.mark.parametrize("name", ["METADATA.DIM", "x.IMD", "x_MTL.txt", "x.tif.ovr",
                                  "x.tif.aux.xml"])
def test_a_fifo_gdal_would_read_beside_a_tile_is_not_opened(tmp_path, name, caplog):
    # each of these blocked GDAL's open or read of x.tif when it was a FIFO: the tile is
    # now read alone, with a warning naming the FIFO
    tif = write_tif(tmp_path / "x.tif")
    os.mkfifo(tmp_path / name)
    image = bounded(lambda: GeoImage.open(tif, out_size=(8, 8)), tmp_path / name)
    assert image.shape == (8, 8) and image.crs is not None
    assert f"{name} in its folder is a FIFO" in caplog.text
