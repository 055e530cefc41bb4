"""RSVQA-HR scoring rules: EPSG:3857 area convention and bucket edges."""

from __future__ import annotations

import math

import pytest

from eval.scoring import (
    AREA_BUCKETS,
    PriorBaseline,
    accuracy_table,
    area_bucket,
    canonical_gt,
    ground_to_rsvqa_area,
    lat_from_mercator_y,
    mercator_area_factor,
    to_answer_space,
)


@pytest.mark.parametrize(
    "value, bucket",
    [
        (0, "0m2"), (0.4, "0m2"), (0.6, "between 0m2 and 10m2"), (1, "between 0m2 and 10m2"),
        (10, "between 0m2 and 10m2"), (10.4, "between 0m2 and 10m2"), (11, "between 10m2 and 100m2"),
        (100, "between 10m2 and 100m2"), (101, "between 100m2 and 1000m2"),
        (1000, "between 100m2 and 1000m2"), (1001, "more than 1000m2"), (10632, "more than 1000m2"),
    ],
)
def test_bucket_edges(value, bucket):
    assert area_bucket(value) == bucket


def test_mercator_conversion_new_york():
    y = 4988008.615633183  # an RSVQA-HR tile's upper-left northing
    lat = lat_from_mercator_y(y)
    assert 40.0 < lat < 41.0
    assert mercator_area_factor(lat) == pytest.approx(1 / math.cos(math.radians(lat)) ** 2)
    assert 1.72 < mercator_area_factor(lat) < 1.76  # "about x1.74 in New York"
    # a whole 512 px tile of 0.1524 m ground pixels is ~10,600 RSVQA "m2"
    tile_ground = (512 * 0.1524) ** 2
    assert ground_to_rsvqa_area(tile_ground, lat) == pytest.approx(10632, rel=0.01)


def test_conversion_changes_bucket():
    lat = 40.7
    # 600 ground m2 is ~1044 RSVQA units: the bucket is decided after conversion
    assert area_bucket(600) == "between 100m2 and 1000m2"
    assert to_answer_space("area", 600.0, lat) == "more than 1000m2"


def test_answer_space():
    assert to_answer_space("presence", True, 40) == "yes"
    assert to_answer_space("comp", False, 40) == "no"
    assert to_answer_space("count", 3, 40) == "3"
    assert to_answer_space("count", "three", 40) is None
    assert to_answer_space("presence", None, 40) is None  # a failure is never "no"
    assert canonical_gt("area", "10632m2") == "more than 1000m2"
    assert canonical_gt("area", "0m2") == "0m2"
    assert set(AREA_BUCKETS) >= {canonical_gt("area", f"{v}m2") for v in (0, 5, 50, 500, 5000)}


def test_prior_and_accuracy():
    prior = PriorBaseline().fit([("count", "How many X?", "0"), ("count", "How many X?", "0"),
                                 ("count", "How many X?", "2"), ("presence", "Is there Y?", "no")])
    assert prior.predict("count", "how many x ?") == "0"
    assert prior.predict("presence", "Is there Z?") == "no"
    acc = accuracy_table([{"type": "count", "correct": True}, {"type": "count", "correct": False},
                          {"type": "presence", "correct": True}])
    assert acc["count"] == 0.5 and acc["presence"] == 1.0
    assert acc["average"] == 0.75 and acc["overall"] == pytest.approx(2 / 3)
