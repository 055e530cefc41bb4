"""GRAFT pixel model and weight loaders: published checkpoint layout, strict loading,
equivalence with the Hugging Face reference, CLIP state dicts and TorchScript archives,
dense CLIP features and the cached text encoder."""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest
import torch

from tests.graft_reference import (
    clip_input,
    cosines,
    lightning,
    published_state,
    reference,
    synthetic_rgb,
    tiny_clip,
    write_torchscript,
)
from viper_rs.core.errors import ConfigError
from viper_rs.vision.build import (
    CheckpointError,
    checkpoint_fingerprint,
    load_clip,
    load_graft,
    load_graft_state,
    resolve_device,
    save_graft_checkpoint,
)
from viper_rs.vision.cache import FeatureCache
from viper_rs.vision.modeling import ClipDenseEncoder, GraftConfig, GraftPixelModel
from viper_rs.vision.modeling.keymap import hf_to_open_clip, open_clip_to_hf
from viper_rs.vision.text import TextEncoder

TINY = GraftConfig(image_size=32, patch_size=16, width=64, layers=2, heads=2, embed_dim=32)


@pytest.fixture(scope="module")
def graft() -> GraftPixelModel:
    """The reference weights loaded from their published-layout state dict."""
    return load_graft_state(published_state())


def tiny_graft(seed: int = 0) -> GraftPixelModel:
    torch.manual_seed(seed)
    model = GraftPixelModel(TINY, model_id="tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- key mapping


def test_keymap_merges_and_splits_qkv_exactly():
    g = torch.Generator().manual_seed(0)
    hf = {}
    for i in range(2):
        for part in "qkv":
            hf[f"encoder.layers.{i}.self_attn.{part}_proj.weight"] = torch.randn(8, 8, generator=g)
            hf[f"encoder.layers.{i}.self_attn.{part}_proj.bias"] = torch.randn(8, generator=g)
        hf[f"encoder.layers.{i}.layer_norm1.weight"] = torch.randn(8, generator=g)
        hf[f"encoder.layers.{i}.mlp.fc2.bias"] = torch.randn(8, generator=g)
    hf["pre_layrnorm.bias"] = torch.randn(8, generator=g)
    hf["embeddings.position_ids"] = torch.arange(5)
    oc, leftover = hf_to_open_clip(hf)
    assert leftover == []
    w = oc["transformer.resblocks.1.attn.in_proj_weight"]
    assert w.shape == (24, 8)
    assert torch.equal(w[8:16], hf["encoder.layers.1.self_attn.k_proj.weight"])  # q, k, v order
    assert torch.equal(oc["transformer.resblocks.0.ln_1.weight"], hf["encoder.layers.0.layer_norm1.weight"])
    assert torch.equal(oc["transformer.resblocks.0.mlp.c_proj.bias"], hf["encoder.layers.0.mlp.fc2.bias"])
    back, rest = open_clip_to_hf(oc)
    assert rest == []
    assert back.keys() == hf.keys() - {"embeddings.position_ids"}
    assert all(torch.equal(back[k], hf[k]) for k in back)


def test_keymap_reports_unknown_and_incomplete_keys():
    hf = {
        "encoder.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4),
        "encoder.layers.0.self_attn.k_proj.weight": torch.zeros(4, 4),  # no v: cannot merge
        "encoder.layers.0.adapter.weight": torch.zeros(4),
        "text_model.foo": torch.zeros(1),
    }
    _, leftover = hf_to_open_clip(hf)
    assert sorted(leftover) == sorted(hf)


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.slow
def test_graft_matches_hf_reference_on_every_patch(graft):
    """The open_clip trunk + head reproduce GRAFT's HF computation (196 patches, 2 images)."""
    x = torch.cat([clip_input(synthetic_rgb(224, 224, seed=s)) for s in (0, 1)])
    ref, img_ref = reference(x, image_level=True)
    with torch.inference_mode():
        ours = graft.encode(x).numpy()
    assert ours.shape == (2, 14, 14, 512) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)
    assert cosines(ours, ref).min() >= 0.999
    # a real image tower: patches differ from each other
    flat = ours[0].reshape(-1, 512)
    assert (flat @ flat.T).min() < 0.9
    # the image-level path (CLS -> post_layernorm -> visual_projection) matches too
    with torch.inference_mode():
        assert cosines(graft.encode_image(x).numpy(), img_ref).min() >= 0.999


def test_graft_architecture_is_openai_clip_b16():
    from open_clip.transformer import QuickGELU

    with torch.device("meta"):
        graft = GraftPixelModel()
    v = graft.visual
    assert (graft.embed_dim, graft.patch, graft.window) == (512, 16, 224)
    assert len(v.transformer.resblocks) == 12 and v.transformer.width == 768
    assert v.transformer.resblocks[0].attn.num_heads == 12
    assert isinstance(v.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert graft.projector[1].bias is None and graft.projector[0].eps == 1e-5
    assert v.ln_pre.eps == 1e-5 and v.transformer.resblocks[0].ln_1.eps == 1e-5


def test_encode_rejects_other_window_sizes():
    with pytest.raises(ValueError, match="32"):
        tiny_graft().encode(torch.zeros(1, 3, 48, 48))


# ----------------------------------------------------------------------------- layouts


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lightning_v1", "transformers5"])
def test_published_layout_variants_load_to_the_same_weights(graft, variant):
    """Older/newer savers: no visual_projection, position_ids or not, a ``model.`` prefix,
    transformers 5 names (no ``vision_model.``), float16 tensors, a 1-d logit_scale."""
    if variant == "lightning_v1":
        state = published_state(projection=False, position_ids=True)
        state = {"model." + k: v for k, v in state.items()}
    else:
        state = published_state(position_ids=False, vision_model=False)
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        state["logit_scale"] = state["logit_scale"].reshape(1)
    model = load_graft_state(state, "variant")
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    ref = graft.state_dict()
    tol = 2e-3 if variant == "transformers5" else 0
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32, k
        assert torch.allclose(v, ref[k], atol=tol, rtol=tol), k
    assert (model.visual.proj is None) == (variant == "lightning_v1")


def tiny_state(tmp_path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small model's state dict in the published layout (as our writer saves it)."""
    path = save_graft_checkpoint(tiny_graft(seed), tmp_path / f"tiny{seed}.ckpt")
    return torch.load(path, weights_only=True)["state_dict"]


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = tiny_state(tmp_path)
    del state["satellite_image_backbone.vision_model.encoder.layers.1.mlp.fc2.weight"]
    del state["projector.0.bias"]
    state["satellite_image_backbone.vision_model.encoder.layers.2.mlp.fc1.weight"] = torch.zeros(1)
    state["ground_image_backbone.foo"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_graft_state(state, "some/graft.ckpt", config=TINY)
    msg = str(err.value)
    assert "some/graft.ckpt" in msg and "not a GRAFT checkpoint" in msg
    assert "2 missing key(s)" in msg and "layers.1.mlp.fc2.weight" in msg and "projector.0.bias" in msg
    assert "2 unexpected key(s)" in msg and "layers.2.mlp.fc1.weight" in msg
    assert "ground_image_backbone.foo" in msg
    assert isinstance(err.value, ConfigError)


def test_many_missing_keys_are_summarised_and_wrong_shapes_named(tmp_path):
    state = {k: v for k, v in tiny_state(tmp_path).items() if "layers.0." not in k}
    with pytest.raises(CheckpointError, match=r"16 missing key\(s\): .*\(11 more\)"):
        load_graft_state(state, config=TINY)
    state = tiny_state(tmp_path)
    state["projector.1.weight"] = torch.zeros(16, 64)
    with pytest.raises(CheckpointError, match=r"projector\.1\.weight \(file \(16, 64\), model \(32, 64\)\)"):
        load_graft_state(state, config=TINY)
    state["projector.1.weight"] = "not a tensor"
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_graft_state(state, config=TINY)


def test_a_vit_b16_checkpoint_is_checked_against_vit_b16(tmp_path):
    """The default architecture is the published one: a small model's file is refused."""
    with pytest.raises(CheckpointError, match=r"wrong shape\(s\).*\(768,"):
        load_graft_state(tiny_state(tmp_path), "tiny.ckpt")


def test_clip_checkpoint_given_as_graft_gets_a_hint():
    state = {k: v for k, v in tiny_clip().state_dict().items()}
    with pytest.raises(CheckpointError, match="--clip-checkpoint"):
        load_graft_state(state, "clip.pt")


def test_non_finite_weights_are_rejected(tmp_path):
    state = tiny_state(tmp_path)
    state["projector.1.weight"][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_graft_state(state, config=TINY)


# ----------------------------------------------------------------------------- files


def test_save_writes_the_published_layout_and_round_trips(tmp_path):
    model = tiny_graft()
    path = save_graft_checkpoint(model, tmp_path / "tiny.ckpt")
    ckpt = torch.load(path, weights_only=True)
    assert {"epoch", "global_step", "pytorch-lightning_version", "state_dict",
            "hyper_parameters"} <= ckpt.keys()
    keys = set(ckpt["state_dict"])
    assert "satellite_image_backbone.vision_model.encoder.layers.1.self_attn.v_proj.bias" in keys
    assert "satellite_image_backbone.visual_projection.weight" in keys
    assert {"projector.0.weight", "projector.0.bias", "projector.1.weight", "logit_scale"} <= keys
    loaded = load_graft(path, config=TINY)
    same_weights(model, loaded)
    assert loaded.model_id == f"graft@{checkpoint_fingerprint(path)}"
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model.encode(x), loaded.encode(x))


@pytest.mark.slow
def test_full_size_checkpoint_file_loads(tmp_path, graft):
    """A full ViT-B/16 Lightning file with the real layout (written by transformers names)."""
    path = tmp_path / "graft.ckpt"
    torch.save(lightning(published_state()), path)
    t0 = time.perf_counter()
    model = load_graft(path)
    assert time.perf_counter() - t0 < 20
    same_weights(graft, model)
    # and our writer reproduces the same key set (minus the ignorable position_ids)
    out = save_graft_checkpoint(model, tmp_path / "again.ckpt")
    written = set(torch.load(out, weights_only=True, mmap=True)["state_dict"])
    assert written == set(published_state(position_ids=False))


def test_bare_state_dict_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    model = tiny_graft(1)
    ckpt = torch.load(save_graft_checkpoint(model, tmp_path / "a.ckpt"), weights_only=True)
    bare = tmp_path / "bare.pt"
    torch.save(ckpt["state_dict"], bare)
    same_weights(model, load_graft(bare, config=TINY))
    st = tmp_path / "graft.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt["state_dict"].items()}, str(st))
    same_weights(model, load_graft(st, config=TINY))


class AttributeDict(dict):
    """Like Lightning's hparams container."""


def test_python_objects_in_hyper_parameters_are_not_executed(tmp_path):
    model = tiny_graft(2)
    path = save_graft_checkpoint(model, tmp_path / "a.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"] = AttributeDict(args=argparse.Namespace(lr=1e-5, root=tmp_path),
                                             name="graft")
    torch.save(ckpt, path)
    same_weights(model, load_graft(path, config=TINY))


def test_unreadable_files_raise_checkpoint_error(tmp_path):
    good = save_graft_checkpoint(tiny_graft(), tmp_path / "good.ckpt")
    data = good.read_bytes()
    cases = {
        "empty.ckpt": b"",
        "truncated.ckpt": data[: len(data) // 2],
        "text.ckpt": b"this is not a checkpoint\n",
        "noise.safetensors": b"\x00\x01garbage" * 10,
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
    torch.save([torch.zeros(2)], tmp_path / "list.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "emptydict.ckpt")
    expect = {
        "empty.ckpt": "empty", "truncated.ckpt": "not a readable", "text.ckpt": "not a readable",
        "noise.safetensors": "safetensors", "list.ckpt": "holds a list",
        "emptydict.ckpt": "state dict is empty", "missing.ckpt": "no such file", "": "directory",
    }
    for name, words in expect.items():
        with pytest.raises(CheckpointError, match=words) as err:
            load_graft(tmp_path / name, config=TINY)
        assert str(tmp_path / name) in str(err.value)


def test_fingerprint_is_stable_and_content_sensitive(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    payload = np.random.default_rng(0).bytes(3 << 20)
    a.write_bytes(payload)
    b.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    assert checkpoint_fingerprint(a) == checkpoint_fingerprint(a)
    assert checkpoint_fingerprint(a) != checkpoint_fingerprint(b)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


# ----------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def clip_b16(tmp_path_factory):
    """A random open_clip ViT-B-16-quickgelu written as a wrapped state dict file."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu").eval()
    path = tmp_path_factory.mktemp("clip") / "clip_b16.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return model, path


@pytest.mark.slow
def test_load_clip_state_dict_file(clip_b16):
    ref, path = clip_b16
    model, tokenizer, model_id = load_clip("ViT-B-16-quickgelu", path)
    assert model_id == f"ViT-B-16-quickgelu@{checkpoint_fingerprint(path)}"
    assert not model.training
    tokens = tokenizer(["a residential area", "a lake"])
    with torch.inference_mode():
        assert torch.allclose(model.encode_text(tokens), ref.encode_text(tokens), atol=1e-5)
    # the same weights under the wrong architecture are refused with the keys named
    with pytest.raises(CheckpointError, match=r"ViT-B-32 CLIP checkpoint: .*wrong shape"):
        load_clip("ViT-B-32", path)


def test_load_clip_torchscript_archive(tmp_path):
    ref = tiny_clip()
    path = write_torchscript(ref, tmp_path / "ViT-tiny.pt")
    model, tokenizer, model_id = load_clip("ViT-B-16", path)
    assert model_id.startswith("ViT-B-16@")
    from open_clip.transformer import QuickGELU

    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    tokens = tokenizer(["a house", "water"])
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(model.encode_text(tokens), ref.encode_text(tokens), atol=1e-5)
        assert torch.allclose(model.encode_image(x), ref.encode_image(x), atol=1e-5)


def test_load_clip_without_weights_says_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError, match="weights --download"):
        load_clip("ViT-B-16")
    with pytest.raises(CheckpointError, match="no such file"):
        load_clip("ViT-B-16", tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_text("garbage")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_clip("ViT-B-16", tmp_path / "bad.pt")
    torch.save(tiny_clip().state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        load_clip("ViT-Nonexistent-7", tmp_path / "tiny.pt")


def test_graft_checkpoint_given_as_clip_gets_a_hint(tmp_path):
    path = save_graft_checkpoint(tiny_graft(), tmp_path / "g.ckpt")
    with pytest.raises(CheckpointError, match="--graft-checkpoint"):
        load_clip("ViT-B-16", path)


# ----------------------------------------------------------------------------- dense CLIP


def test_clip_dense_tokens_mode_matches_open_clip_tokens():
    model = tiny_clip()
    enc = ClipDenseEncoder(model, "tiny", mode="tokens")
    assert (enc.window, enc.patch, enc.embed_dim) == (32, 16, 32)
    x = torch.randn(3, 3, 32, 32)
    model.visual.output_tokens = True
    with torch.inference_mode():
        _, tokens = model.visual(x)
        ref = torch.nn.functional.normalize(tokens @ model.visual.proj, dim=-1)
        ours = enc.encode(x)
    model.visual.output_tokens = False
    assert ours.shape == (3, 2, 2, 32)
    assert torch.allclose(ours.reshape(3, 4, 32), ref, atol=1e-5)
    assert enc.model_id == "tiny/tokens"


def test_clip_dense_maskclip_mode_is_the_value_path():
    """MaskCLIP = the last block's attention with every token attending only to itself,
    without residual or MLP."""
    model = tiny_clip()
    enc = ClipDenseEncoder(model, "tiny")
    assert enc.mode == "maskclip"
    v = model.visual
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        h = v.conv1(x).flatten(2).transpose(1, 2)
        h = torch.cat([v.class_embedding.expand(2, 1, -1), h], 1) + v.positional_embedding
        h = v.ln_pre(h)
        for blk in v.transformer.resblocks[:-1]:
            h = blk(h)
        last = v.transformer.resblocks[-1]
        n = h.shape[1]
        self_only = torch.full((n, n), float("-inf")).fill_diagonal_(0)
        y = last.attn(last.ln_1(h), last.ln_1(h), last.ln_1(h), attn_mask=self_only,
                      need_weights=False)[0]
        ref = torch.nn.functional.normalize(v.ln_post(y[:, 1:]) @ v.proj, dim=-1)
        ours = enc.encode(x).reshape(2, 4, -1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_clip_dense_rejects_non_vit_and_bad_mode():
    with pytest.raises(ConfigError, match="ViT"):
        ClipDenseEncoder(torch.nn.Linear(2, 2), "linear")
    with pytest.raises(ConfigError, match="mode"):
        ClipDenseEncoder(tiny_clip(), "tiny", mode="sclip")


# ----------------------------------------------------------------------------- text


def test_text_encoder_caches_per_string(tmp_path):
    import open_clip

    model, tokenizer = tiny_clip(), open_clip.get_tokenizer("ViT-B-16")
    cache = FeatureCache(tmp_path / "cache", 8)
    enc = TextEncoder(model, tokenizer, "tiny", "cpu", cache)
    a = enc.encode(["a building", "water", "a building"])
    assert a.shape == (3, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a[0], a[2])
    assert enc.last_stats["computed"] == 2 and enc.last_stats["cached"] == 0
    b = enc.encode(["water", "a road"])
    assert enc.last_stats["computed"] == 1 and enc.last_stats["cached"] == 1
    assert np.array_equal(b[0], a[1])
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(model.encode_text(tokenizer(["a road"])), dim=-1)
    np.testing.assert_allclose(b[1], ref[0].numpy(), atol=1e-6)
    # a new encoder (new process) finds the strings on disk; another model id does not
    again = TextEncoder(model, tokenizer, "tiny", "cpu", FeatureCache(tmp_path / "cache", 8))
    c = again.encode(["a building", "a road"])
    assert again.last_stats == {**again.last_stats, "computed": 0, "cached": 2}
    assert np.array_equal(c[0], a[0])
    other = TextEncoder(model, tokenizer, "tiny-v2", "cpu", FeatureCache(tmp_path / "cache", 8))
    other.encode(["a building"])
    assert other.last_stats["computed"] == 1
    assert enc.encode([]).shape == (0, 32)
