"""The detector protocol and the ScoreMap it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from viper_rs.geo import GeoImage
from viper_rs.regions import Region


@dataclass
class ScoreMap:
    """Per-pixel score (H, W) for one query on one image, with the threshold to apply.

    ``label`` is the concept the detector actually scored (e.g. ``building`` for the
    query ``commercial building``); ``notes`` records approximations for the trace.
    ``instances`` optionally holds an (H, W) int label image of pre-separated instances
    (0 = background) when the detector knows object boundaries.
    """

    scores: np.ndarray
    threshold: float
    query: str
    label: str
    detector: str
    notes: list[str] = field(default_factory=list)
    instances: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        """Boolean foreground: scores >= threshold."""
        return self.scores >= self.threshold


@runtime_checkable
class Detector(Protocol):
    """Anything that scores a text query on an image and turns it into regions."""

    name: str

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """Score every pixel of ``image`` for ``query``; unknown concepts raise UnknownConceptError."""
        ...

    def find(self, image: GeoImage, query: str) -> list[Region]:
        """Instances of ``query`` in ``image`` (score map -> components -> regions)."""
        ...

    def notes(self, image: GeoImage, query: str) -> list[str]:
        """How ``query`` is answered on ``image`` (approximations, fallbacks), for the answer."""
        ...
