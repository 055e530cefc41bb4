"""SAM refinement: checkpoint loading, one embedding per image, mask choice and fallbacks.

The SAM ViT-B here is segment-anything's own builder with random weights (no download);
its image encoder takes tens of seconds on a small CPU, so it runs ONCE for the module
(the ``embedded`` fixture) and every other test reuses that embedding or the disk cache.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from skimage.measure import label as cc_label
from skimage.morphology import remove_small_objects

from tests.conftest import DATA
from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, InputError
from viper_rs.core.geo import GeoImage
from viper_rs.vision import sam as sam_mod
from viper_rs.vision.build import checkpoint_fingerprint
from viper_rs.vision.cache import FeatureCache
from viper_rs.vision.sam import MAX_GROWTH, MIN_IOU, SamRefiner, build_sam, sam_model_type

NAIP = DATA / "naip" / "napa_naip_1m.tif"
PATCH = "image_encoder.patch_embed.proj.weight"


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vit_b_ckpt(tmp_path_factory):
    """A random-weight SAM ViT-B checkpoint written by segment-anything's own builder."""
    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    del sam
    yield path
    path.unlink(missing_ok=True)  # 375 MB: do not leave it in pytest's kept temp folders


class EncoderCounter:
    """Counts forward calls of a module (the SAM image encoder)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.calls += 1


@pytest.fixture(scope="module")
def embedded(vit_b_ckpt, tmp_path_factory):
    """(refiner, NAIP image, first set_image stats, encoder counter, disk cache folder)."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    cache_dir = tmp_path_factory.mktemp("sam-cache")
    refiner = SamRefiner(vit_b_ckpt, Settings(), FeatureCache(cache_dir, 4), device="cpu")
    counter = EncoderCounter(refiner.sam.image_encoder)
    image = GeoImage.open(NAIP)
    first = refiner.set_image(image)
    return refiner, image, first, counter, cache_dir


def _bright_components(image: GeoImage) -> np.ndarray:
    """Bright blobs (roofs, pavement) of the NAIP tile as a label image."""
    gray = image.rgb().mean(axis=-1)
    mask = (gray > np.quantile(gray[image.valid], 0.9)) & image.valid
    mask = remove_small_objects(mask, max_size=29)
    return cc_label(mask, connectivity=2).astype(np.int32)


def _low_res_logits(refiner: SamRefiner, target: np.ndarray) -> torch.Tensor:
    """(3, 256, 256) decoder logits whose upsampled mask is ``target`` (all three outputs)."""
    h, w = target.shape
    in_h, in_w = refiner.predictor.input_size
    size = refiner.sam.image_encoder.img_size
    low = size // 4
    centres = (np.arange(low) + 0.5) * 4 - 0.5  # low-res pixel centres, input frame
    rows = np.floor((centres + 0.5) * h / in_h).astype(int)
    cols = np.floor((centres + 0.5) * w / in_w).astype(int)
    inside_r, inside_c = rows < h, cols < w
    out = np.full((low, low), -10.0, dtype=np.float32)
    sub = target[rows[inside_r].clip(0, h - 1)][:, cols[inside_c].clip(0, w - 1)]
    out[np.ix_(inside_r, inside_c)] = np.where(sub, 10.0, -10.0)
    return torch.from_numpy(np.repeat(out[None], 3, axis=0))


def _fake_decode(refiner, monkeypatch, masks: list[np.ndarray], quality=(0.9, 0.8, 0.7)):
    """Make the decoder return ``masks[i]`` for the i-th prompt of every call; record prompts."""
    seen: list[np.ndarray] = []
    logits = [_low_res_logits(refiner, m) for m in masks]

    def decode(prompts):
        start = len(seen)
        seen.extend(prompts)
        lo = torch.stack([logits[min(start + i, len(logits) - 1)] for i in range(len(prompts))])
        return lo, torch.tensor([quality] * len(prompts), dtype=torch.float32)

    monkeypatch.setattr(refiner, "_decode", decode)
    return seen


# ---------------------------------------------------------------------- model type
def _fake_state(width: int | None, depth: int | None) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    if width is not None:
        state[PATCH] = torch.empty((width, 3, 16, 16), device="meta")
    for i in range(depth or 0):
        state[f"image_encoder.blocks.{i}.norm1.weight"] = torch.empty((1,), device="meta")
    state["mask_decoder.iou_token.weight"] = torch.empty((1, 256), device="meta")
    return state


def test_sam_model_type_from_crafted_shapes():
    assert sam_model_type(_fake_state(768, 12)) == "vit_b"
    assert sam_model_type(_fake_state(1024, 24)) == "vit_l"
    assert sam_model_type(_fake_state(1280, 32)) == "vit_h"
    assert sam_model_type(_fake_state(1280, None)) == "vit_h"  # width alone is enough
    assert sam_model_type(_fake_state(None, 24)) == "vit_l"  # so is the block count
    with pytest.raises(ConfigError, match="width 512"):
        sam_model_type(_fake_state(512, 12))
    with pytest.raises(ConfigError, match="width 768.*24 blocks"):
        sam_model_type(_fake_state(768, 24))
    with pytest.raises(ConfigError, match="16 blocks"):
        sam_model_type(_fake_state(None, 16))
    with pytest.raises(ConfigError, match="not a SAM checkpoint.*visual.proj"):
        sam_model_type({"visual.proj": torch.empty(2)})


@pytest.mark.slow
def test_sam_model_type_of_real_vit_b(vit_b_ckpt):
    state = torch.load(vit_b_ckpt, map_location="cpu", weights_only=True, mmap=True)
    assert sam_model_type(state) == "vit_b"


# ---------------------------------------------------------------------- build_sam
@pytest.mark.slow
def test_build_sam_goes_through_the_registry(vit_b_ckpt, monkeypatch):
    calls = []
    original = sam_model_registry["vit_b"]

    def spy(checkpoint=None):
        calls.append(checkpoint)
        return original(checkpoint=checkpoint)

    monkeypatch.setitem(sam_model_registry, "vit_b", spy)
    sam, model_type = build_sam(vit_b_ckpt, "cpu")
    assert model_type == "vit_b"
    assert calls == [str(vit_b_ckpt)]
    assert isinstance(sam, Sam) and not sam.training
    assert sam.device == torch.device("cpu")
    saved = torch.load(vit_b_ckpt, map_location="cpu", weights_only=True, mmap=True)
    assert torch.equal(sam.state_dict()[PATCH], saved[PATCH])


@pytest.mark.slow
def test_build_sam_names_missing_and_unexpected_keys(tmp_path):
    state = {PATCH: torch.zeros(768, 3, 16, 16), "image_encoder.blocks.11.norm1.weight":
             torch.zeros(768), "hq_token.weight": torch.zeros(1, 256)}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError) as err:
        build_sam(path)
    msg = str(err.value)
    assert str(path) in msg and "vit_b" in msg
    assert "missing keys" in msg and "image_encoder.blocks.0." in msg
    assert "1 unexpected keys (hq_token.weight)" in msg


def test_build_sam_rejects_unusable_files(tmp_path, vit_b_ckpt):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.pth"
    with open(vit_b_ckpt, "rb") as fh:
        truncated.write_bytes(fh.read(1 << 20))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    pickled = tmp_path / "pickled.pth"
    torch.save({PATCH: np.zeros(3)}, pickled)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {PATCH: torch.zeros(1)}, "epoch": 3}, wrapped)
    cases = {
        empty: "file is empty",
        garbage: "not a readable torch checkpoint",
        truncated: "not a readable torch checkpoint",
        tensor: "holds a Tensor, not a state dict",
        wrapped: "not a flat state dict.*model, epoch",
        pickled: "Python objects besides tensors .*numpy",
        tmp_path / "missing.pth": "no such file",
        tmp_path: "is a directory",
    }
    for path, reason in cases.items():
        with pytest.raises(ConfigError, match=reason) as err:
            build_sam(path)
        assert str(path) in str(err.value)
        assert err.value.type == "config"


# ---------------------------------------------------------------------- embedding cache
@pytest.mark.slow
def test_embedding_is_computed_once_and_restored_from_disk(embedded, vit_b_ckpt, shared_data):
    refiner, image, first, counter, cache_dir = embedded
    assert first["cached"] is False and first["ms"] > 0
    assert counter.calls == 1  # the first set_image ran the image encoder once
    assert refiner.model_id.startswith("sam-vit_b-")
    again = refiner.set_image(image)
    assert again["cached"] is True and counter.calls == 1
    assert list((cache_dir / "sam-embedding").glob("*.npz"))

    # a new refiner (as in a new process) with the same disk cache: no image encoder run
    fresh = SamRefiner(vit_b_ckpt, Settings(), FeatureCache(cache_dir, 4), device="cpu")
    fresh_counter = EncoderCounter(fresh.sam.image_encoder)
    assert fresh.model_id == refiner.model_id
    stats = fresh.set_image(image)
    assert stats["cached"] is True and fresh_counter.calls == 0
    assert torch.equal(fresh.predictor.features, refiner.predictor.features)
    assert fresh.predictor.original_size == refiner.predictor.original_size == image.shape
    assert fresh.predictor.input_size == refiner.predictor.input_size
    prompt = [np.array([[400.0, 500.0]])]
    with torch.inference_mode():
        a, qa = refiner._decode(prompt)
        b, qb = fresh._decode(prompt)
    assert torch.equal(a, b) and torch.equal(qa, qb)
    labels = _bright_components(image)
    out, st = fresh.refine(image, labels, {})
    assert st["embedding_cached"] is True and fresh_counter.calls == 0


@pytest.mark.slow
def test_switching_images_restores_from_cache(embedded, shared_data, monkeypatch):
    refiner, image, _, counter, _ = embedded
    refiner.set_image(image)
    naip_features = refiner.predictor.features.clone()
    size = refiner.sam.image_encoder.img_size

    def entry(img, original=None):
        shape = original or img.shape
        return {"features": np.full((1, 256, 64, 64), 0.5, np.float32),
                "original_size": np.array(shape),
                "input_size": np.array(refiner.predictor.transform.get_preprocess_shape(
                    *shape, size))}

    rng = np.random.default_rng(1)
    other = GeoImage.from_array(rng.integers(0, 255, (3, 50, 60)).astype(np.uint8))
    key = sam_mod.cache_key(other.content_hash, refiner.model_id)
    refiner.cache.put("sam-embedding", key, entry(other))
    assert refiner.set_image(other)["cached"] is True
    assert refiner.predictor.original_size == (50, 60)
    assert refiner.set_image(image)["cached"] is True  # back from the cache, not recomputed
    assert torch.equal(refiner.predictor.features, naip_features) and counter.calls == 1

    # an entry that does not fit its image is ignored and the embedding recomputed
    computed = []

    def fake_set_image(rgb, image_format="RGB"):
        computed.append(rgb.shape)
        p = refiner.predictor
        p.features = torch.zeros(1, 256, 64, 64)
        p.original_size = rgb.shape[:2]
        p.input_size = p.transform.get_preprocess_shape(*rgb.shape[:2], size)
        p.is_image_set = True

    third = GeoImage.from_array(rng.integers(0, 255, (3, 40, 30)).astype(np.uint8))
    key = sam_mod.cache_key(third.content_hash, refiner.model_id)
    refiner.cache.put("sam-embedding", key, entry(third, original=(30, 40)))
    monkeypatch.setattr(refiner.predictor, "set_image", fake_set_image)
    assert refiner.set_image(third)["cached"] is False and computed == [(40, 30, 3)]
    assert refiner.cache.get("sam-embedding", key)["original_size"].tolist() == [40, 30]
    refiner.set_image(image)
    assert torch.equal(refiner.predictor.features, naip_features) and counter.calls == 1


# ---------------------------------------------------------------------- refinement
@pytest.mark.slow
def test_refine_real_naip_end_to_end(embedded, shared_data):
    refiner, image, _, counter, _ = embedded
    labels = _bright_components(image)
    ids = set(np.unique(labels[labels > 0]).tolist())
    assert len(ids) >= 5
    # brightest pixel of every other component as its point; the rest use the fallback
    gray = image.rgb().mean(axis=-1)
    points = {}
    for i in sorted(ids)[::2]:
        rr, cc = np.nonzero(labels == i)
        j = int(np.argmax(gray[rr, cc]))
        points[i] = np.array([[cc[j], rr[j]]], dtype=float)
    out, stats = refiner.refine(image, labels, points, scores=gray)
    assert counter.calls == 1  # only the fixture's first set_image ran the encoder
    assert out.shape == labels.shape and out.dtype == np.int32
    assert set(np.unique(out[out > 0]).tolist()) <= ids
    assert not out[~image.valid].any()
    assert stats["regions"] == len(ids)
    assert stats["refined"] + stats["kept"] == stats["regions"]
    assert stats["embedding_cached"] is True and stats["ms"] > 0
    for i in ids:  # each component is either unchanged or a mask that passed acceptance
        before, after = labels == i, out == i
        if stats["refined"] == 0 or np.array_equal(before, after):
            continue
        inter = np.count_nonzero(before & after)
        assert after.sum() <= MAX_GROWTH * before.sum()
        assert inter / np.count_nonzero(before | after) >= MIN_IOU * 0.5


@pytest.mark.slow
def test_refine_caps_regions_by_priority(embedded, shared_data, monkeypatch):
    refiner, image, _, _, _ = embedded
    labels = _bright_components(image)
    areas = np.bincount(labels.ravel())
    monkeypatch.setattr(refiner, "settings", refiner.settings.model_copy(
        update={"sam_max_regions": 3}))
    prompted = []
    original = refiner._decode

    def spy(prompts):
        prompted.extend(prompts)
        return original(prompts)

    monkeypatch.setattr(refiner, "_decode", spy)
    out, stats = refiner.refine(image, labels, {})
    assert len(prompted) == 3
    assert stats["kept"] >= stats["regions"] - 3
    largest = np.argsort(-areas[1:], kind="stable")[:3] + 1
    for i in set(range(1, len(areas))) - set(largest.tolist()):  # never prompted: unchanged
        assert np.array_equal(out == i, labels == i)


@pytest.mark.slow
def test_random_sam_absurd_masks_keep_the_component(embedded, shared_data):
    refiner, image, _, _, _ = embedded
    labels = _bright_components(image)
    comp = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rr, cc = np.nonzero(labels == comp)
    point = np.array([[cc[len(cc) // 2], rr[len(rr) // 2]]], dtype=float)
    refiner.set_image(image)
    with torch.inference_mode():
        masks, _, _ = refiner.predictor.predict(point, np.array([1]), multimask_output=True)
    area = len(rr)
    # random weights: every proposal is far larger than the component (or empty)
    assert all(m.sum() > MAX_GROWTH * area or m.sum() == 0 for m in masks)
    single = np.where(labels == comp, comp, 0).astype(np.int32)
    out, stats = refiner.refine(image, single, {comp: point})
    assert np.array_equal(out, single)
    assert stats == {**stats, "regions": 1, "refined": 0, "kept": 1}


def _square_components(shape):
    labels = np.zeros(shape, dtype=np.int32)
    labels[60:80, 60:80] = 1  # A: 400 px
    labels[60:80, 83:99] = 2  # B: 320 px, 3 px to the right of A
    union = np.zeros(shape, dtype=bool)
    union[60:80, 60:99] = True  # one object covering both: IoU 0.51 with A, 0.41 with B
    return labels, union


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


@pytest.mark.slow
def test_refine_accepts_a_good_mask_and_rejects_absurd_ones(embedded, shared_data, monkeypatch):
    refiner, image, _, _, _ = embedded
    labels = np.zeros(image.shape, dtype=np.int32)
    labels[100:120, 60:80] = 1
    good = np.zeros(image.shape, dtype=bool)
    good[98:121, 61:82] = True  # a sharper outline of the same object (IoU 0.76)
    good[140:150, 140:150] = True  # plus a detached blob: dropped, it does not touch A
    _fake_decode(refiner, monkeypatch, [good])
    out, stats = refiner.refine(image, labels, {1: np.array([[70.0, 110.0]])})
    assert stats["refined"] == 1 and stats["kept"] == 0
    assert _iou(out[:130] == 1, good[:130]) > 0.95 and not out[130:].any()
    for absurd in (np.ones(image.shape, bool), np.zeros(image.shape, bool)):
        _fake_decode(refiner, monkeypatch, [absurd])
        out, stats = refiner.refine(image, labels, {1: np.array([[70.0, 110.0]])})
        assert stats["refined"] == 0 and stats["kept"] == 1
        assert np.array_equal(out, labels)


@pytest.mark.slow
def test_overlapping_refined_masks_higher_priority_wins(embedded, shared_data, monkeypatch):
    refiner, image, _, _, _ = embedded
    labels, union = _square_components(image.shape)
    _fake_decode(refiner, monkeypatch, [union, union])
    out, stats = refiner.refine(image, labels, {})
    assert stats["refined"] == 2 and stats["kept"] == 0 and stats["absorbed"] == 1
    assert _iou(out == 1, union) > 0.95 and not (out == 2).any()  # A is larger: it wins
    # with a score map favouring B, B is refined first and takes the object
    scores = np.where(labels == 2, 0.9, 0.1)
    out, stats = refiner.refine(image, labels, {}, scores=scores)
    assert _iou(out == 2, union) > 0.95 and not (out == 1).any()


@pytest.mark.slow
def test_kept_components_keep_their_pixels(embedded, shared_data, monkeypatch):
    refiner, image, _, _, _ = embedded
    labels, union = _square_components(image.shape)
    monkeypatch.setattr(refiner, "settings", refiner.settings.model_copy(
        update={"sam_max_regions": 1}))
    seen = _fake_decode(refiner, monkeypatch, [union])
    out, stats = refiner.refine(image, labels, {})
    assert len(seen) == 1 and stats["refined"] == 1 and stats["kept"] == 1
    assert np.array_equal(out == 2, labels == 2)  # B was not refined: its pixels stay B
    assert _iou(out == 1, union & (labels != 2)) > 0.95


@pytest.mark.slow
def test_points_are_x_col_y_row_pixel_centres(embedded, shared_data, monkeypatch):
    refiner, image, _, _, _ = embedded
    labels = np.zeros(image.shape, dtype=np.int32)
    labels[40:60, 10:30] = 3
    seen = _fake_decode(refiner, monkeypatch, [np.zeros(image.shape, bool)])
    refiner.refine(image, labels, {3: np.array([[12.0, 50.0], [25.0, 41.0]])})
    h, w = image.shape
    in_h, in_w = refiner.predictor.input_size
    back_x = (seen[0][:, 0] + 0.5) * w / in_w - 0.5
    back_y = (seen[0][:, 1] + 0.5) * h / in_h - 0.5
    assert np.allclose(back_x, [12, 25]) and np.allclose(back_y, [50, 41])
    # no points given: one point at the component's most interior pixel
    seen.clear()
    refiner.refine(image, labels, {})
    x = (seen[0][0, 0] + 0.5) * w / in_w - 0.5
    y = (seen[0][0, 1] + 0.5) * h / in_h - 0.5
    assert 15 <= x <= 25 and 45 <= y <= 55


@pytest.mark.slow
def test_refine_edge_cases(embedded, shared_data):
    refiner, image, _, _, _ = embedded
    empty = np.zeros(image.shape, dtype=np.int32)
    out, stats = refiner.refine(image, empty, {})
    assert not out.any() and stats["regions"] == 0 and stats["refined"] == 0
    with pytest.raises(InputError, match="shape"):
        refiner.refine(image, np.zeros((5, 5), dtype=np.int32), {})
    labels = np.zeros(image.shape, dtype=np.int32)
    labels[10:20, 10:20] = 1
    with pytest.raises(InputError, match="points for component 1"):
        refiner.refine(image, labels, {1: np.zeros(3)})


def test_fingerprint_reads_only_the_ends(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * (3 << 20))
    b = tmp_path / "b.bin"
    b.write_bytes(b"x" * (3 << 20))
    assert checkpoint_fingerprint(a) == checkpoint_fingerprint(b)
    b.write_bytes(b"x" * (3 << 20) + b"y")
    assert checkpoint_fingerprint(a) != checkpoint_fingerprint(b)
