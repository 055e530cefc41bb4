"""Dense detector logic (calibration, components, SAM hand-off, stages, caching) with
small deterministic stand-ins for the image and text towers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from viper_rs.agent import Agent
from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, UnknownConceptError
from viper_rs.core.geo import GeoImage
from viper_rs.vision.calibration import Calibration
from viper_rs.vision.dense import DenseDetector, component_points

D = 32
PATCH = 8


def _vec(text: str) -> np.ndarray:
    seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
    v = np.random.default_rng(seed).normal(size=D).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeText:
    """Deterministic unit vector per string; counts encoder work."""

    def __init__(self):
        self.computed = 0
        self.last_stats = {}

    def encode(self, texts):
        self.computed += len(texts)
        self.last_stats = {"ms": 0.0, "computed": len(texts)}
        return np.stack([_vec(t) for t in texts])


class Grid:
    """PatchGrid stand-in: square patches of PATCH pixels, nearest upsampling."""

    def __init__(self, features, shape):
        self.features = features
        self.image_shape = shape

    def upsample(self, g):
        up = np.kron(g, np.ones((PATCH, PATCH), dtype=np.float32))
        return up[: self.image_shape[0], : self.image_shape[1]]

    def patch_centres(self):
        r, c = np.mgrid[0 : self.features.shape[0], 0 : self.features.shape[1]]
        return np.stack([r * PATCH + PATCH / 2 - 0.5, c * PATCH + PATCH / 2 - 0.5], axis=-1)


def concept(cal: Calibration, phrase: str) -> np.ndarray:
    v = np.mean([_vec(p) for p in cal.prompts(phrase)], axis=0)
    return v / np.linalg.norm(v)


class FakeEmbedder:
    """Patches inside the given blocks look like 'water'; the rest like 'a road'."""

    def __init__(self, cal: Calibration, blocks, rows=8, cols=8, target="water"):
        self.cal, self.blocks, self.rows, self.cols = cal, blocks, rows, cols
        self.target = target
        self.calls = 0
        self.last_stats = {}

    def embed(self, image):
        self.calls += 1
        f = np.tile(concept(self.cal, "a road"), (self.rows, self.cols, 1))
        for r0, r1, c0, c1 in self.blocks:
            f[r0:r1, c0:c1] = concept(self.cal, self.target)
        self.last_stats = {"ms": 1.0, "windows": 1, "cached": self.calls > 1}
        return Grid(f, image.shape)


class FakeSam:
    """Refinement stand-in: shrinks each component by its border ring; records prompts."""

    def __init__(self):
        self.embeddings = 0
        self.points = None

    def set_image(self, image):
        self.embeddings += 1
        return {"ms": 1.0, "cached": self.embeddings > 1}

    def refine(self, image, labels, points, scores=None):
        from scipy.ndimage import binary_erosion

        self.points = points
        out = np.zeros_like(labels)
        for lab in points:
            out[binary_erosion(labels == lab)] = lab
        return out, {"ms": 1.0, "regions": len(points), "refined": len(points), "kept": 0}


@pytest.fixture
def image():
    data = np.full((3, 64, 64), 100, dtype=np.uint8)
    return GeoImage.from_array(data, gsd=1.0)


@pytest.fixture
def cal():
    return Calibration.load()


def test_builtin_calibration_is_valid_and_drops_same_concept_negatives(cal):
    assert cal.templates and cal.negatives and 0 < cal.default_threshold < 1
    negs = cal.negatives_for("water")
    assert "water" not in negs and "a road" in negs
    assert "trees" not in cal.negatives_for("forest")  # same canonical class (tree)
    assert "a building" not in cal.negatives_for("buildings")
    assert len(cal.negatives_for("tennis court")) == len(cal.negatives)


def test_calibration_thresholds_by_phrase_class_and_default(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"negatives": ["a road"], "default_threshold": 0.4,
                                "thresholds": {"water": 0.7, "swimming pool": 0.9}}))
    c = Calibration.load(path)
    assert c.threshold("swimming pools") == 0.9
    assert c.threshold("lake") == 0.7  # canonical class water
    assert c.threshold("tennis court") == 0.4
    assert c.source == str(path)


@pytest.mark.parametrize("content, msg", [
    ("{", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"templates": ["no placeholder"]}', "template"),
    ('{"default_threshold": 2}', "probability"),
    ('{"logit_scale": -1}', "positive"),
])
def test_bad_calibration_files_are_config_errors(tmp_path, content, msg):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=msg):
        Calibration.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        Calibration.load(tmp_path / "missing.json")


def test_probabilities_are_softmax_of_scaled_cosines(cal):
    sims = np.array([[0.3, 0.2, 0.2], [0.2, 0.3, 0.2]])
    p = cal.probabilities(sims)
    e = np.exp(cal.logit_scale * sims)
    np.testing.assert_allclose(p, e[:, 0] / e.sum(1), rtol=1e-5)
    assert p[0] > 0.5 > p[1]


def test_detector_finds_the_patches_that_match_the_query(image, cal):
    det = DenseDetector("graft", FakeEmbedder(cal, [(1, 3, 1, 3), (5, 7, 4, 8)]), FakeText(),
                        Settings(min_region_m2=1), cal)
    regions, stages = det.find_with_stages(image, "water")
    assert len(regions) == 2
    assert sorted(r.area_m2 for r in regions) == [256.0, 512.0]  # 2x2 and 2x4 patches of 8 m
    assert all(r.detector == "graft" and r.label == "water" for r in regions)
    assert [s["stage"] for s in stages] == ["image_tower", "text", "score", "components",
                                            "regions", "total"]
    smap = det.score_map(image, "water")
    assert smap.scores.shape == image.shape and smap.threshold == cal.threshold("water")
    assert smap.scores[10, 10] > 0.99 and smap.scores[40, 10] < 0.01
    assert det.find(image, "tennis court") == []


def test_results_are_cached_per_image_and_query(image, cal):
    emb, text = FakeEmbedder(cal, [(1, 3, 1, 3)]), FakeText()
    det = DenseDetector("clip", emb, text, Settings(), cal)
    det.find(image, "water")
    n_text = text.computed
    regions, stages = det.find_with_stages(image, "Water")
    assert len(regions) == 1 and emb.calls == 1 and text.computed == n_text
    assert stages[0] == {"stage": "detection", "cached": True}
    other = GeoImage.from_array(np.full((3, 64, 64), 90, dtype=np.uint8), gsd=1.0)
    det.find(other, "water")
    assert emb.calls == 2


def test_min_area_drops_small_components(image, cal):
    det = DenseDetector("graft", FakeEmbedder(cal, [(1, 2, 1, 2), (4, 7, 4, 7)]), FakeText(),
                        Settings(min_region_m2=100), cal)
    regions = det.find(image, "water")
    assert [r.area_m2 for r in regions] == [576.0]


def test_threshold_setting_overrides_calibration(image, cal):
    det = DenseDetector("graft", FakeEmbedder(cal, []), FakeText(),
                        Settings(score_threshold=0.0, min_region_m2=1), cal)
    assert len(det.find(image, "water")) == 1  # everything passes: one image-wide region
    assert det.score_map(image, "water").threshold == 0.0


def test_empty_query_is_unknown_concept(image, cal):
    det = DenseDetector("graft", FakeEmbedder(cal, []), FakeText(), Settings(), cal)
    with pytest.raises(UnknownConceptError):
        det.find(image, "  ")


def test_sam_gets_best_patch_centres_and_its_masks_become_regions(image, cal):
    sam = FakeSam()
    det = DenseDetector("graft", FakeEmbedder(cal, [(1, 4, 1, 4)]), FakeText(),
                        Settings(min_region_m2=1, sam_points=2), cal, sam=sam)
    regions, stages = det.find_with_stages(image, "water")
    assert [s["stage"] for s in stages][3:6] == ["components", "sam_embedding", "sam_refine"]
    (lab, pts), = sam.points.items()
    assert pts.shape == (2, 2)
    assert all(8 <= x < 32 and 8 <= y < 32 for x, y in pts)  # inside the component
    assert regions[0].area_m2 == 22 * 22  # eroded by one pixel on each side
    det.find(image, "lake")  # another query on the same image: SAM embedding reused
    assert sam.embeddings == 2


def test_component_points_fall_back_to_best_pixel_for_tiny_components():
    labels = np.zeros((16, 16), dtype=int)
    labels[0, 0] = 1  # holds no patch centre
    labels[4:12, 4:12] = 2
    scores = np.zeros((16, 16), dtype=np.float32)
    scores[0, 0] = 0.9
    centres = np.stack(np.meshgrid(np.arange(2) * 8 + 3.5, np.arange(2) * 8 + 3.5,
                                   indexing="ij"), axis=-1)
    patch = np.array([[0.1, 0.2], [0.3, 0.9]])
    pts = component_points(labels, patch, centres, scores, k=3)
    np.testing.assert_array_equal(pts[1], [[0, 0]])
    assert pts[2].tolist()[0] == [11.0, 11.0]  # best patch first (centre 11.5 -> pixel 11)


def test_agent_trace_shows_each_stage_and_the_detector(image, cal):
    det = DenseDetector("graft", FakeEmbedder(cal, [(1, 3, 1, 3)], target="water area"),
                        FakeText(), Settings(min_region_m2=1), cal, sam=FakeSam())
    with Agent(Settings(min_region_m2=1), detector=det, planner="rules") as agent:
        a = agent.ask(image, "Is there a water area?")
        b = agent.ask(image, "How many water areas are there?")
    assert a.answer == "yes" and a.detector == "graft" and a.regions
    det_entries = [e for e in a.trace if "detections" in e]
    stages = [s["stage"] for s in det_entries[0]["detections"][0]["stages"]]
    assert stages[:3] == ["image_tower", "text", "score"] and "sam_refine" in stages
    assert b.value == 1
    cached = [e for e in b.trace if "detections" in e][0]["detections"][0]["stages"]
    assert cached[0] == {"stage": "detection", "cached": True}
