"""Injectable scene statistics of the spectral detector: the single-image path is
unchanged, and a region's chips measured with the region's statistics match the whole."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from viper_rs.core.geo import GeoImage
from viper_rs.core.raster_write import write_geotiff
from viper_rs.vision.spectral import (
    SceneStats,
    SpectralDetector,
    compute_class_maps,
    context_m,
    scene_stats,
    stats_of,
)

LAYERS = ("cover", "road", "building", "parking", "built_up", "built_up_density")


def _window(img: GeoImage, r0: int, r1: int, c0: int, c1: int,
            roi: np.ndarray | None = None) -> GeoImage:
    """Rows r0:r1, columns c0:c1 of ``img`` as an image of its own (own white point)."""
    return GeoImage(
        data=img.data[:, r0:r1, c0:c1].copy(), band_names=list(img.band_names),
        transform=img.transform @ Affine.translation(c0, r0), crs=img.crs,
        valid=img.valid[r0:r1, c0:c1].copy(), gsd=img.gsd, path=img.path, roi=roi,
    )


def _quads(img: GeoImage, halo: int = 0) -> list[tuple[GeoImage, tuple[slice, slice],
                                                       tuple[slice, slice]]]:
    """The 2 x 2 pieces of ``img``, each grown by ``halo`` px (its core as ``roi``), with
    the core's slices in the piece and in ``img``."""
    h, w = img.shape
    out = []
    for r0, r1 in ((0, h // 2), (h // 2, h)):
        for c0, c1 in ((0, w // 2), (w // 2, w)):
            rr0, rr1 = max(0, r0 - halo), min(h, r1 + halo)
            cc0, cc1 = max(0, c0 - halo), min(w, c1 + halo)
            core = (slice(r0 - rr0, r1 - rr0), slice(c0 - cc0, c1 - cc0))
            roi = None
            if halo:
                roi = np.zeros((rr1 - rr0, cc1 - cc0), bool)
                roi[core] = True
            out.append((_window(img, rr0, rr1, cc0, cc1, roi), core,
                        (slice(r0, r1), slice(c0, c1))))
    return out


def _image(name: str, data: Path | None) -> GeoImage:
    from viper_rs.synthetic import make_scene

    if name == "napa":
        assert data is not None
        return GeoImage.open(data / "naip" / "napa_naip_1m.tif")
    if name == "ms1":
        assert data is not None
        return GeoImage.open(data / "aerial" / "ms1.tif")
    if name == "synthetic":
        return make_scene(0, size=256, gsd=0.5).image
    if name == "synthetic_rgb":
        return GeoImage.from_array(make_scene(1, size=256).image.data[:3], "R,G,B", gsd=1.0)
    if name == "synthetic_fine":  # 5 cm pixels: measured on 2 x 2 blocks
        scene = make_scene(2, size=64, gsd=0.5).image
        return GeoImage.from_array(np.repeat(np.repeat(scene.data, 10, 1), 10, 2),
                                   "R,G,B,NIR", gsd=0.05)
    raise KeyError(name)


@pytest.fixture(params=["napa", "ms1", "synthetic", "synthetic_rgb"])
def image(request) -> GeoImage:
    data = request.getfixturevalue("shared_data") if request.param in ("napa", "ms1") else None
    return _image(request.param, data)


def _same_maps(a, b) -> None:
    for k in LAYERS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.confidence.keys() == b.confidence.keys()
    for k in a.confidence:
        np.testing.assert_array_equal(a.confidence[k], b.confidence[k], err_msg=k)
    assert a.notes == b.notes


# ----------------------------------------------------------------------------- single image
def test_own_stats_given_back_give_identical_maps(image: GeoImage) -> None:
    maps = compute_class_maps(image)
    own = stats_of(image)
    assert maps.stats == own and isinstance(own, SceneStats)
    _same_maps(maps, compute_class_maps(image, stats=own))


def test_fine_image_stats_are_those_of_its_blocks() -> None:
    img = _image("synthetic_fine", None)
    own = stats_of(img)
    assert own.gsd == pytest.approx(0.1, rel=1e-3)
    _same_maps(compute_class_maps(img), compute_class_maps(img, stats=own))


def test_scene_stats_of_one_image_are_its_own(image: GeoImage) -> None:
    assert scene_stats([image]) == stats_of(image)


def test_given_stats_are_used() -> None:
    img = _image("synthetic", None)
    own = stats_of(img)
    darker = replace(own, white_point=own.white_point * 2, ndvi_split=(0.5, 0.1, True))
    maps = compute_class_maps(img, stats=darker)
    assert maps.stats == darker
    assert (maps.cover != compute_class_maps(img).cover).any()


# ----------------------------------------------------------------------------- cuts
def _equal_but_gsd(a: SceneStats, b: SceneStats) -> None:
    """Equal; the GSD up to the projection's areal scale, taken per piece at its centre
    column (relative differences ~1e-10 here)."""
    assert a.gsd == pytest.approx(b.gsd, rel=1e-6)
    for f in fields(SceneStats):
        if f.name != "gsd":
            assert getattr(a, f.name) == getattr(b, f.name), f.name


def test_scene_stats_do_not_depend_on_the_cut(image: GeoImage) -> None:
    """Pieces with a halo (core as roi) pool exactly the whole image's pixel values."""
    whole = scene_stats([image])
    _equal_but_gsd(whole, scene_stats([p for p, _, _ in _quads(image, 32)]))


def test_scene_stats_of_geotiff_pieces(shared_data: Path, tmp_path: Path) -> None:
    """napa cut into 2 x 2 GeoTIFFs without halo: the same statistics (every one of them
    is either per pixel or, for the NDVI split and paved reference, unchanged by the few
    cut-line pixels whose windows differ)."""
    img = _image("napa", shared_data)
    pieces = [GeoImage.open(write_geotiff(p, tmp_path / f"p{i}.tif"))
              for i, (p, _, _) in enumerate(_quads(img))]
    _equal_but_gsd(scene_stats([img]), scene_stats(pieces))


def test_subsampling_lattice_does_not_depend_on_the_cut(image: GeoImage) -> None:
    whole = scene_stats([image], max_pixels=5000)
    assert whole != scene_stats([image])  # a sample, not every pixel
    _equal_but_gsd(whole, scene_stats([p for p, _, _ in _quads(image, 32)], max_pixels=5000))


def _agreement(img: GeoImage, halo: int) -> dict[str, float]:
    """Share of equal pixels per layer between the whole image's maps and its 2 x 2
    pieces' maps (each grown by ``halo`` px, measured with the whole's statistics)."""
    whole = scene_stats([img])
    full = compute_class_maps(img)
    equal = dict.fromkeys(LAYERS[:5], 0)
    n = 0
    for piece, core, where in _quads(img, halo):
        maps = compute_class_maps(piece, stats=whole)
        for k in equal:
            equal[k] += int((getattr(maps, k)[core] == getattr(full, k)[where]).sum())
        n += maps.cover[core].size
    return {k: v / n for k, v in equal.items()}


def test_pieces_with_halo_match_the_whole(shared_data: Path) -> None:
    img = _image("napa", shared_data)
    a32 = _agreement(img, 32)
    assert a32["cover"] == 1.0 and a32["built_up"] == 1.0
    assert min(a32.values()) >= 0.98  # roads, buildings: segments longer than 32 m
    halo = int(np.ceil(context_m(img.ground_sampling_distance) / img.ground_sampling_distance))
    assert _agreement(img, halo) == dict.fromkeys(LAYERS[:5], 1.0)


def test_pieces_with_context_halo_match_the_whole_synthetic() -> None:
    img = _image("synthetic", None)
    halo = int(np.ceil(context_m(img.ground_sampling_distance) / img.ground_sampling_distance))
    assert _agreement(img, halo) == dict.fromkeys(LAYERS[:5], 1.0)


# ----------------------------------------------------------------------------- detector
def test_detector_with_own_stats_finds_the_same() -> None:
    img = _image("synthetic", None)
    plain = SpectralDetector()
    given = SpectralDetector(stats=stats_of(img))
    for query in ("buildings", "water", "trees"):
        a, b = plain.find(img, query), given.find(img, query)
        assert [r.area_m2 for r in a] == [r.area_m2 for r in b]


def test_detector_for_scene_uses_the_scene_stats() -> None:
    img = _image("synthetic", None)
    pieces = [p for p, _, _ in _quads(img, 32)]
    det = SpectralDetector.for_scene(pieces)
    assert det.stats is not None and det.stats.white_point == img.white_point
    det.class_maps(pieces[0])
    assert det.class_maps(pieces[0]).stats == det.stats and det.computations == 1
    other = replace(det.stats, median_brightness=0.1)
    det.stats = other
    assert det.class_maps(pieces[0]).stats == other and det.computations == 2


def test_context_m() -> None:
    assert context_m(1.0) == pytest.approx(127.0)
    assert all(100 < context_m(g) < 300 for g in (0.05, 0.1, 0.3, 0.6, 1.0, 10.0))
    assert context_m(None) == context_m(1.0)
