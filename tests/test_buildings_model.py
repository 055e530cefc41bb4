"""BuildingNet checkpoints (strict save/load, clear errors) and instance separation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viper_rs.core.errors import ConfigError
from viper_rs.vision.build import CheckpointError
from viper_rs.vision.buildings.checkpoint import (
    DEFAULT_WEIGHTS,
    FORMAT,
    load_building_model,
    save_building_model,
)
from viper_rs.vision.buildings.instances import instances_from_probs, predict_probs
from viper_rs.vision.buildings.model import BuildingNet, BuildingNetConfig

SMALL = BuildingNetConfig(widths=(4, 8, 8))


def _model(seed: int = 0, config: BuildingNetConfig = SMALL) -> BuildingNet:
    torch.manual_seed(seed)
    return BuildingNet(config).eval()


def test_default_weights_path():
    assert DEFAULT_WEIGHTS.name == "buildingnet.pt"
    assert DEFAULT_WEIGHTS.parent.name == "weights"


def test_save_load_roundtrip_is_strict_fp16(tmp_path):
    model = _model()
    # make BN statistics non-trivial so they are checked too
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    model.eval()
    path = save_building_model(model, tmp_path / "sub" / "m.pt", {"seed": 3, "places": ["x"]})
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["config"] == SMALL.to_dict()
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    assert raw["state_dict"]["down.0.1.num_batches_tracked"].dtype == torch.int64
    loaded, meta = load_building_model(path)
    assert meta == {"seed": 3, "places": ["x"]}
    assert loaded.config == SMALL and not loaded.training
    for k, v in loaded.state_dict().items():
        ref = model.state_dict()[k]
        if v.is_floating_point():
            assert v.dtype == torch.float32
            assert torch.allclose(v, ref.half().float())
        else:
            assert torch.equal(v, ref)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_building_model(tmp_path / "nope.pt")
    assert issubclass(CheckpointError, ConfigError)


def test_truncated_file(tmp_path):
    path = save_building_model(_model(), tmp_path / "m.pt", {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as exc:
        load_building_model(path)
    assert "\n" not in str(exc.value)


def test_graft_like_dict_is_another_architecture(tmp_path):
    path = tmp_path / "graft.ckpt"
    torch.save({"state_dict": {"satellite_image_backbone.vision_model.x": torch.zeros(2)},
                "hyper_parameters": {}}, path)
    with pytest.raises(CheckpointError, match="not a BuildingNet checkpoint.*'format'") as exc:
        load_building_model(path)
    assert "train-buildings" in str(exc.value)


def test_wrong_format_tag(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something/2", "config": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="format 'something/2'"):
        load_building_model(path)


def test_other_widths_name_keys(tmp_path):
    path = save_building_model(_model(), tmp_path / "m.pt", {})
    raw = torch.load(path, weights_only=True)
    raw["config"]["widths"] = [8, 8, 8]  # stored config no longer matches the tensors
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"wrong shape\(s\): down\.0\.0\.weight"):
        load_building_model(path)


def test_missing_and_unexpected_keys(tmp_path):
    path = save_building_model(_model(), tmp_path / "m.pt", {})
    raw = torch.load(path, weights_only=True)
    raw["state_dict"].pop("head.weight")
    raw["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="missing key.*head.weight.*unexpected key.*extra"):
        load_building_model(path)


def test_unknown_config_key(tmp_path):
    path = save_building_model(_model(), tmp_path / "m.pt", {})
    raw = torch.load(path, weights_only=True)
    raw["config"]["depth_multiplier"] = 2
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="config does not fit.*depth_multiplier"):
        load_building_model(path)


def test_predict_probs_shape_and_sum():
    model = _model()
    rgb = np.random.default_rng(0).random((300, 200, 3), dtype=np.float32)
    probs = predict_probs(model, rgb)
    assert probs.shape == (3, 300, 200) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_predict_probs_tiles_match_whole():
    """Tiled inference of a large input agrees with one pass (the margin hides seams)."""
    model = _model(config=BuildingNetConfig(widths=(4, 4)))  # receptive field < margin
    rgb = np.random.default_rng(1).random((300, 260, 3), dtype=np.float32)
    whole = predict_probs(model, rgb, tile_px=1024)
    tiled = predict_probs(model, rgb, tile_px=160)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def _touching_probs() -> np.ndarray:
    """Two 20x20 squares side by side, touching, with a 2 px boundary line between them
    and a 1 px boundary ring around them."""
    h, w = 40, 60
    probs = np.zeros((3, h, w), np.float32)
    probs[0] = 1.0
    building = np.zeros((h, w), bool)
    building[10:30, 10:50] = True
    boundary = building.copy()
    boundary[11:29, 11:49] = False  # outer ring
    boundary[10:30, 29:31] = True  # the shared wall
    interior = building & ~boundary
    probs[:, building] = 0.0
    probs[1, interior] = 0.9
    probs[2, interior] = 0.1
    probs[2, boundary] = 0.8
    probs[1, boundary] = 0.2
    return probs


def test_touching_buildings_come_apart():
    score, labels = instances_from_probs(_touching_probs())
    assert score.dtype == np.float32 and labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1, 2}
    # the whole footprint is covered, split near the wall
    assert (labels[10:30, 10:50] > 0).all()
    assert len(set(labels[20, 12:28])) == 1 and len(set(labels[20, 32:48])) == 1
    assert labels[20, 12] != labels[20, 48]
    assert (labels[labels == 1].size - 400) ** 2 < 40**2


def test_extent_grows_kept_buildings_without_adding_any():
    probs = np.zeros((3, 40, 60), np.float32)
    probs[0] = 1.0
    faint = np.array([0.6, 0.4, 0.0], np.float32)[:, None, None]
    sure = np.array([0.05, 0.95, 0.0], np.float32)[:, None, None]
    probs[:, 5:25, 5:55] = faint  # one faint slab holding two confident roofs ...
    probs[:, 10:20, 10:20] = sure
    probs[:, 10:20, 40:50] = sure
    probs[:, 30:38, 5:15] = faint  # ... and a faint blob with no confident core
    # the extent alone (the slab has no wall between the roofs, which the default merge
    # would join: see tests/test_building_use.py)
    _, tight = instances_from_probs(probs, min_pixels=8, extent_threshold=None,
                                    merge_boundary=None)
    _, grown = instances_from_probs(probs, min_pixels=8, extent_threshold=0.35,
                                    merge_boundary=None)
    assert tight.max() == grown.max() == 2
    assert instances_from_probs(probs, min_pixels=8, extent_threshold=0.35)[1].max() == 1
    assert (tight > 0).sum() == 200 and (grown > 0).sum() == 20 * 50
    assert (grown[30:38, 5:15] == 0).all()  # growth adds no building
    assert grown[15, 6] == tight[15, 15] and grown[15, 54] == tight[15, 45]  # they meet
    assert (instances_from_probs(probs, min_pixels=8, extent_threshold=0.6,
                                 merge_boundary=None)[1] == tight).all()


def test_unseeded_mask_and_small_instances():
    probs = np.zeros((3, 30, 30), np.float32)
    probs[0] = 1.0
    # a boundary-only blob (no interior seed) of 16 px, and a 4 px blob
    probs[:, 2:6, 2:6] = np.array([0.2, 0.2, 0.6])[:, None, None]
    probs[:, 20:22, 20:22] = np.array([0.1, 0.8, 0.1])[:, None, None]
    _, labels = instances_from_probs(probs, min_pixels=8)
    assert labels.max() == 1 and (labels[2:6, 2:6] == 1).all() and labels[20, 20] == 0
    _, labels = instances_from_probs(probs, min_pixels=1)
    assert labels.max() == 2
    _, labels = instances_from_probs(np.stack([np.ones((5, 5)), *np.zeros((2, 5, 5))]))
    assert labels.max() == 0


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"format": FORMAT, "meta": {"v": torch.__version__}}, path)
    with pytest.raises(CheckpointError, match="TorchVersion, which cannot be loaded safely"):
        load_building_model(path)


def test_meta_is_stored_as_plain_json(tmp_path):
    path = save_building_model(_model(), tmp_path / "m.pt", {"torch": torch.__version__})
    assert load_building_model(path)[1] == {"torch": str(torch.__version__)}
