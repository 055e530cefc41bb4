"""Embedder geometry (native scale, sliding windows, resampling, padding, nodata), the
patch grid's mapping back to pixels, caching, and the real GRAFT tower on larger images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.graft_reference import MEAN, STD, clip_input, cosines, published_state, reference
from tests.graft_reference import synthetic_rgb as scene
from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, ImageError
from viper_rs.core.geo import GeoImage
from viper_rs.tiling.chips import starts
from viper_rs.vision.build import load_graft_state
from viper_rs.vision.cache import FeatureCache
from viper_rs.vision.embedder import Embedder, PatchGrid


class FakeEncoder:
    """Context-free stand-in: a patch's feature depends only on its own 16x16 pixels, so
    the windowed, averaged grid must equal the per-patch features of the model image."""

    window, patch, model_id, device = 224, 16, "fake-v1", torch.device("cpu")

    def __init__(self):
        self.calls: list[int] = []

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(batch.shape[0])
        assert tuple(batch.shape[1:]) == (3, 224, 224)
        return fake_features(batch)


def fake_features(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H/16, W/16, 6) unit vectors from patch means and spread."""
    b, _, h, w = x.shape
    blocks = x.reshape(b, 3, h // 16, 16, w // 16, 16)
    mean = blocks.mean(dim=(3, 5))  # (B, 3, gh, gw)
    spread = blocks.std(dim=(3, 5)).mean(1, keepdim=True)
    f = torch.cat([mean, spread, torch.ones_like(spread), 0.5 * torch.ones_like(spread)], 1)
    return F.normalize(f.permute(0, 2, 3, 1), dim=-1)


def normalised(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) CLIP-normalised."""
    return clip_input(rgb)


def image(rgb: np.ndarray, gsd: float | None = None, valid=None) -> GeoImage:
    return GeoImage.from_array(np.moveaxis(rgb, -1, 0), "R,G,B", gsd=gsd, valid=valid)


def embedder(cache=None, **settings) -> tuple[Embedder, FakeEncoder]:
    enc = FakeEncoder()
    return Embedder(enc, Settings(**settings), cache), enc


# ----------------------------------------------------------------------------- native scale


def test_exact_window_is_one_unresampled_window():
    rgb = scene(224, 224)
    emb, enc = embedder()
    grid = emb.embed(image(rgb))
    assert isinstance(grid, PatchGrid)
    assert grid.features.shape == (14, 14, 6) and grid.features.dtype == np.float32
    assert (grid.windows, grid.scale, grid.patch_px, grid.image_shape) == (1, 1.0, 16.0, (224, 224))
    assert enc.calls == [1]
    assert emb.last_stats["windows"] == 1 and not emb.last_stats["resampled"]
    assert not emb.last_stats["cached"] and emb.last_stats["ms"] >= 0
    np.testing.assert_allclose(grid.features, fake_features(normalised(rgb))[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(grid.valid, 1.0)


def test_gsd_within_tolerance_is_not_resampled():
    emb, _ = embedder()
    for gsd in (0.7, 1.0, 1.4):
        grid = emb.embed(image(scene(224, 224), gsd=gsd))
        assert grid.scale == 1.0 and grid.features.shape[:2] == (14, 14), gsd


@pytest.mark.parametrize("size,windows,grid", [((256, 256), 4, (16, 16)), ((300, 300), 4, (19, 19)),
                                               ((600, 500), 12, (38, 32))])
def test_sliding_windows_cover_the_image(size, windows, grid):
    h, w = size
    rgb = scene(h, w, seed=2)
    emb, enc = embedder(batch_size=8)
    out = emb.embed(image(rgb))
    assert out.windows == windows and sum(enc.calls) == windows
    assert enc.calls == [min(8, windows - i) for i in range(0, windows, 8)]
    assert out.features.shape[:2] == grid
    # bottom/right padding mirrors the image up to whole patches (and at least a window)
    ph, pw = max(224, -(-h // 16) * 16), max(224, -(-w // 16) * 16)
    padded = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="symmetric")
    direct = fake_features(normalised(padded))[0].numpy()[: grid[0], : grid[1]]
    np.testing.assert_allclose(out.features, direct, atol=1e-5)
    edge = out.valid[-1, -1]
    assert edge == pytest.approx(((h - (grid[0] - 1) * 16) * (w - (grid[1] - 1) * 16)) / 256)


def test_window_starts_are_patch_aligned_and_end_flush():
    assert starts(224, 224, 160) == [0]
    assert starts(608, 224, 160) == [0, 160, 320, 384]
    for n in (224, 240, 512, 1008):
        s = starts(n, 224, 160)
        assert s[-1] == n - 224 and all(v % 16 == 0 for v in s) and s == sorted(set(s))


# ----------------------------------------------------------------------------- resampling


def test_fine_imagery_is_resampled_to_model_gsd():
    """0.5 m pixels: a 448 px image is 224 m = 224 model px = one window of 32-px patches."""
    block = np.random.default_rng(0).integers(0, 255, (14, 14, 3)).astype(np.uint8)
    rgb = np.kron(block, np.ones((32, 32, 1), np.uint8))  # one colour per 32x32 patch
    emb, enc = embedder()
    grid = emb.embed(image(rgb, gsd=0.5))
    assert grid.features.shape[:2] == (14, 14) and grid.windows == 1
    assert grid.scale == pytest.approx(0.5) and grid.patch_px == pytest.approx(32.0)
    assert emb.last_stats["resampled"]
    ideal = fake_features(normalised(np.kron(block, np.ones((16, 16, 1), np.uint8))))[0].numpy()
    assert cosines(grid.features, ideal).min() > 0.99
    assert grid.upsample(np.ones((14, 14))).shape == (448, 448)
    # 0.6 m is outside the 1.5x tolerance too; 2 m imagery is scaled up
    assert embedder()[0].embed(image(scene(300, 300), gsd=0.6)).scale == pytest.approx(0.6)
    coarse = embedder()[0].embed(image(scene(150, 150), gsd=2.0))
    assert coarse.scale == 2.0 and coarse.features.shape[:2] == (19, 19)


def test_rsvqa_like_fine_image_is_padded_not_upscaled():
    """RSVQA-HR: 512 px at 0.15 m = 77 m: one padded window, a 5x5 grid, edge patches partial."""
    emb, enc = embedder()
    grid = emb.embed(image(scene(512, 512), gsd=0.15))
    assert grid.model_shape == (77, 77) and grid.windows == 1
    assert grid.features.shape[:2] == (5, 5)
    assert grid.valid[0, 0] == 1.0 and grid.valid[-1, 0] == pytest.approx(13 / 16, abs=0.01)
    assert grid.patch_px == pytest.approx(16 / 0.15)
    up = grid.upsample(np.arange(25, dtype=np.float32).reshape(5, 5))
    assert up.shape == (512, 512) and up.min() >= 0 and up.max() <= 24
    c = grid.patch_centres()
    assert c.shape == (5, 5, 2)
    assert c.min() >= 0 and c[..., 0].max() <= 511 and c[..., 1].max() <= 511


def test_small_image_is_one_patch_and_mostly_padding():
    emb, _ = embedder()
    tiny = np.random.default_rng(0).integers(0, 255, (10, 10, 3)).astype(np.uint8)
    grid = emb.embed(image(tiny))
    assert grid.features.shape[:2] == (1, 1) and grid.windows == 1
    assert grid.valid[0, 0] == pytest.approx(100 / 256)
    assert grid.upsample(np.array([[3.0]])).shape == (10, 10)


def test_nodata_pixels_are_neutral_and_reported():
    rgb = scene(224, 224)
    valid = np.ones((224, 224), bool)
    valid[:32, :48] = False  # 2 x 3 patches of nodata
    emb, _ = embedder()
    grid = emb.embed(image(rgb, valid=valid))
    assert (grid.valid[:2, :3] == 0).all() and (grid.valid[2:] == 1).all()
    zeros = fake_features(torch.zeros(1, 3, 224, 224))[0, 0, 0].numpy()
    np.testing.assert_allclose(grid.features[0, 0], zeros, atol=1e-6)  # the mean colour
    np.testing.assert_allclose(grid.features[5:], fake_features(normalised(rgb))[0].numpy()[5:],
                               atol=1e-6)


# ----------------------------------------------------------------------------- grid geometry


def test_upsample_is_bilinear_between_patch_centres():
    emb, _ = embedder()
    grid = emb.embed(image(scene(224, 224)))
    ramp = np.tile(np.arange(14, dtype=np.float32), (14, 1))  # value = column index
    up = grid.upsample(ramp)
    assert up.shape == (224, 224) and up.dtype == np.float32
    # column x (pixel centre x + 0.5) sits at patch coordinate (x + 0.5) / 16 - 0.5
    x = np.arange(224)
    expect = np.clip((x + 0.5) / 16 - 0.5, 0, 13)
    np.testing.assert_allclose(up[100], expect, atol=1e-5)
    np.testing.assert_allclose(grid.upsample(np.full((14, 14), 0.25)), 0.25)
    with pytest.raises(ValueError, match="grid shape"):
        grid.upsample(np.zeros((3, 3)))
    c = grid.patch_centres()
    assert c[0, 0].tolist() == [7.5, 7.5] and c[13, 2].tolist() == [215.5, 39.5]


def test_patch_centres_follow_resampling():
    emb, _ = embedder()
    grid = emb.embed(image(scene(448, 448), gsd=0.5))
    c = grid.patch_centres()
    assert c[0, 0].tolist() == pytest.approx([15.5, 15.5])
    assert c[13, 13].tolist() == pytest.approx([431.5, 431.5])


# ----------------------------------------------------------------------------- cache


def test_second_embed_is_a_cache_hit(tmp_path):
    img = image(scene(300, 300))
    cache = FeatureCache(tmp_path / "features", 4)
    emb, enc = embedder(cache)
    first = emb.embed(img)
    calls = len(enc.calls)
    second = emb.embed(img)
    assert emb.last_stats["cached"] is True and emb.last_stats["windows"] == 4
    assert len(enc.calls) == calls
    np.testing.assert_array_equal(first.features, second.features)
    assert second.image_shape == first.image_shape and second.model_shape == first.model_shape
    np.testing.assert_array_equal(first.valid, second.valid)
    # another process: same disk folder, fresh memory
    emb2, enc2 = embedder(FeatureCache(tmp_path / "features", 4))
    third = emb2.embed(img)
    assert emb2.last_stats["cached"] and enc2.calls == []
    np.testing.assert_array_equal(third.features, first.features)
    # other windowing parameters, other model or other pixels: recomputed
    for kw in ({"window_stride_px": 96}, {"model_gsd_m": 0.5}):
        e, c = embedder(cache, **kw)
        e.embed(img)
        assert not e.last_stats["cached"] and c.calls
    e, c = embedder(cache)
    c.model_id = "fake-v2"
    e.embed(img)
    assert not e.last_stats["cached"]
    emb.embed(image(scene(300, 300, seed=9)))
    assert not emb.last_stats["cached"]


# ----------------------------------------------------------------------------- inputs


def test_bands_and_settings_are_checked():
    gray = GeoImage.from_array(scene(224, 224)[..., 0], "GRAY")
    emb, _ = embedder()
    assert emb.embed(gray).features.shape[:2] == (14, 14)
    nir = GeoImage.from_array(scene(224, 224)[..., 0], "NIR")
    with pytest.raises(ImageError, match="R, G and B"):
        emb.embed(nir)
    with pytest.raises(ConfigError, match="multiple of the 16-px patch"):
        embedder(window_stride_px=100)
    with pytest.raises(ConfigError, match="multiple of the 16-px patch"):
        embedder(window_stride_px=240)
    with pytest.raises(ConfigError, match="224x224 windows"):
        embedder(window_px=256)


def test_uint16_and_float_images_use_their_white_point():
    rgb = scene(224, 224)
    emb, _ = embedder()
    base = emb.embed(image(rgb)).features
    as16 = GeoImage.from_array(np.moveaxis(rgb.astype(np.uint16) * 257, -1, 0), "R,G,B")
    np.testing.assert_allclose(emb.embed(as16).features, base, atol=1e-5)
    asf = GeoImage.from_array(np.moveaxis(rgb.astype(np.float32) / 255, -1, 0), "R,G,B")
    np.testing.assert_allclose(emb.embed(asf).features, base, atol=1e-5)


# ----------------------------------------------------------------------------- real tower


@pytest.fixture(scope="module")
def graft():
    return load_graft_state(published_state(), model_id="graft-test")


@pytest.mark.slow
def test_real_graft_sliding_windows_equal_the_averaged_reference(graft):
    """300 x 300 px: windows at 0 and 80 (flush with the 304-px padded edge) in each axis;
    every patch equals the mean of GRAFT's reference embeddings over its windows."""
    rgb = scene(300, 300, seed=5)
    emb = Embedder(graft, Settings(batch_size=3))
    grid = emb.embed(image(rgb))
    assert grid.windows == 4 and grid.features.shape == (19, 19, 512)
    padded = normalised(np.pad(rgb, ((0, 4), (0, 4), (0, 0)), mode="symmetric"))
    origins = [(y, x) for y in (0, 80) for x in (0, 80)]
    crops = torch.cat([padded[:, :, y:y + 224, x:x + 224] for y, x in origins])
    ref = reference(crops)
    acc = np.zeros((19, 19, 512))
    n = np.zeros((19, 19, 1))
    for (y, x), f in zip(origins, ref, strict=True):
        acc[y // 16:y // 16 + 14, x // 16:x // 16 + 14] += f
        n[y // 16:y // 16 + 14, x // 16:x // 16 + 14] += 1
    expected = acc / n
    assert cosines(grid.features, expected).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(grid.features, axis=-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_real_graft_on_rsvqa_like_image(graft):
    emb = Embedder(graft, Settings())
    grid = emb.embed(image(scene(512, 512, seed=3), gsd=0.15))
    assert grid.features.shape == (5, 5, 512) and np.isfinite(grid.features).all()
    assert emb.last_stats["resampled"] and emb.last_stats["windows"] == 1
    np.testing.assert_allclose(np.linalg.norm(grid.features, axis=-1), 1.0, atol=1e-5)


def test_mean_and_std_constants_match_clip():
    from viper_rs.vision.modeling import CLIP_MEAN, CLIP_STD

    np.testing.assert_allclose(CLIP_MEAN, MEAN)
    np.testing.assert_allclose(CLIP_STD, STD)
