"""BuildingDetector (issue 17 part B): the learned building model as a Detector.

A stand-in BuildingNet (``BrightNet``: tiny widths, a forward pass that calls bright pixels
building interior) makes the answers predictable, so the tests check the detector's own
work: band selection, scaling, resampling to the model's scale and back, coverage, caching.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from affine import Affine

from viper_rs.core.config import Settings
from viper_rs.core.detector import Detector
from viper_rs.core.errors import UnknownConceptError
from viper_rs.core.geo import GeoImage
from viper_rs.vision.build import CheckpointError
from viper_rs.vision.buildings.checkpoint import save_building_model
from viper_rs.vision.buildings.detector import (
    BuildingDetector,
    axis_gsd,
    is_building_query,
    nearest_index,
)
from viper_rs.vision.buildings.model import BuildingNet, BuildingNetConfig

#: Tiny widths: a stride-2 U-Net, milliseconds per image.
TINY = BuildingNetConfig(widths=(4, 8))


class BrightNet(BuildingNet):
    """BuildingNet whose logits say "interior" where the normalised pixel is bright
    (roofs painted near white), "background" elsewhere; counts its forward passes."""

    def __init__(self, config: BuildingNetConfig = TINY) -> None:
        super().__init__(config)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s = x.mean(dim=1, keepdim=True) - 1.5  # white (1.0) -> about +3, dark -> negative
        return torch.cat([-4 * s, 4 * s, torch.full_like(s, -2.0)], dim=1)


#: Roofs as (row, col, height, width) in metres on a 30 x 30 m scene.
ROOFS_M = [(3.0, 3.0, 6.0, 6.0), (15.0, 12.0, 9.0, 12.0)]
SCENE_M = 30.0


def scene(gsd: float | tuple[float, float] = 0.3, nir: bool = False, dtype: str = "uint8",
          **kw) -> GeoImage:
    """Dark green ground with two white roofs (ROOFS_M) at ``gsd`` m/px (row, col)."""
    gy, gx = (gsd, gsd) if isinstance(gsd, float) else gsd
    h, w = round(SCENE_M / gy), round(SCENE_M / gx)
    img = np.zeros((4, h, w), dtype=np.float64)
    img[:] = np.array([60, 90, 50, 180])[:, None, None]
    for r, c, hh, ww in ROOFS_M:
        img[:3, round(r / gy):round((r + hh) / gy), round(c / gx):round((c + ww) / gx)] = 250
    if dtype == "uint16":
        img = img * 16  # 12-bit data in a 16-bit file
    data = img.astype(dtype)
    if not nir:
        data = data[:3]
    bands = "R,G,B,NIR" if nir else "R,G,B"
    if gy == gx:
        return GeoImage.from_array(data, bands, gsd=gy, **kw)
    return GeoImage.from_array(data, bands, crs="EPSG:32610",
                               transform=Affine(gx, 0, 500000, 0, -gy, 4200000), **kw)


@pytest.fixture
def det() -> BuildingDetector:
    return BuildingDetector(Settings(), model=BrightNet())


def areas(regions) -> list[float]:
    return sorted(round(r.area_m2, 1) for r in regions)


def test_it_is_a_detector_for_building_concepts_only(det):
    assert isinstance(det, Detector) and det.name == "buildingnet"
    for q in ("building", "houses", "roofs", "residential buildings", "commercial building",
              "small houses"):
        assert is_building_query(q), q
    for q in ("water", "trees", "road", "parking lot", "residential area", "solar panel"):
        assert not is_building_query(q), q
    with pytest.raises(UnknownConceptError, match="only finds buildings"):
        det.find(scene(), "water")


def test_finds_each_roof_at_the_model_scale(det):
    regions = det.find(scene(0.3), "houses")
    assert areas(regions) == [36.0, 108.0]
    assert {r.detector for r in regions} == {"buildingnet"}
    assert {r.label for r in regions} == {"building"} and {r.query for r in regions} == {"houses"}
    assert all(r.polygon is not None for r in regions)
    notes = det.notes(scene(0.3), "commercial buildings")
    assert any("commercial buildings told from their roofs" in n for n in notes), notes
    assert not any("cannot tell building use" in n for n in notes)
    # both roofs are below the smallest commercial footprint: houses
    assert det.find(scene(0.3), "commercial buildings") == []
    assert areas(det.find(scene(0.3), "residential buildings")) == [36.0, 108.0]
    assert any("learned building model" in n for n in notes)


def test_finer_imagery_is_resampled_and_answers_come_back_on_its_grid(det):
    img = scene(0.15)
    smap = det.score_map(img, "building")
    assert smap.scores.shape == img.shape == (200, 200)
    assert smap.instances is not None and smap.instances.shape == img.shape
    assert det.result(img).stats["model_px"] == [100, 100]
    assert areas(det.find(img, "building")) == pytest.approx([36.0, 108.0], abs=3)
    # Labels are nearest-resampled: only whole instance ids, no blends between them.
    assert set(np.unique(smap.instances)) == {0, 1, 2}
    assert any("0.3 m/px scale" in n for n in smap.notes)


def test_coarser_and_anisotropic_imagery(det):
    assert areas(det.find(scene(0.6), "building")) == pytest.approx([36.0, 108.0], abs=6)
    aniso = scene((0.3, 0.15))  # rows 0.3 m, columns 0.15 m (a projected CRS)
    gy, gx = axis_gsd(aniso)
    assert (gy, gx) == pytest.approx((0.3, 0.15), rel=1e-3)
    assert det.result(aniso).stats["model_px"] == [100, 100]
    assert areas(det.find(aniso, "building")) == pytest.approx([36.0, 108.0], abs=3)


def test_nearest_index_maps_centres():
    assert nearest_index(4, 2).tolist() == [0, 0, 1, 1]
    assert nearest_index(2, 4).tolist() == [1, 3]


def test_nir_is_ignored_and_16_bit_data_is_stretched(det):
    rgb = det.find(scene(0.3), "building")
    rgbn = det.find(scene(0.3, nir=True), "building")
    assert [r.crop.tolist() for r in rgbn] == [r.crop.tolist() for r in rgb]
    assert any("NIR band is ignored" in n for n in det.notes(scene(0.3, nir=True), "building"))
    deep = scene(0.3, dtype="uint16")
    assert areas(det.find(deep, "building")) == areas(rgb)
    assert any("stretched" in n for n in det.notes(deep, "building"))


def test_coverage_says_why_not(det):
    assert det.covers(scene(0.3)) is None and det.covers(scene(1.2)) is None
    assert "2 m/px, outside" in det.covers(scene(2.0))
    assert "0.05 m/px, outside" in det.covers(scene(0.05))
    gray = GeoImage.from_array(np.full((1, 20, 20), 100, np.uint8), "GRAY", gsd=0.3)
    assert "single-band" in det.covers(gray)
    nogsd = GeoImage.from_array(np.full((3, 20, 20), 100, np.uint8), "R,G,B")
    assert "no ground resolution" in det.covers(nogsd)
    with pytest.raises(UnknownConceptError, match="cannot answer this image"):
        det.find(scene(2.0), "building")


def test_work_is_cached_per_image(det):
    img = scene(0.3)
    stats = det.prepare(img, ["houses"])
    assert stats["cached"] is False and stats["model_px"] == [100, 100]
    calls = det.load().calls
    a, stages = det.find_with_stages(img, "building")
    b = det.find(scene(0.3), "roofs")  # same pixels, another object: the cache key is content
    det.score_map(img, "house")
    assert det.load().calls == calls and det.computations == 1
    assert stages[0] == {"stage": "building_model", "cached": True}
    assert [r.area_m2 for r in a] == [r.area_m2 for r in b]
    assert det.prepare(img, ["water"])["skipped"] is True
    det.find(scene(0.15), "building")
    assert det.computations == 2


def test_regions_respect_nodata_and_roi(det):
    roi = np.zeros((100, 100), bool)
    roi[:, :50] = True  # the left 15 m: the small roof and 3 m of the large one
    assert areas(det.find(scene(0.3, roi=roi), "building")) == [27.0, 36.0]
    valid = np.ones((100, 100), bool)
    valid[:, 50:] = False  # nodata on the right
    img = scene(0.3, valid=valid)
    assert areas(det.find(img, "building")) == [27.0, 36.0]
    assert (det.score_map(img, "building").scores[~valid] == 0).all()


def test_pickles_without_its_cache(det):
    img = scene(0.3)
    det.find(img, "building")
    clone = pickle.loads(pickle.dumps(det))
    assert clone.computations == 1 and clone._cache.keys() == []
    assert areas(clone.find(img, "building")) == [36.0, 108.0]


def test_weights_are_loaded_once_and_bad_files_are_clear_errors(tmp_path):
    path = save_building_model(BuildingNet(TINY), tmp_path / "tiny.pt", {"note": "test"})
    det = BuildingDetector(weights=path)
    assert det.load() is det.load() and det.meta == {"note": "test"}
    assert det.config.widths == (4, 8)
    assert isinstance(det.find(scene(0.3), "building"), list)
    with pytest.raises(CheckpointError, match="nope.pt: no such file"):
        BuildingDetector(weights=tmp_path / "nope.pt").load()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated|readable"):
        BuildingDetector(weights=cut).load()
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="not a BuildingNet"):
        BuildingDetector(weights=other).load()


def test_a_fixed_stretch_replaces_the_per_image_one():
    deep = scene(0.3, dtype="uint16")  # roofs at 4000
    fixed = BuildingDetector(model=BrightNet(), stretch=16000.0)  # a region 4x brighter
    assert fixed.find(deep, "building") == []  # the roofs are dim at that scale
    assert any("16000" in n for n in fixed.notes(deep, "building"))
    assert fixed.find(scene(0.3), "building") != []  # 8-bit data is never stretched


def test_too_large_at_the_model_scale_falls_back(det, monkeypatch):
    import viper_rs.vision.buildings.detector as mod

    monkeypatch.setattr(mod, "MAX_MODEL_PIXELS", 100 * 100 - 1)
    assert "Mpx it runs on in one piece" in det.covers(scene(0.3))
