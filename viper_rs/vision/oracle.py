"""Oracle detector: answers queries on a synthetic scene from its exact ground truth.

It scores 1.0 on the pixels of the objects of the matching classes and 0.0 elsewhere,
and hands the ground-truth instance ids to the component step, so every object becomes
exactly one region. Its purpose is to test everything downstream of vision (planning,
sandbox, tools, answers): with the oracle, the agent should answer every synthetic
question exactly.
"""

from __future__ import annotations

import re

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.detector import DetectorBase
from viper_rs.core.errors import ImageError, UnknownConceptError
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.core.vocabulary import ORACLE_ARTICLES, suffix_singular
from viper_rs.synthetic import (
    COMMERCIAL,
    GRASS,
    PARKING,
    RESIDENTIAL,
    ROAD,
    TREE,
    WATER,
    Scene,
)
from viper_rs.vision.base import ScoreMap, Stages
from viper_rs.vision.components import regions_from_score_map

#: Canonical concept -> (scene classes, phrases that name it).
_CONCEPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "building": ((RESIDENTIAL, COMMERCIAL), ("building",)),
    RESIDENTIAL: ((RESIDENTIAL,), ("residential building", "house", "home", "dwelling")),
    COMMERCIAL: ((COMMERCIAL,), ("commercial building", "retail building", "office building")),
    ROAD: ((ROAD,), ("road", "street")),
    WATER: ((WATER,), ("water area", "water", "water body", "pond", "lake")),
    TREE: ((TREE,), ("tree", "wood", "forest", "woodland", "tree canopy", "wooded area")),
    GRASS: ((GRASS,), ("grass area", "grass", "grassland", "lawn")),
    PARKING: ((PARKING,), ("parking", "parking lot", "car park", "parking area")),
}


def _normalise(query: str) -> str:
    words = re.sub(r"[^\w\s]", " ", query.lower().replace("-", " ")).split()
    while words and words[0] in ORACLE_ARTICLES:
        words.pop(0)
    return " ".join(words)


def _singular(phrase: str) -> str:
    """The phrase with its last word singular (the detectors' reading, vocabulary.suffix_singular)."""
    words = phrase.split(" ")
    return " ".join([*words[:-1], suffix_singular(words[-1])])


_LOOKUP: dict[str, str] = {
    phrase: concept for concept, (_, phrases) in _CONCEPTS.items() for phrase in phrases
}


class OracleDetector(DetectorBase):
    """A perfect detector for one synthetic ``Scene`` (ground-truth masks and instances);
    nothing to compute per image (the masks are the scene's)."""

    name = "oracle"

    def __init__(self, scene: Scene, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.scene = scene
        self._hash = scene.image.content_hash

    @staticmethod
    def concepts() -> list[str]:
        """Canonical concepts this detector knows."""
        return list(_CONCEPTS)

    @staticmethod
    def resolve(query: str) -> tuple[str, tuple[str, ...]]:
        """(canonical concept, scene classes) for a query; UnknownConceptError if none."""
        text = _normalise(query)
        for candidate in (text, _singular(text)):
            if candidate in _LOOKUP:
                concept = _LOOKUP[candidate]
                return concept, _CONCEPTS[concept][0]
        known = ", ".join(sorted(_LOOKUP))
        raise UnknownConceptError(
            f"the oracle detector does not know {query!r}; known concepts: {known}"
        )

    def _check(self, image: GeoImage) -> None:
        if image is not self.scene.image and image.content_hash != self._hash:
            raise ImageError(
                f"the oracle detector was built for synthetic scene seed {self.scene.seed} "
                f"({self.scene.image.name}) but was given a different image ({image.name}); "
                "build OracleDetector(scene) for the scene whose image you query"
            )

    def notes(self, image: GeoImage, query: str) -> list[str]:
        """The oracle answers from ground truth: nothing is approximated."""
        self._check(image)
        self.resolve(query)
        return []

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """1.0 on ground-truth pixels of the matching classes, 0.0 elsewhere (threshold 0.5)."""
        self._check(image)
        concept, classes = self.resolve(query)
        ids = [o.id for o in self.scene.objects if o.cls in classes]
        hit = np.isin(self.scene.instances, ids) if ids else np.zeros(image.shape, dtype=bool)
        return ScoreMap(
            scores=hit.astype(np.float32),
            threshold=0.5,
            query=query,
            label=concept,
            detector=self.name,
            instances=np.where(hit, self.scene.instances, 0),
        )

    def find_with_stages(self, image: GeoImage, query: str) -> tuple[list[Region], Stages]:
        """One region per ground-truth object of the matching classes (no minimum area),
        with no stages."""
        smap = self.score_map(image, query)
        regions = regions_from_score_map(
            image, smap, min_area_m2=0.0, connectivity=self.settings.connectivity
        )
        by_id = {o.id: o for o in self.scene.objects}
        for r in regions:
            r0, c0 = r.origin
            rows, cols = np.nonzero(r.crop)
            oid = int(self.scene.instances[r0 + rows[0], c0 + cols[0]])
            r.extra["object_id"] = oid
            r.extra["object_class"] = by_id[oid].cls
        return regions, []
