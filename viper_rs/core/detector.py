"""The detector protocol, the small protocols of dense detectors, and the ScoreMap.

Lives below the tools (which call detectors) and above geo and regions; the detectors
themselves are in :mod:`viper_rs.vision`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from viper_rs.core.geo import GeoImage
from viper_rs.core.image import Image
from viper_rs.core.regions import Region


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


#: Timed stages of one detection (image tower, text, score, components, SAM...), for traces.
Stages = list[dict[str, Any]]


@runtime_checkable
class Detector(Protocol):
    """Anything that scores a text query on an image and turns it into regions.

    ``choice_note`` says why the detector was chosen (``auto``), or None.
    """

    name: str
    choice_note: str | None

    def prepare(self, image: Image, queries: Sequence[str] = ()) -> dict[str, Any]:
        """Compute the per-image work every query shares (cached); returns its stats.

        ``queries`` are the base concepts the program names literally (the keys ``find``
        will be called with); a detector may answer them ahead (a region scans its chips
        for them) or ignore them."""
        ...

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """Score every pixel of ``image`` for ``query``; unknown concepts raise UnknownConceptError."""
        ...

    def find(self, image: Image, query: str) -> list[Region]:
        """Instances of ``query`` in ``image`` (score map -> components -> regions)."""
        ...

    def find_with_stages(self, image: Image, query: str) -> tuple[list[Region], Stages]:
        """Regions plus the timed stages that produced them (empty for one-step detectors)."""
        ...

    def notes(self, image: Image, query: str) -> list[str]:
        """How ``query`` is answered on ``image`` (approximations, fallbacks), for the answer."""
        ...


@runtime_checkable
class ContextSensitive(Protocol):
    """A detector some of whose rules read whole objects (not a bounded window): a region's
    chip reads a wider window while :meth:`open_objects` finds objects cut by its edge."""

    def open_objects(self, image: GeoImage, core: tuple[int, int, int, int],
                     cut: tuple[bool, bool, bool, bool], queries: Sequence[str]) -> int:
        """How many objects decided as a whole, for any of ``queries``, reach from ``core``
        (r0, c0, r1, c1 pixels of ``image``) to an edge of ``image`` marked as a cut (top,
        bottom, left, right); 0 when no query is answered by such rules."""
        ...


class PatchFeatures(Protocol):
    """Patch embeddings of one image: ``features`` (rows, cols, D), unit vectors."""

    features: np.ndarray

    def upsample(self, grid2d: np.ndarray) -> np.ndarray:
        """Per-patch values (rows, cols) to image resolution (H, W)."""
        ...

    def patch_centres(self) -> np.ndarray:
        """(rows, cols, 2) patch centres as (row, col) image pixels."""
        ...


class ImageEmbedder(Protocol):
    """The image tower of a dense detector: one patch grid per image (cached)."""

    last_stats: dict[str, Any]

    def embed(self, image: GeoImage) -> PatchFeatures:
        """The patch-embedding grid of ``image``."""
        ...


class TextEmbedder(Protocol):
    """The text tower of a dense detector: one unit vector per prompt (cached)."""

    last_stats: dict[str, Any]

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), D) embeddings."""
        ...


class MaskRefiner(Protocol):
    """Sharpens component masks from point prompts (SAM)."""

    def set_image(self, image: GeoImage) -> dict[str, Any]:
        """Compute (or fetch) the image embedding; returns its stats."""
        ...

    def refine(
        self, image: GeoImage, labels: np.ndarray, points: Mapping[int, np.ndarray],
        scores: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new label image where accepted masks replace their components, and stats."""
        ...
