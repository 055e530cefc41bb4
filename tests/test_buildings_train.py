"""BuildingNet training on the real labelled tiles (tiny runs), targets and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from viper_rs.cli import main
from viper_rs.core.errors import InputError
from viper_rs.vision.buildings.data import (
    classes_from_ids,
    degrade,
    load_labeled_tiles,
    place_of,
    sample_batch,
    to_model_scale,
)
from viper_rs.vision.buildings.model import BACKGROUND, BOUNDARY, INTERIOR


@pytest.fixture
def labeled(shared_data: Path) -> Path:
    root = shared_data / "labeled"
    if not (root / "oam_osm_buildings").is_dir():
        pytest.skip(f"labelled tiles {root / 'oam_osm_buildings'} are absent")
    return root


def _tiny(labeled: Path, out: Path | None, seed: int = 0):
    from viper_rs.vision.buildings.train import TrainConfig

    return TrainConfig(data=labeled, out=out, steps=3, batch=2, crop_px=64, seed=seed,
                       places=("kampala_ug", "zanzibar_tz"), limit_tiles=2,
                       widths=(8, 16, 16), threads=1)


def test_place_of():
    assert place_of("zanzibar_tz_319813_272011") == "zanzibar_tz"
    assert place_of("catanduanes_ph_443117_241595") == "catanduanes_ph"
    assert place_of("atlanta_nw") == "atlanta"


def test_classes_separate_touching_footprints():
    ids = np.zeros((20, 30), np.int32)
    ids[5:15, 5:15] = 1
    ids[5:15, 15:25] = 2
    c = classes_from_ids(ids, ring_px=2)
    assert c[0, 0] == BACKGROUND and c[10, 10] == INTERIOR and c[10, 20] == INTERIOR
    assert (c[5:15, 13:17] == BOUNDARY).all()  # the shared wall, 2 px on each side
    assert (c[5:15, 5:7] == BOUNDARY).all() and c[10, 8] == INTERIOR


def test_degrade_blurs_but_keeps_shape():
    x = torch.zeros(3, 64, 64)
    x[:, ::2] = 1.0  # 1-pixel stripes vanish at 1.0 m
    y = degrade(x, 0.3, 1.0)
    assert y.shape == x.shape and float(y.std()) < 0.1 * float(x.std())
    assert degrade(x, 0.3, 0.3) is x


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_labeled_tiles(tmp_path / "missing")
    with pytest.raises(InputError, match="no labelled tiles"):
        load_labeled_tiles(tmp_path)
    assert main(["train-buildings", "--data", str(tmp_path)]) == 2


def test_tiles_and_targets(labeled):
    tiles = load_labeled_tiles(labeled, places=["kampala_ug"], limit=1)
    assert len(tiles) == 1 and tiles[0].place == "kampala_ug"
    t = tiles[0]
    assert t.image.shape == (512, 512, 3) and t.image.dtype == np.uint8 and t.footprints
    ms = to_model_scale(t, 0.3)
    h = round(512 * t.gsd_m / 0.3)
    assert ms.image.shape == (3, h, h) and ms.target.shape == (h, h)
    # building pixels at 0.3 m agree with the truth area within a few percent
    area = float((ms.target > 0).sum()) * ms.pixel_area_m2
    assert area == pytest.approx(t.truth["building_area_m2"], rel=0.05)
    assert set(np.unique(ms.target.numpy())) == {BACKGROUND, INTERIOR, BOUNDARY}
    x, y = sample_batch([ms], np.random.default_rng(0), 3, 64)
    assert x.shape == (3, 3, 64, 64) and y.shape == (3, 64, 64)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(InputError, match="no labelled tiles match"):
        load_labeled_tiles(labeled, places=["atlanta"], rgb_only=True)
    pan = load_labeled_tiles(labeled, places=["atlanta"], rgb_only=False, limit=1)
    assert pan[0].image.shape[2] == 3 and pan[0].image.dtype == np.uint8


def test_train_end_to_end_writes_loadable_weights(labeled, tmp_path):
    from viper_rs.vision.buildings.checkpoint import load_building_model
    from viper_rs.vision.buildings.instances import instances_from_probs, predict_probs
    from viper_rs.vision.buildings.train import train_buildings

    out = tmp_path / "w" / "bn.pt"
    model, report = train_buildings(_tiny(labeled, out), progress=False)
    assert report["steps"] == 3 and report["train_tiles"] == 2
    assert set(report["train_places"]) == {"kampala_ug", "zanzibar_tz"}
    assert out.is_file() and (out.parent / "MODEL_CARD.md").is_file()
    card = (out.parent / "MODEL_CARD.md").read_text()
    assert "OpenAerialMap contributors, CC BY 4.0" in card and "ODbL 1.0" in card
    assert "## Evaluation (leave-one-place-out)" in card
    loaded, meta = load_building_model(out)
    assert meta["settings"]["seed"] == 0 and meta["train_tiles"] == 2
    assert loaded.config.widths == (8, 16, 16)
    probs = predict_probs(loaded, np.full((50, 70, 3), 0.5, np.float32))
    assert probs.shape == (3, 50, 70)
    score, labels = instances_from_probs(probs)
    assert score.shape == labels.shape == (50, 70)


def test_same_seed_same_weights(labeled):
    from viper_rs.vision.buildings.train import train_buildings

    a, _ = train_buildings(_tiny(labeled, None, seed=5), progress=False)
    b, _ = train_buildings(_tiny(labeled, None, seed=5), progress=False)
    c, _ = train_buildings(_tiny(labeled, None, seed=6), progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_cli_trains(labeled, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    rc = main(["train-buildings", "--data", str(labeled / "oam_osm_buildings"), "--out",
               str(out), "--steps", "1", "--batch", "1", "--crop-px", "32",
               "--limit-tiles", "1", "--place", "kavre_np", "--threads", "1", "--quiet"])
    assert rc == 0 and out.is_file()
    assert "trained 1 steps on 1 tiles" in capsys.readouterr().out
