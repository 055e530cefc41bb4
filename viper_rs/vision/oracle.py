"""Oracle detector: answers queries on a synthetic scene from its exact ground truth.

It scores 1.0 on the pixels of the objects of the matching classes and 0.0 elsewhere,
and hands the ground-truth instance ids to the component step, so every object becomes
exactly one region. Its purpose is to test everything downstream of vision (planning,
sandbox, tools, answers): with the oracle, the agent should answer every synthetic
question exactly.
"""

from __future__ import annotations

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.detector import DetectorBase
from viper_rs.core.errors import ImageError, UnknownConceptError
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.synthetic import CLASSES, Scene
from viper_rs.vision.base import ScoreMap, Stages
from viper_rs.vision.components import regions_from_score_map
from viper_rs.vision.concepts import building_use, concept_class, resolve_concept


def _scene_classes(cls: str, use: str | None) -> tuple[str, ...]:
    """The scene classes (:data:`viper_rs.synthetic.CLASSES`) a canonical class of the
    concept table covers, as the vocabulary reads their names ("grass area" ->
    low_vegetation); only those of building use ``use`` when given."""
    return tuple(s for s in CLASSES if concept_class(s) == cls
                 and (use is None or building_use(s) == use))


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
        """Canonical classes of the concept table this detector knows (those a scene class
        belongs to)."""
        return list(dict.fromkeys(c for s in CLASSES if (c := concept_class(s)) is not None))

    @staticmethod
    def resolve(query: str) -> tuple[str, tuple[str, ...]]:
        """(label, scene classes) for a query read by the shared vocabulary: a synonym of a
        class the scene has (label: its one scene class, else the class), or a building use
        ("residential building"); UnknownConceptError for anything it only approximates."""
        try:
            cls, notes = resolve_concept(query)
        except UnknownConceptError:
            cls, notes = None, []
        use = building_use(query) if cls is not None else None
        classes = _scene_classes(cls, use) if cls is not None and (use or not notes) else ()
        if not classes:
            known = ", ".join(OracleDetector.concepts())
            raise UnknownConceptError(
                f"the oracle detector does not know {query!r}; it knows the synonyms of the "
                f"classes {known} and the building uses (e.g. 'residential building')"
            )
        return (classes[0] if len(classes) == 1 else cls), classes

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
