"""Image-level chip embedders (CLIP encode_image, GRAFT CLS or patch mean) on small
random-weight models with the real architectures, and the model check at search time."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError
from viper_rs.core.raster_write import write_geotiff
from viper_rs.index import ChipGrid, ChipIndex, Searcher, build_index
from viper_rs.index.embedders import EmbedderSpec, TowerChipEmbedder, build_chip_embedder
from viper_rs.synthetic import make_scene
from viper_rs.vision.build import save_graft_checkpoint
from viper_rs.vision.modeling.graft import GraftConfig, GraftPixelModel

TINY_CLIP = "viper-test-tiny-clip"
TINY_GRAFT = dict(image_size=32, patch_size=16, width=64, layers=2, heads=2, embed_dim=32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny open_clip config (model config as data) with random weights, and two tiny
    GRAFT checkpoints in the published layout: with and without visual_projection."""
    folder = tmp_path_factory.mktemp("w")
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                        "layers": 2}}
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY_CLIP)
    torch.save(clip.state_dict(), folder / "clip.pt")
    torch.manual_seed(1)
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), folder / "clip_other.pt")
    torch.manual_seed(2)
    save_graft_checkpoint(GraftPixelModel(GraftConfig(**TINY_GRAFT)), folder / "graft.ckpt")
    save_graft_checkpoint(GraftPixelModel(GraftConfig(**TINY_GRAFT, visual_projection=False)),
                          folder / "graft_patches.ckpt")
    return folder


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiles")
    write_geotiff(make_scene(0, size=256).image, folder / "a.tif")
    return folder


def settings(weights, tmp_path, **kw) -> Settings:
    return Settings(clip_model=TINY_CLIP, clip_checkpoint=weights / "clip.pt",
                    cache_dir=tmp_path / "cache", device="cpu", **kw)


def test_clip_index_stores_unit_image_embeddings_and_scores_by_cosine(weights, tiles, tmp_path):
    s = settings(weights, tmp_path)
    out = tmp_path / "ix"
    r = build_index([tiles], out, embedder="clip", settings=s, grid=ChipGrid(128, 0.0),
                    progress=False)
    assert r.embedder == "clip" and r.indexed == 4 and r.model_id.endswith("/image")
    index = ChipIndex.open(out)
    vecs = np.concatenate([v for _, v in index.footprints_and_vectors()])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # the stored vector is encode_image of the chip resized to the model's input
    emb = build_chip_embedder("clip", s)
    batch, v = next(iter(index.footprints_and_vectors()))
    row = batch.slice(0, 1).to_pylist()[0]
    from viper_rs.core.geo import GeoImage

    chip = GeoImage.open(row["source"], window=(row["col"], row["row"], row["width"],
                                                row["height"]))
    np.testing.assert_allclose(emb.embed([chip])[0], v[0], atol=1e-5)
    res = Searcher(out, s).search("a pond", k=4, rank="embedding")
    text, _ = emb.embed_text("a pond")
    np.testing.assert_allclose(np.linalg.norm(text), 1.0, atol=1e-5)
    for h in res.hits:
        assert -1.0 <= h.score <= 1.0
    assert res.hits[0].score == pytest.approx(float((vecs @ text).max()), abs=1e-5)
    # by default a concept with a measured attribute ranks by it, the cosine breaking ties
    ranked = Searcher(out, s).search("a pond", k=4)
    assert ranked.ranked_by == "water_share"
    shares = [h.attributes["water_share"] for h in ranked.hits]
    assert None not in shares and shares == sorted(shares, reverse=True)


def test_search_with_other_weights_is_refused(weights, tiles, tmp_path):
    s = settings(weights, tmp_path)
    out = tmp_path / "ix"
    build_index([tiles], out, embedder="clip", settings=s, grid=ChipGrid(256), progress=False)
    other = s.model_copy(update={"clip_checkpoint": weights / "clip_other.pt"})
    with pytest.raises(ConfigError, match="was built with"):
        Searcher(out, other)
    with pytest.raises(Exception, match="another embedder or chip grid"):
        build_index([tiles], out, embedder="clip", settings=other, grid=ChipGrid(256),
                    progress=False)


@pytest.mark.parametrize("ckpt,pooling", [("graft.ckpt", "cls"),
                                          ("graft_patches.ckpt", "patch-mean")])
def test_graft_image_level_embedding(weights, tiles, tmp_path, ckpt, pooling, monkeypatch):
    import functools

    import viper_rs.vision.build as vb

    # the published architecture is ViT-B/16; these files hold the tiny one
    monkeypatch.setattr(vb, "load_graft", functools.partial(
        vb.load_graft, config=GraftConfig(**TINY_GRAFT)))
    s = settings(weights, tmp_path, graft_checkpoint=weights / ckpt)
    emb = build_chip_embedder("graft", s)
    assert isinstance(emb, TowerChipEmbedder) and emb.pooling == pooling
    assert emb.model_id.endswith("/" + pooling) and emb.dim == 32
    chip = make_scene(1, size=96).image
    v = emb.embed([chip])
    assert v.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    x = emb._batch([chip])
    with torch.inference_mode():
        if pooling == "cls":
            ref = emb.model.encode_image(x)
        else:
            ref = torch.nn.functional.normalize(emb.model.encode(x).mean(dim=(1, 2)), dim=-1)
    np.testing.assert_allclose(v, ref.numpy(), atol=1e-5)
    out = tmp_path / pooling
    build_index([tiles], out, embedder="graft", settings=s, grid=ChipGrid(128),
                progress=False)
    assert len(Searcher(out, s).search("water", k=3).hits) == 3


def test_auto_picks_spectral_without_weights_and_clip_with_them(weights, tmp_path):
    bare = Settings(cache_dir=tmp_path / "empty", device="cpu")
    assert build_chip_embedder("auto", bare).name == "spectral"
    assert build_chip_embedder("auto", settings(weights, tmp_path)).name == "clip"
    with pytest.raises(ConfigError, match="unknown embedder"):
        build_chip_embedder("resnet", bare)
    with pytest.raises(ConfigError, match="GRAFT checkpoint"):
        build_chip_embedder("graft", bare)


def test_spec_round_trips_settings_without_secrets(weights, tmp_path):
    s = settings(weights, tmp_path).model_copy(update={"llm_api_key": "sk-secret"})
    spec = EmbedderSpec.of("clip", s)
    assert "sk-secret" not in json.dumps(spec.settings)
    assert spec.build().model_id == build_chip_embedder("clip", s).model_id
