"""Shared fixtures: the real data folder (skips cleanly when absent) and small images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from viper_rs.core.detector import DetectorBase

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; the test is skipped when the folder is absent (fresh clone)."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent (it sits beside the clone in CI)")
    return DATA


@pytest.fixture
def four_band() -> np.ndarray:
    """(4, 64, 64) uint8 R,G,B,NIR image with a vegetated half and a water square."""
    rng = np.random.default_rng(0)
    img = np.zeros((4, 64, 64), dtype=np.uint8)
    img[:, :, :] = np.array([120, 120, 115, 90])[:, None, None]
    img[:, :, 32:] = np.array([60, 100, 50, 200])[:, None, None]
    img[:, 10:20, 10:20] = np.array([20, 40, 50, 10])[:, None, None]
    img = (img.astype(int) + rng.integers(-3, 4, img.shape)).clip(0, 255).astype(np.uint8)
    return img


class StaticDetector(DetectorBase):
    """Test detector: fixed boolean masks per concept; components become regions."""

    name = "static"

    def __init__(self, masks: dict[str, np.ndarray]):
        super().__init__()
        self.masks = masks
        self.calls = 0

    def score_map(self, image, query):
        from viper_rs.core.errors import UnknownConceptError
        from viper_rs.vision.base import ScoreMap

        key = query.rstrip("s") if query not in self.masks else query
        if key not in self.masks:
            raise UnknownConceptError(f"unknown concept {query!r}")
        return ScoreMap(self.masks[key].astype(np.float32), 0.5, query, key, self.name, notes=[])

    def notes(self, image, query):
        return self.score_map(image, query).notes

    def find_with_stages(self, image, query):
        from viper_rs.vision.components import regions_from_score_map

        self.calls += 1
        return regions_from_score_map(image, self.score_map(image, query)), []


@pytest.fixture
def scene_masks() -> dict[str, np.ndarray]:
    """Masks on a 100x100 1 m grid: 3 buildings (25, 100, 600 m2), a road, a pond."""
    h = w = 100
    b = np.zeros((h, w), bool)
    b[5:10, 5:10] = True  # 25 m2, left top
    b[5:15, 40:50] = True  # 100 m2
    b[60:80, 60:90] = True  # 600 m2, right bottom
    road = np.zeros((h, w), bool)
    road[:, 30:34] = True  # vertical road
    water = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    water |= (yy - 80) ** 2 + (xx - 15) ** 2 <= 64  # circle r=8 around (15, 80)
    return {"building": b, "road": road, "water area": water}
