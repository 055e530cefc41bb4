"""Region of interest: pixels outside it are context the model sees but answers never count."""

from __future__ import annotations

import numpy as np
import pytest
from viper_rs.tools import ToolContext, use_context
from viper_rs.tools.core import area, count, exists, find

from tests.conftest import StaticDetector
from tests.test_dense import FakeEmbedder, FakeText
from viper_rs.core.config import Settings
from viper_rs.core.errors import ImageError
from viper_rs.core.geo import GeoImage
from viper_rs.vision.base import ScoreMap
from viper_rs.vision.calibration import Calibration
from viper_rs.vision.components import regions_from_score_map
from viper_rs.vision.dense import DenseDetector


def _roi(shape=(100, 100), r0=20, r1=80, c0=20, c1=80) -> np.ndarray:
    roi = np.zeros(shape, bool)
    roi[r0:r1, c0:c1] = True
    return roi


def _image(roi=None, n=100) -> GeoImage:
    return GeoImage.from_array(np.zeros((3, n, n), np.uint8), "R,G,B", gsd=1.0, roi=roi)


def test_answer_mask_hash_and_validation():
    plain, with_roi = _image(), _image(_roi())
    assert plain.answer_mask.all() and with_roi.answer_mask.sum() == 60 * 60
    assert plain.content_hash != with_roi.content_hash  # caches never mix the two
    assert with_roi.content_hash == _image(_roi()).content_hash
    assert with_roi.describe()["roi_fraction"] == pytest.approx(0.36)
    with pytest.raises(ImageError, match="region of interest shape"):
        _image(np.ones((10, 10), bool))
    with pytest.raises(ImageError, match="no valid pixel"):
        _image(np.zeros((100, 100), bool))


def test_components_stay_inside_the_roi():
    img = _image(_roi())
    m = np.zeros((100, 100), np.float32)
    m[10:30, 10:30] = 1  # spans the ROI's top-left corner: only 10 x 10 is inside
    m[0:10, 90:100] = 1  # wholly outside: context only
    regions = regions_from_score_map(img, ScoreMap(m, 0.5, "x", "x", "t"))
    assert len(regions) == 1 and regions[0].area_m2 == 100.0
    assert regions[0].bbox == (20, 20, 30, 30)


@pytest.fixture
def ctx():
    water = np.zeros((100, 100), bool)
    water[50:70, 70:95] = True  # 20 x 25 = 500 m2, 20 x 10 = 200 m2 inside the ROI
    building = np.zeros((100, 100), bool)
    building[2:8, 2:8] = True  # outside the ROI
    building[40:50, 40:50] = True  # inside
    det = StaticDetector({"water area": water, "building": building})
    c = ToolContext(image=_image(_roi()), detector=det, settings=Settings())
    with use_context(c):
        yield c


def test_area_of_a_concept_spanning_the_border_counts_the_inside_part(ctx):
    assert area("water area") == 200.0
    assert area(find("water area")) == 200.0


def test_objects_outside_the_roi_are_not_counted(ctx):
    assert count("building") == 1 and exists("building")
    assert [r.area_m2 for r in find("building")] == [100.0]


def test_dense_detector_components_honour_the_roi():
    cal = Calibration.load()
    roi = _roi((64, 64), 0, 64, 0, 36)  # columns 0..35 are the footprint
    img = GeoImage.from_array(np.full((3, 64, 64), 100, np.uint8), gsd=1.0, roi=roi)
    # 8 px patches: block (rows 8-23, cols 24-47) straddles the ROI edge at column 36
    det = DenseDetector("graft", FakeEmbedder(cal, [(1, 3, 3, 6), (5, 7, 6, 8)]), FakeText(),
                        Settings(min_region_m2=1), cal)
    regions = det.find(img, "water")
    assert len(regions) == 1  # the second block lies wholly in the context
    assert regions[0].area_m2 == 16 * 12  # 16 rows x columns 24..35
    assert det.score_map(img, "water").scores[50, 55] > 0.99  # scores cover the context
