"""``--detector auto`` with the learned building model (issue 17 part B): building concepts
by BuildingNet where it covers the image, everything else (and buildings elsewhere) by the
primary detector; the choice and every fallback are said in notes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.conftest import StaticDetector
from tests.test_buildings_detector import TINY, BrightNet, areas, scene
from viper_rs.core import weights as W
from viper_rs.core.config import Settings
from viper_rs.core.detector import Detector
from viper_rs.core.errors import ImageError, NoGroundSize
from viper_rs.core.geo import GeoImage
from viper_rs.vision import factory
from viper_rs.vision.build import CheckpointError
from viper_rs.vision.buildings.checkpoint import DEFAULT_WEIGHTS, save_building_model
from viper_rs.vision.buildings.detector import BuildingDetector
from viper_rs.vision.buildings.model import BuildingNet
from viper_rs.vision.routed import RoutedDetector
from viper_rs.vision.spectral import SpectralDetector

#: The real shipped-weights path (the autouse fixture points weights at a temporary one).
SHIPPED = W.SHIPPED_BUILDING_WEIGHTS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No VIPER_RS_* variables, and no shipped building weights unless a test puts them."""
    for key in list(os.environ):
        if key.startswith("VIPER_RS_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(W, "SHIPPED_BUILDING_WEIGHTS", tmp_path / "shipped" / "buildingnet.pt")


@pytest.fixture
def routed() -> RoutedDetector:
    return RoutedDetector(SpectralDetector(), BuildingDetector(model=BrightNet()))


def four_band_scene(gsd: float) -> GeoImage:
    """Roofs plus a pond and a vegetated strip, R,G,B,NIR."""
    img = scene(gsd, nir=True)
    data = img.data.copy()
    h, w = img.shape
    data[:, h * 2 // 3:, : w // 4] = np.array([20, 40, 50, 10])[:, None, None]  # water
    data[:, : h // 3, w * 3 // 4:] = np.array([50, 110, 40, 220])[:, None, None]  # trees
    return GeoImage.from_array(data, "R,G,B,NIR", gsd=gsd)


def same_regions(a, b) -> bool:
    return [(r.origin, r.crop.tolist(), r.area_m2, r.detector, r.label) for r in a] == \
        [(r.origin, r.crop.tolist(), r.area_m2, r.detector, r.label) for r in b]


# --- routing ----------------------------------------------------------------------------


def test_building_concepts_go_to_the_model_the_rest_to_spectral(routed):
    assert isinstance(routed, Detector) and routed.name == "buildingnet+spectral"
    img = four_band_scene(0.3)
    for q in ("building", "houses", "roof", "residential buildings", "commercial building"):
        regions = routed.find(img, q)
        # both roofs are below the smallest commercial footprint (told from the roof)
        assert areas(regions) == ([] if "commercial" in q else [36.0, 108.0]), q
        assert {r.detector for r in regions} <= {"buildingnet"}
    spectral = SpectralDetector()
    for q in ("water", "trees", "road", "grass"):
        assert same_regions(routed.find(img, q), spectral.find(img, q)), q
        assert routed.notes(img, q) == spectral.notes(img, q)
        regions, stages = routed.find_with_stages(img, q)
        assert stages == [] and all(r.detector == "spectral" for r in regions)
    assert routed.score_map(img, "houses").detector == "buildingnet"
    assert routed.score_map(img, "water").detector == "spectral"


@pytest.mark.parametrize("gsd, why", [(2.0, "2 m/px, outside"), (0.05, "0.05 m/px, outside")])
def test_out_of_range_resolution_falls_back_to_spectral_with_a_note(routed, gsd, why):
    img = GeoImage.from_array(scene(gsd).data[:, :200, :200], "R,G,B", gsd=gsd)
    regions = routed.find(img, "houses")
    assert all(r.detector == "spectral" for r in regions)
    assert same_regions(regions, SpectralDetector().find(img, "houses"))
    notes = routed.notes(img, "houses")
    assert notes[0].startswith("buildings answered by the spectral detector") and why in notes[0]
    assert notes[0] in routed.score_map(img, "houses").notes
    assert routed.buildings.computations == 0


def test_single_band_image_falls_back_with_a_note(routed):
    gray = GeoImage.from_array(scene(0.3).data[:1], "GRAY", gsd=0.3)
    # The spectral fallback refuses a single band too: its error also says why the model
    # did not answer, and nothing crashes.
    with pytest.raises(ImageError) as err:
        routed.find(gray, "buildings")
    msg = str(err.value)
    assert "the spectral detector needs red, green and blue bands" in msg
    assert "single-band image; the building model needs R, G, B" in msg
    with pytest.raises(ImageError, match="spectral detector needs"):
        routed.find(gray, "water")  # not a building query: the spectral error as before


def test_building_query_without_ground_size_is_refused_with_the_way_out(routed):
    # Issue 23: neither the building model nor the spectral shape rules (in metres) can
    # count buildings on pixels of unknown size: a refusal naming --gsd, never a count at
    # an assumed 1 m; queries told pixel by pixel still answer (in pixels).
    no_gsd = GeoImage.from_array(scene(0.3).data, "R,G,B")
    for call in (routed.find, routed.notes, routed.score_map):
        with pytest.raises(NoGroundSize, match=r"<array> has no ground size; pass --gsd M"):
            call(no_gsd, "building")
    assert routed.buildings.computations == 0
    assert all(r.detector == "spectral" for r in routed.find(no_gsd, "vegetation"))


def test_nir_is_ignored_by_the_building_model(routed):
    rgb, rgbn = scene(0.3), scene(0.3, nir=True)
    assert same_regions(routed.find(rgbn, "building"), routed.find(rgb, "building"))


class Spy:
    """Wraps a detector and records prepare() calls."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, inner.name, []

    def prepare(self, image, queries=()):
        self.calls.append(list(queries))
        return self.inner.prepare(image, queries)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_prepare_prepares_each_detector_for_its_queries():
    spectral, buildings = Spy(SpectralDetector()), BuildingDetector(model=BrightNet())
    det = RoutedDetector(spectral, buildings)
    img = scene(0.3)
    stats = det.prepare(img, ["houses", "water"])
    assert spectral.calls == [["water"]] and buildings.computations == 1
    assert stats["buildingnet"]["model_px"] == [100, 100] and "spectral" in stats
    det.prepare(img, ["building"])  # only buildings: spectral is not needed
    assert spectral.calls == [["water"]]
    det.prepare(scene(2.0), ["building"])  # out of range: spectral answers it
    assert spectral.calls[-1] == ["building"] and buildings.computations == 1
    det.prepare(img)  # queries unknown: the primary is prepared as before
    assert spectral.calls[-1] == []


# --- the auto choice ------------------------------------------------------------------


def tiny_weights(path) -> None:
    torch.manual_seed(0)
    save_building_model(BuildingNet(TINY), path, {"note": "test"})


def settings(tmp_path, **kw) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", **kw)


def test_the_shipped_weights_path_is_the_loaders_default():
    assert SHIPPED == DEFAULT_WEIGHTS.resolve()


def test_auto_without_any_weights_is_spectral_and_says_why(tmp_path):
    det = factory.build_detector("auto", settings(tmp_path))
    assert isinstance(det, SpectralDetector)
    assert "auto -> spectral: no CLIP weights" in det.choice_note
    assert "buildings by spectral too: the shipped building model weights" in det.choice_note
    assert "are missing" in det.choice_note


def test_auto_with_building_weights_routes_buildings(tmp_path):
    tiny_weights(W.SHIPPED_BUILDING_WEIGHTS)
    det = factory.build_detector("auto", settings(tmp_path))
    assert isinstance(det, RoutedDetector) and det.name == "buildingnet+spectral"
    assert isinstance(det.primary, SpectralDetector)
    assert det.buildings.config.widths == (4, 8)  # loaded when built
    assert det.choice_note.startswith(
        "detector auto -> spectral, buildings by the learned building model")
    assert "no CLIP weights" in det.choice_note
    regions = det.find(scene(0.3), "houses")
    assert all(r.detector == "buildingnet" for r in regions)
    # Named detectors answer everything themselves.
    assert isinstance(factory.build_detector("spectral", settings(tmp_path)), SpectralDetector)
    # ... and the model can be turned off.
    off = factory.build_detector("auto", settings(tmp_path, building_model=False))
    assert isinstance(off, SpectralDetector) and "turned off" in off.choice_note


def test_configured_building_weights_win(tmp_path):
    mine = tmp_path / "mine.pt"
    tiny_weights(mine)
    det = factory.build_detector("auto", settings(tmp_path, building_checkpoint=mine))
    assert isinstance(det, RoutedDetector) and det.buildings.weights == mine


def test_broken_shipped_weights_fall_back_with_the_reason(tmp_path):
    shipped = W.SHIPPED_BUILDING_WEIGHTS
    tiny_weights(shipped)
    shipped.write_bytes(shipped.read_bytes()[:300])  # truncated
    det = factory.build_detector("auto", settings(tmp_path))
    assert isinstance(det, SpectralDetector)
    assert "buildings by spectral too: the shipped building model weights do not load" \
        in det.choice_note
    assert str(shipped) in det.choice_note


def test_broken_configured_weights_are_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(CheckpointError, match="not a BuildingNet checkpoint"):
        factory.build_detector("auto", settings(tmp_path, building_checkpoint=bad))
    with pytest.raises(CheckpointError, match="no such file"):
        factory.build_detector("auto", settings(tmp_path, building_checkpoint=tmp_path / "x"))


def test_with_graft_weights_auto_still_prefers_the_model_for_buildings(tmp_path, monkeypatch):
    clip, graft = tmp_path / "clip.pt", tmp_path / "graft.ckpt"
    clip.write_bytes(b"c")
    graft.write_bytes(b"g")
    tiny_weights(W.SHIPPED_BUILDING_WEIGHTS)
    fake = StaticDetector({"building": np.ones((100, 100), bool),
                           "water": np.zeros((100, 100), bool)})
    fake.name = "graft"
    monkeypatch.setattr(factory, "build_dense_detector", lambda name, s: fake)
    s = settings(tmp_path, clip_checkpoint=clip, graft_checkpoint=graft)
    det = factory.build_detector("auto", s)
    assert isinstance(det, RoutedDetector) and det.name == "buildingnet+graft"
    assert det.primary is fake
    assert det.choice_note.startswith("detector auto -> graft, buildings by the learned")
    assert "graft elsewhere" in det.choice_note
    det.buildings._model = BrightNet()  # predictable answers
    assert {r.detector for r in det.find(scene(0.3), "building")} == {"buildingnet"}
    far = GeoImage.from_array(np.full((3, 100, 100), 90, np.uint8), "R,G,B", gsd=2.0)
    assert {r.detector for r in det.find(far, "building")} == {"graft"}
    assert "buildings answered by the graft detector" in det.notes(far, "building")[0]
    # --detector graft forces GRAFT for everything.
    assert factory.build_detector("graft", s) is fake


def test_auto_reason_without_a_detector_build(tmp_path):
    assert "buildings by spectral too" in W.auto_reason(settings(tmp_path))
    tiny_weights(W.SHIPPED_BUILDING_WEIGHTS)
    reason = W.auto_reason(settings(tmp_path))
    assert reason.startswith("auto -> spectral, buildings by the learned building model")
    assert W.auto_detector(settings(tmp_path)) == "spectral"  # unchanged for other callers
