"""GeoImage loading, band roles, nodata and true ground pixel area."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from viper_rs.core.bands import parse_bands
from viper_rs.core.errors import ImageError
from viper_rs.core.geo import GeoImage


def _write_tif(path, data, crs="EPSG:32618", transform=None, nodata=None, descriptions=None):
    count, h, w = data.shape
    transform = transform or Affine(1.0, 0, 500000, 0, -1.0, 4500000)
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype,
        crs=crs, transform=transform, nodata=nodata,
    ) as ds:
        ds.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                ds.set_band_description(i, d)


def test_projected_area_is_transform_determinant(tmp_path, four_band):
    p = tmp_path / "a.tif"
    _write_tif(p, four_band, transform=Affine(0.6, 0, 500000, 0, -0.6, 4500000))
    img = GeoImage.open(p)
    assert img.band_names == ["R", "G", "B", "NIR"]
    assert img.area_unit == "m2"
    # UTM central meridian: scale factor 0.9996, so ground area = grid area / 0.9996^2
    assert img.pixel_area_m2 == pytest.approx(0.36 / 0.9996**2, rel=1e-6)
    assert img.mask_area(np.ones(img.shape, bool)) == pytest.approx(64 * 64 * img.pixel_area_m2)


def test_feet_crs_converted_to_metres(tmp_path, four_band):
    p = tmp_path / "ft.tif"
    _write_tif(p, four_band, crs="EPSG:2263", transform=Affine(1.0, 0, 1e6, 0, -1.0, 2e5))
    img = GeoImage.open(p)
    assert img.pixel_area_m2 == pytest.approx(0.3048006**2, rel=1e-4)


def test_geographic_crs_uses_geodesic_area(tmp_path, four_band):
    p = tmp_path / "geo.tif"
    d = 1e-5  # degrees per pixel
    _write_tif(p, four_band, crs="EPSG:4326", transform=Affine(d, 0, -74.0, 0, -d, 40.7))
    img = GeoImage.open(p)
    # 1e-5 deg ~ 1.113 m of latitude and 1.113*cos(40.7) m of longitude
    expected = (111_000 * d) * (111_320 * d * np.cos(np.radians(40.7)))
    assert img.pixel_area_m2 == pytest.approx(expected, rel=0.01)
    assert img.row_pixel_area[0] < img.row_pixel_area[-1]  # rows further south are larger


def test_png_without_gsd_reports_pixels(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(p)
    img = GeoImage.open(p)
    assert img.area_unit == "px" and img.pixel_area_m2 is None
    assert img.mask_area(np.ones(img.shape, bool)) == 600
    img2 = GeoImage.open(p, gsd=0.5)
    assert img2.area_unit == "m2" and img2.pixel_area_m2 == pytest.approx(0.25)
    assert img2.band_names == ["R", "G", "B"]


def test_nodata_and_uint16_white_point(tmp_path):
    data = np.full((4, 10, 10), 200, np.uint16)
    data[:, :, :3] = 256
    p = tmp_path / "nd.tif"
    _write_tif(p, data, nodata=256)
    img = GeoImage.open(p)
    assert img.valid[:, :3].sum() == 0 and img.valid[:, 3:].all()
    assert img.white_point == 255  # uint16 storage of 8-bit values
    assert img.band("R")[0, 5] == pytest.approx(200 / 255)


def test_float_and_band_descriptions(tmp_path):
    data = np.random.default_rng(0).uniform(0, 2047, (4, 8, 8))
    p = tmp_path / "f.tif"
    _write_tif(p, data, descriptions=["nir", "red", "green", "blue"])
    img = GeoImage.open(p)
    assert img.band_names == ["NIR", "R", "G", "B"]
    assert img.white_point == 2047


def test_bands_option_overrides(tmp_path, four_band):
    p = tmp_path / "b.tif"
    _write_tif(p, four_band)
    img = GeoImage.open(p, bands="B,G,R,NIR")
    assert img.band_names == ["B", "G", "R", "NIR"]
    with pytest.raises(ImageError, match="3 bands"):
        GeoImage.open(p, bands="R,G,B")
    assert parse_bands("red, Green ,nir") == ["R", "G", "NIR"]


@pytest.mark.parametrize(
    "content, match",
    [(None, "no such file"), (b"", "empty"), (b"this is not an image at all", "not a readable image")],
)
def test_bad_files_raise_image_error(tmp_path, content, match):
    p = tmp_path / "bad.tif"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        GeoImage.open(p)


def test_truncated_tif(tmp_path, four_band):
    p = tmp_path / "t.tif"
    _write_tif(p, np.repeat(np.repeat(four_band, 8, axis=1), 8, axis=2))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError):
        GeoImage.open(p)


def test_all_nodata_is_an_error(tmp_path):
    p = tmp_path / "n.tif"
    _write_tif(p, np.zeros((3, 5, 5), np.uint8), nodata=0)
    with pytest.raises(ImageError, match="nodata"):
        GeoImage.open(p)


def test_real_naip_napa(shared_data):
    img = GeoImage.open(shared_data / "naip" / "napa_naip_1m.tif")
    assert img.band_names == ["R", "G", "B", "NIR"]
    assert img.pixel_area_m2 == pytest.approx(1.0, rel=0.01)
    assert 0.6 < img.valid.mean() < 0.8  # about 29% nodata margin
    assert img.white_point == 255


def test_real_aerial_float(shared_data):
    img = GeoImage.open(shared_data / "aerial" / "ms1.tif")
    assert img.shape == (300, 300) and img.pixel_area_m2 == pytest.approx(1.0, rel=0.01)
    assert img.white_point == 2047


def test_content_hash_changes_with_pixels(four_band):
    a = GeoImage.from_array(four_band, "R,G,B,NIR", gsd=1.0)
    b = GeoImage.from_array(four_band.copy(), "R,G,B,NIR", gsd=1.0)
    c = four_band.copy()
    c[0, 0, 0] ^= 1
    assert a.content_hash == b.content_hash != GeoImage.from_array(c, "R,G,B,NIR", gsd=1.0).content_hash


def test_web_mercator_area_is_true_ground_area(tmp_path, four_band):
    import math

    # RSVQA-HR style: 0.1524 m ground pixels stored in EPSG:3857 at ~40.7 N
    lat = 40.7
    y = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    res = 0.1524 / math.cos(math.radians(lat))
    p = tmp_path / "wm.tif"
    _write_tif(p, four_band, crs="EPSG:3857", transform=Affine(res, 0, -8.2e6, 0, -res, y))
    img = GeoImage.open(p)
    assert img.pixel_area_m2 == pytest.approx(0.1524**2, rel=1e-3)


def test_utm_scale_factor_is_applied(tmp_path, four_band):
    p = tmp_path / "utm.tif"
    _write_tif(p, four_band)  # x = 500 km: central meridian, scale 0.9996
    img = GeoImage.open(p)
    assert img.pixel_area_m2 == pytest.approx(1 / 0.9996**2, rel=1e-5)


def test_all_nan_float_image_is_an_error(tmp_path):
    p = tmp_path / "nan.tif"
    _write_tif(p, np.full((4, 6, 6), np.nan, np.float32))
    with pytest.raises(ImageError, match="nodata|not a number"):
        GeoImage.open(p)


def test_jpeg_and_rgba_png(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.jpg")
    img = GeoImage.open(tmp_path / "x.jpg", gsd=0.3)
    assert img.band_names == ["R", "G", "B"] and img.pixel_area_m2 == pytest.approx(0.09)
    rgba = np.dstack([rgb, np.where(np.arange(32)[None, :] < 8, 0, 255).repeat(32, 0).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    img = GeoImage.open(tmp_path / "x.png", gsd=0.3)
    assert img.band_names == ["R", "G", "B"]  # alpha became the validity mask
    assert img.valid[:, :8].sum() == 0 and img.valid[:, 8:].all()
