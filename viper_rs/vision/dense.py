"""Dense vision-language detectors (GRAFT, CLIP): patch embeddings scored against text.

Pipeline per (image, query): patch-embedding grid (once per image) -> calibrated query
probability per patch (text embeddings once per string) -> score map at image resolution
-> threshold -> connected components -> minimum area in m2 -> optional SAM refinement
with point prompts at each component's highest-scoring patch centres -> Regions.
Every stage is timed and reported so the answer's trace shows what ran and what was cached.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from scipy import ndimage

from viper_rs.core import budget
from viper_rs.core.config import Settings
from viper_rs.core.detector import (
    DetectorBase,
    ImageEmbedder,
    MaskRefiner,
    ScoreMap,
    Stages,
    TextEmbedder,
)
from viper_rs.core.errors import UnknownConceptError
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.core.timing import ms_since
from viper_rs.vision.calibration import Calibration
from viper_rs.vision.components import label_components, regions_from_labels
from viper_rs.vision.concepts import normalize_phrase


class DenseDetector(DetectorBase):
    """Open-vocabulary detector over a patch embedder, a text encoder and optional SAM;
    keeps the results of ``max_cached_queries`` (image, query) pairs."""

    def __init__(
        self,
        name: str,
        embedder: ImageEmbedder,
        text: TextEmbedder,
        settings: Settings | None = None,
        calibration: Calibration | None = None,
        sam: MaskRefiner | None = None,
        max_cached_queries: int = 256,
    ) -> None:
        super().__init__(settings, cache_size=max_cached_queries)
        self.name = name
        self.embedder = embedder
        self.text = text
        self.calibration = calibration or Calibration.load(self.settings.calibration_file)
        self.sam = sam

    # ------------------------------------------------------------------ protocol
    def notes(self, image: GeoImage, query: str) -> list[str]:
        """How ``query`` is scored: open vocabulary, relative to negatives, SAM or not."""
        phrase = self._phrase(query)
        notes = [
            f"'{phrase}' scored by the {self.name} detector against "
            f"{len(self.calibration.negatives_for(phrase))} negative prompts "
            f"(threshold {self._threshold(phrase):.2f})"
        ]
        if self.sam is None:
            notes.append("regions are patch-level components (no SAM checkpoint configured)")
        if image.ground_sampling_distance is None:
            notes.append(
                "unknown ground sampling distance: the model sees the image at its own "
                f"pixels (not resampled to its {self.settings.model_gsd_m:g} m) and the "
                f"minimum region size {self.settings.min_region_m2:g} m2 is taken in pixels")
        return notes

    def prepare(self, image: GeoImage, queries: Sequence[str] = ()) -> dict[str, Any]:
        """Compute (or fetch from the caches) the per-image work every query shares: the
        patch-embedding grid and, with SAM, the SAM image embedding (``queries`` is ignored)."""
        t0 = time.perf_counter()
        self.embedder.embed(image)
        stats: dict[str, Any] = {"image_tower": dict(self.embedder.last_stats)}
        if self.sam is not None:
            stats["sam_embedding"] = self.sam.set_image(image)
        stats["ms"] = ms_since(t0)
        return stats

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """Calibrated probability of ``query`` per pixel (patch scores upsampled)."""
        return self._run(image, query)[0]

    def find_with_stages(self, image: GeoImage, query: str) -> tuple[list[Region], Stages]:
        """Instances of ``query`` as Regions with polygons and true area, plus the timed
        stages that produced them (for the answer's trace)."""
        t0 = time.perf_counter()
        smap, labels, stages = self._run(image, query)
        t1 = time.perf_counter()
        regions = regions_from_labels(image, labels, smap, min_area_m2=self.settings.min_region_m2)
        stages = [*stages, {"stage": "regions", "n": len(regions), "ms": ms_since(t1)}]
        stages.append({"stage": "total", "ms": ms_since(t0)})
        return regions, stages

    def cost_parts(self, pixel_m: float, concepts: Sequence[str] | None = None) -> list[str]:
        """The detector's name, and ``sam`` when it refines masks with SAM."""
        return [self.name, "sam"] if self.sam is not None else [self.name]

    # ------------------------------------------------------------------ internals
    def _phrase(self, query: str) -> str:
        phrase = normalize_phrase(query) if isinstance(query, str) else ""
        if not phrase:
            raise UnknownConceptError(f"empty concept {query!r}: name an object or land cover")
        return phrase

    def _threshold(self, phrase: str) -> float:
        if self.settings.score_threshold is not None:
            return float(self.settings.score_threshold)
        return self.calibration.threshold(phrase)

    def _key(self, image: GeoImage, phrase: str) -> tuple:
        s = self.settings
        return (image.content_hash, phrase, self._threshold(phrase), s.min_region_m2,
                s.connectivity, self.sam is not None, s.sam_points, s.sam_max_regions)

    def _run(self, image: GeoImage, query: str) -> tuple[ScoreMap, np.ndarray, Stages]:
        phrase = self._phrase(query)
        key = self._key(image, phrase)
        hit = cast("tuple[ScoreMap, np.ndarray, Stages] | None", self._cache.get(key))
        if hit is not None:
            smap, labels, _ = hit
            return smap, labels, [{"stage": "detection", "cached": True}]
        stages: Stages = []
        budget.check()
        grid = self.embedder.embed(image)
        stages.append({"stage": "image_tower", **self.embedder.last_stats})

        t = time.perf_counter()
        negatives = self.calibration.negatives_for(phrase)
        concepts = [phrase, *negatives]
        prompts = [p for c in concepts for p in self.calibration.prompts(c)]
        emb = np.asarray(self.text.encode(prompts), dtype=np.float32)
        n_t = len(self.calibration.templates)
        emb = emb.reshape(len(concepts), n_t, -1).mean(axis=1)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
        text_stats = self.text.last_stats
        stages.append({"stage": "text", "prompts": len(prompts), "ms": ms_since(t),
                       **{k: v for k, v in text_stats.items() if k != "ms"}})

        budget.check()
        t = time.perf_counter()
        sims = grid.features @ emb.T  # (rows, cols, 1 + negatives)
        probs = self.calibration.probabilities(sims) if negatives else sims[..., 0]
        threshold = self._threshold(phrase)
        scores = grid.upsample(probs).astype(np.float32)
        scores = np.where(image.valid, scores, 0.0).astype(np.float32)
        smap = ScoreMap(scores=scores, threshold=threshold, query=query, label=phrase,
                        detector=self.name, notes=self.notes(image, phrase))
        stages.append({"stage": "score", "negatives": len(negatives), "threshold": threshold,
                       "max": round(float(probs.max()), 4), "ms": ms_since(t)})

        budget.check()
        t = time.perf_counter()
        labels = label_components(smap.mask & image.answer_mask, self.settings.connectivity)
        labels = _drop_small(labels, image, self.settings.min_region_m2)
        n = int(np.count_nonzero(np.bincount(labels.ravel())[1:]))  # ids left after the drop
        stages.append({"stage": "components", "n": n,
                       "connectivity": self.settings.connectivity, "ms": ms_since(t)})

        if self.sam is not None and n:
            budget.check()
            emb_stats = self.sam.set_image(image)
            stages.append({"stage": "sam_embedding", **emb_stats})
            points = component_points(labels, probs, grid.patch_centres(), scores,
                                      self.settings.sam_points)
            labels, stats = self.sam.refine(image, labels, points, scores)
            stages.append({"stage": "sam_refine", **{k: v for k, v in stats.items()
                                                      if not k.startswith("embedding")}})
        with self._lock:
            self.computations += 1
            self._cache.put(key, (smap, labels, stages))
        return smap, labels, stages


def component_points(
    labels: np.ndarray,
    patch_scores: np.ndarray,
    centres: np.ndarray,
    scores: np.ndarray,
    k: int = 3,
) -> dict[int, np.ndarray]:
    """Up to ``k`` prompt points (x=col, y=row) per component: its best patch centres.

    A component too small to hold a patch centre gets its highest-scoring pixel instead.
    """
    h, w = labels.shape
    rc = np.floor(centres.reshape(-1, 2)).astype(int)
    rc[:, 0] = rc[:, 0].clip(0, h - 1)
    rc[:, 1] = rc[:, 1].clip(0, w - 1)
    ids = labels[rc[:, 0], rc[:, 1]]
    flat = patch_scores.reshape(-1)
    out: dict[int, np.ndarray] = {}
    order = np.argsort(-flat, kind="stable")
    for i in order:
        lab = int(ids[i])
        if lab == 0:
            continue
        pts = out.setdefault(lab, np.zeros((0, 2)))
        if len(pts) < k:
            out[lab] = np.vstack([pts, [[rc[i, 1], rc[i, 0]]]])
    missing = [int(lab) for lab in np.unique(labels) if lab != 0 and int(lab) not in out]
    if not missing:
        return out
    slices = ndimage.find_objects(labels)
    for lab in missing:
        budget.check()
        sl = slices[lab - 1]
        rr, cc = np.nonzero(labels[sl] == lab)
        rr, cc = rr + sl[0].start, cc + sl[1].start
        j = int(np.argmax(scores[rr, cc]))
        out[lab] = np.array([[cc[j], rr[j]]], dtype=float)
    return out


def _drop_small(labels: np.ndarray, image: GeoImage, min_area_m2: float) -> np.ndarray:
    """Zero the components smaller than ``min_area_m2`` (true ground area)."""
    if labels.max() == 0 or min_area_m2 <= 0:
        return labels
    row_area = np.broadcast_to(image.row_pixel_area[:, None], labels.shape)
    areas = np.bincount(labels.ravel(), weights=row_area.ravel())
    small = areas < min_area_m2
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return labels
