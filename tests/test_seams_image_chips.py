"""Issue 24 seams: one Image protocol for GeoImage and RegionImage, one chip grid.

Both image kinds declare every member of :class:`viper_rs.core.image.Image` (the agent, the
tools, places and the UI read images only through it, never by ``getattr`` probes); the
index and region questions cut chips with the one :class:`viper_rs.tiling.chips.Chip`
and :func:`viper_rs.tiling.chips.windows`.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from viper_rs.core.geo import GeoImage
from viper_rs.core.image import Image
from viper_rs.region.image import RegionImage
from viper_rs.tiling.chips import count_starts, starts, windows

REPO = Path(__file__).resolve().parents[1]
CODE = sorted((REPO / "viper_rs").rglob("*.py")) + sorted((REPO / "tools").rglob("*.py"))


def _members(cls: type) -> set[str]:
    """Names a class declares: attributes, properties, methods and dataclass fields."""
    names = {n for klass in cls.__mro__ for n in vars(klass)}
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return names


def _protocol_members() -> set[str]:
    return {n for n in vars(Image) if not n.startswith("_")}


def test_the_image_protocol_names_what_callers_read():
    members = _protocol_members()
    assert {"shape", "crs", "transform", "ground_sampling_distance", "window_area",
            "row_pixel_area", "content_hash", "notes", "name", "describe"} <= members


@pytest.mark.parametrize("cls", [GeoImage, RegionImage])
def test_both_image_kinds_declare_every_member_of_the_protocol(cls):
    missing = sorted(_protocol_members() - _members(cls))
    assert not missing, f"{cls.__name__} lacks {missing} of the Image protocol"


def test_a_geoimage_answers_the_protocol():
    image = GeoImage.from_array(np.zeros((3, 8, 10), np.uint8) + 50, gsd=2.0, name="x")
    assert image.shape == (8, 10) and image.notes == [] and image.area_unit == "m2"
    assert image.window_area(np.ones((2, 3), bool), 1, 1) == pytest.approx(6 * 4.0)


def _call_name(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else ""


def _names_image(node: ast.expr) -> bool:
    """``image``, ``ctx.image``, ``self.image``, ``image.grid``..."""
    text = ast.unparse(node)
    return text == "image" or text.endswith(".image") or text.startswith("image.")


def test_no_getattr_probes_on_images():
    probes = []
    for path in CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and _call_name(node) in ("getattr", "hasattr")
                    and node.args and _names_image(node.args[0])):
                probes.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not probes, f"getattr/hasattr on an image (declare it in core.image.Image): {probes}"


def test_there_is_one_chip_class():
    found = []
    for path in sorted((REPO / "viper_rs").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found += [f"{path.relative_to(REPO)}:{n.lineno}" for n in ast.walk(tree)
                  if isinstance(n, ast.ClassDef) and n.name == "Chip"]
    assert len(found) == 1, f"more than one Chip class: {found}"
    assert found[0].startswith("viper_rs/tiling/chips.py:")


def test_region_takes_sources_and_chips_from_the_shared_grid():
    """region/ uses index/ only for its features (the ranked search and the index it reads,
    the Ray connection), never for the chip or source basics."""
    for path in sorted((REPO / "viper_rs" / "region").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("viper_rs.index"):
                assert node.module in ("viper_rs.index.query", "viper_rs.index.store",
                                       "viper_rs.index.build"), \
                    f"{path.relative_to(REPO)}:{node.lineno} imports {node.module}"


def test_starts_are_flush_and_counted_without_listing():
    for length, size, stride in [(100, 30, 20), (30, 30, 10), (10, 30, 5), (257, 64, 64)]:
        s = starts(length, size, stride)
        assert count_starts(length, size, stride) == len(s)
        assert s[0] == 0 and (s[-1] + size == length or length <= size)


def test_windows_cut_cores_at_the_edge_and_read_a_clipped_halo():
    cores, reads = windows(np.array([0, 0, 96]), np.array([0, 96, 96]), (64, 64), 8, (100, 120))
    assert cores.tolist() == [[0, 0, 64, 64], [0, 96, 64, 120], [96, 96, 100, 120]]
    assert reads.tolist() == [[0, 0, 72, 72], [0, 88, 72, 120], [88, 88, 100, 120]]
