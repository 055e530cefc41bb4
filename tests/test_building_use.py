"""Issue 22: residential / commercial buildings told from their roofs, and touching
building instances merged where the model sees no wall between them."""

from __future__ import annotations

import numpy as np
import pytest

from viper_rs.core.regions import Region
from viper_rs.vision.buildings.instances import instances_from_probs, merge_wall_free
from viper_rs.vision.buildings.use import (
    COMMERCIAL_MIN_BRIGHTNESS,
    COMMERCIAL_MIN_M2,
    building_use_of,
    roof_brightness,
)
from viper_rs.vision.concepts import building_use, resolve_concept


@pytest.mark.parametrize("query, use", [
    ("commercial building", "commercial"), ("Commercial Buildings", "commercial"),
    ("small residential buildings", "residential"), ("residential building in the image", "residential"),
    ("building", None), ("house", None), ("road", None), ("no such thing", None),
])
def test_building_use_of_a_query(query, use):
    assert building_use(query) == use


def test_use_queries_still_resolve_to_buildings():
    assert resolve_concept("commercial buildings")[0] == "building"


def _region(mask: np.ndarray, area_m2: float) -> Region:
    return Region.from_mask(mask, label="building", query="building", score=1.0,
                            area_m2=area_m2)


def test_roof_rule_needs_a_big_bright_roof():
    rgb = np.full((40, 40, 3), 0.3, np.float32)  # ground
    big = np.zeros((40, 40), bool)
    big[2:20, 2:20] = True
    rgb[big] = COMMERCIAL_MIN_BRIGHTNESS + 0.1
    dark = np.zeros((40, 40), bool)
    dark[22:38, 2:18] = True
    rgb[dark] = COMMERCIAL_MIN_BRIGHTNESS - 0.2
    assert roof_brightness(rgb, _region(big, 324.0)) == pytest.approx(
        COMMERCIAL_MIN_BRIGHTNESS + 0.1)
    assert building_use_of(_region(big, 324.0), rgb) == "commercial"
    assert building_use_of(_region(dark, 256.0), rgb) == "residential"
    # a bright roof below the smallest commercial footprint is a house
    assert building_use_of(_region(big, COMMERCIAL_MIN_M2 - 1), rgb) == "residential"
    # the median ignores a rim of ground pixels the building mask took in
    rim = big.copy()
    rim[1, 1:21] = rim[1:21, 1] = True
    assert building_use_of(_region(rim, 324.0), rgb) == "commercial"


def _two_blocks(wall: float) -> np.ndarray:
    """Probabilities of two interiors side by side, touching along a column whose
    p_boundary is ``wall``."""
    p = np.zeros((3, 20, 30), np.float32)
    p[0] = 1.0
    p[:, 4:16, 3:27] = [[[0.0]], [[1.0]], [[0.0]]]
    p[:, 4:16, 15] = [[0.0], [1.0 - wall], [wall]]
    # a sag in interior probability between the two halves, as on a ridge
    p[:, 4:16, 14:17] = [[[0.35]], [[0.55]], [[0.1]]] if wall < 0.5 else p[:, 4:16, 14:17]
    return p


def test_roof_without_a_wall_is_one_building():
    _, labels = instances_from_probs(_two_blocks(wall=0.05), min_pixels=4, merge_boundary=0.12)
    assert labels.max() == 1
    _, split = instances_from_probs(_two_blocks(wall=0.05), min_pixels=4, merge_boundary=None)
    assert split.max() == 2  # without the merge the sag splits the roof


def test_buildings_with_a_wall_stay_apart():
    labels = np.zeros((10, 10), np.int32)
    labels[2:8, 1:5] = 1
    labels[2:8, 5:9] = 2
    wall = np.zeros((10, 10), np.float32)
    wall[2:8, 4:6] = 0.6
    assert merge_wall_free(labels, wall, 0.12).max() == 2
    wall[2:8, 4:6] = 0.05
    merged = merge_wall_free(labels, wall, 0.12)
    assert merged.max() == 1 and (merged[labels > 0] == 1).all() and (merged[labels == 0] == 0).all()
    # a corner touch is not a contact
    corner = np.zeros((10, 10), np.int32)
    corner[0:3, 0:3] = 1
    corner[3:6, 3:6] = 2
    assert merge_wall_free(corner, np.zeros((10, 10), np.float32), 0.12).max() == 2
