"""BuildingDetector: the Detector protocol for building concepts, answered by BuildingNet.

Per image (cached by the image's content hash): R, G, B in [0, 1] (an NIR band is
ignored), resampled to the model's ground resolution (antialiased bilinear: area-like
when shrinking, bilinear when enlarging, each axis on its own), BuildingNet
probabilities, separated instances, and both brought back to the image grid (the score
bilinearly, the instance labels by nearest neighbour). ``covers`` says when the model
cannot answer an image (no R, G, B bands, no ground resolution, or one outside the range
the model was validated for); the routing detector (:mod:`viper_rs.vision.routed`) then
asks another detector and keeps the reason as a note.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from viper_rs.core import budget
from viper_rs.core.classes import answered_by
from viper_rs.core.config import Settings
from viper_rs.core.detector import DetectorBase
from viper_rs.core.errors import UnknownConceptError
from viper_rs.core.geo import GeoImage
from viper_rs.core.regions import Region
from viper_rs.core.timing import ms_since
from viper_rs.vision.base import ScoreMap, Stages
from viper_rs.vision.components import regions_from_score_map
from viper_rs.vision.concepts import building_use, concept_class, resolve_concept

if TYPE_CHECKING:
    from viper_rs.vision.buildings.model import BuildingNet, BuildingNetConfig

log = logging.getLogger(__name__)

#: The canonical concept this detector answers (the concept table's row for "buildingnet").
(BUILDING,) = answered_by("buildingnet")
#: What answers name the model (notes, ``auto`` reasons).
MODEL_TITLE = "the learned building model (viper_rs BuildingNet)"
#: Model-grid pixels above which an image is not run in one piece (about 6300 x 6300 px,
#: 1.9 km square at 0.3 m: some 1.5 GB of input and probabilities); larger areas are
#: region questions, scanned chip by chip.
MAX_MODEL_PIXELS = 40_000_000
_THRESHOLD = 0.5
#: Relative slack on the validated range (a 1.2 m image measures 1.2000000000000002 m).
_RTOL = 1e-6


def is_building_query(query: str) -> bool:
    """Whether ``query`` resolves to the canonical ``building`` concept (False for
    concepts outside the vocabulary)."""
    return concept_class(query) == BUILDING


def axis_gsd(image: GeoImage) -> tuple[float, float] | None:
    """(metres per row step, metres per column step) of ``image``, or None without a
    ground resolution. The mean pixel area is split between the axes by the ratio of the
    transform's column and row steps (degrees of longitude shrink with cos(latitude))."""
    gsd = image.ground_sampling_distance
    if gsd is None or not math.isfinite(gsd) or gsd <= 0:
        return None
    t = image.transform
    sx, sy = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if image.crs is not None and image.crs.is_geographic:
        _, lat = image.pixel_to_crs(image.width / 2, image.height / 2)
        sx *= max(math.cos(math.radians(lat)), 1e-6)
    ratio = sx / sy if sx > 0 and sy > 0 else 1.0
    root = math.sqrt(ratio)
    return gsd / root, gsd * root


def rgb_stretch(image: GeoImage) -> float | None:
    """The value deeper-than-8-bit R, G, B are divided by: the 99.5th percentile of the
    valid R, G, B values taken together (None for 8-bit data and floats in [0, 1])."""
    idx = [image.band_names.index(r) for r in ("R", "G", "B")]
    data = image.data[idx]
    if data.dtype == np.uint8:
        return None
    vals = data[:, image.valid].astype(np.float32)
    if data.dtype.kind == "f" and vals.size and vals.min() >= 0 and vals.max() <= 1.0:
        return None
    hi = float(np.percentile(vals, 99.5)) if vals.size else 1.0
    return hi if hi > 0 else 1.0


def rgb01(image: GeoImage, stretch: float | None = None) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) float32 R, G, B in [0, 1] and a note when they were stretched.

    8-bit images are divided by 255 and float images already in [0, 1] kept as they are
    (the model was trained on 8-bit RGB). Deeper data (uint16, 12-bit, reflectance) is
    divided by ``stretch`` when given (one value for every chip of a region), else by
    :func:`rgb_stretch` of this image, so the colour balance is kept and a dim 16-bit
    scene fills the range."""
    idx = [image.band_names.index(r) for r in ("R", "G", "B")]
    data = image.data[idx]
    if data.dtype == np.uint8:
        rgb = data.astype(np.float32) / np.float32(255.0)
        return np.moveaxis(rgb, 0, -1), None
    own = rgb_stretch(image)
    if own is None:
        return np.moveaxis(data.astype(np.float32), 0, -1), None
    hi = stretch if stretch is not None and stretch > 0 else own
    rgb = np.clip(data.astype(np.float32) / np.float32(hi), 0.0, 1.0)
    note = (f"{data.dtype} R,G,B were stretched for the building model "
            f"(divided by their 99.5th percentile, {hi:g})")
    return np.moveaxis(rgb, 0, -1), note


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of ``n_out`` output pixels, the ``n_in``-grid pixel whose area holds its
    centre (both grids cover the same extent)."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.clip(idx, 0, n_in - 1)


def resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) or (H, W) float array to ``size`` = (h, w): antialiased bilinear (an
    area-like average when shrinking, bilinear when enlarging)."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    if tuple(arr.shape[-2:]) == tuple(size):
        return arr.astype(np.float32, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    x4 = x[None, None] if x.ndim == 2 else x[None]
    y = F.interpolate(x4, size=size, mode="bilinear", align_corners=False, antialias=True)
    y = y[0, 0] if x.ndim == 2 else y[0]
    return y.numpy()


def model_size(image: GeoImage, gsd: tuple[float, float], model_gsd_m: float) -> tuple[int, int]:
    """(rows, columns) of ``image`` resampled to ``model_gsd_m`` metres per pixel, given its
    per-axis ground resolution ``gsd`` (:func:`axis_gsd`)."""
    return (max(1, round(image.height * gsd[0] / model_gsd_m)),
            max(1, round(image.width * gsd[1] / model_gsd_m)))


def model_input(
    image: GeoImage, config: BuildingNetConfig, stretch: float | None = None
) -> tuple[np.ndarray, list[str]]:
    """What BuildingNet reads for ``image``: (h, w, 3) float32 R, G, B in [0, 1] resampled
    to ``config.gsd_m`` (nodata pixels set to the training mean), and notes on what was done
    (NIR ignored, deeper data stretched). UnknownConceptError without a ground resolution."""
    gsd = axis_gsd(image)
    if gsd is None:  # covers() says so first; kept for direct callers
        raise UnknownConceptError("the building model needs an image with a ground resolution")
    notes: list[str] = []
    if "NIR" in image.band_names:
        notes.append("the building model uses R, G, B only; the NIR band is ignored")
    rgb, stretched = rgb01(image, stretch)
    if stretched:
        notes.append(stretched)
    valid = image.valid
    if not valid.all():  # nodata looks like the training mean, not like black roofs
        rgb = np.where(valid[..., None], rgb, np.asarray(config.mean, dtype=np.float32))
    budget.check()
    x = resize(np.moveaxis(rgb, -1, 0), model_size(image, gsd, config.gsd_m))
    return np.clip(np.moveaxis(x, 0, -1), 0.0, 1.0).astype(np.float32), notes


@dataclass
class BuildingResult:
    """The model's answer for one image, on the image grid: ``scores`` (H, W) float32,
    ``labels`` (H, W) int32 instances, the notes, stats, and the regions built from them
    per (min area, connectivity)."""

    scores: np.ndarray
    labels: np.ndarray
    notes: list[str]
    stats: dict[str, Any]
    regions: dict[tuple, list[Region]] = field(default_factory=dict)


class BuildingDetector(DetectorBase):
    """Buildings from a learned U-Net (BuildingNet); answers the ``building`` concept only.

    ``model`` (optional) is used as given; otherwise the weights at ``weights`` (default:
    ``settings.building_checkpoint``, else the shipped file) are loaded on first use.
    ``stretch`` (optional) divides deeper-than-8-bit R, G, B on every image (a region's
    value, so chips do not each stretch their own way); by default each image uses its own
    99.5th percentile (:func:`rgb_stretch`).
    Example: ``BuildingDetector().find(GeoImage.open("tile.tif", gsd=0.3), "houses")``.
    """

    name = "buildingnet"
    _locks = ("_lock", "_model_lock")

    def __init__(
        self,
        settings: Settings | None = None,
        model: BuildingNet | None = None,
        weights: Path | None = None,
        device: str = "cpu",
        cache_size: int = 8,
        tile_px: int = 1024,
        stretch: float | None = None,
    ) -> None:
        super().__init__(settings, cache_size)
        self.stretch = stretch
        self.weights = Path(weights) if weights is not None else self.settings.building_checkpoint
        self.device = device
        self.tile_px = tile_px
        self.meta: dict[str, Any] = {}
        self._model = model
        if model is not None:
            model.eval()
        self._model_lock = threading.Lock()

    # ------------------------------------------------------------------ the model
    def load(self) -> BuildingNet:
        """The model, loaded once (CheckpointError when the weights file is missing,
        truncated or holds another architecture)."""
        if self._model is not None:
            return self._model
        with self._model_lock:
            if self._model is None:
                from viper_rs.vision.buildings.checkpoint import load_building_model

                model, meta = load_building_model(self.weights, device=self.device)
                self.meta = meta
                self._model = model
                log.info("loaded BuildingNet from %s", self.weights or "the shipped weights")
        return self._model

    @property
    def config(self) -> BuildingNetConfig:
        """The model's config (scale, validated range, normalisation)."""
        return self.load().config

    # ------------------------------------------------------------------ coverage
    def covers(self, image: GeoImage) -> str | None:
        """None when the model can answer ``image``, else why not (for a note)."""
        if not all(r in image.band_names for r in ("R", "G", "B")):
            bands = ",".join(image.band_names)
            what = "a single-band image" if len(image.band_names) == 1 else f"bands {bands}"
            return f"the image has {what}; the building model needs R, G, B"
        gsd = axis_gsd(image)
        if gsd is None:
            return ("the image has no ground resolution (no CRS or GSD), which the building "
                    "model needs to match its scale")
        lo, hi = self.config.gsd_range_m
        worst = max(gsd) if max(gsd) > hi else min(gsd)
        if not (lo * (1 - _RTOL) <= min(gsd) and max(gsd) <= hi * (1 + _RTOL)):
            return (f"the image is {_fmt(worst)} m/px, outside the learned building model's "
                    f"validated {_fmt(lo)}-{_fmt(hi)} m range")
        h, w = self._model_size(image, gsd)
        if h * w > MAX_MODEL_PIXELS:
            return (f"the image is {w}x{h} px at the building model's scale, more than the "
                    f"{MAX_MODEL_PIXELS // 1_000_000} Mpx it runs on in one piece (ask about "
                    f"it as a region to scan it chip by chip)")
        return None

    def _model_size(self, image: GeoImage, gsd: tuple[float, float]) -> tuple[int, int]:
        return model_size(image, gsd, self.config.gsd_m)

    def _check(self, image: GeoImage, query: str) -> None:
        cls, _ = resolve_concept(query)
        if cls != BUILDING:
            raise UnknownConceptError(
                f"the building model only finds buildings, not {query!r} ({cls})")
        reason = self.covers(image)
        if reason is not None:
            raise UnknownConceptError(f"the building model cannot answer this image: {reason}")

    # ------------------------------------------------------------------ per image
    def _key(self, image: GeoImage) -> str:
        return image.content_hash if self.stretch is None else f"{image.content_hash}|{self.stretch!r}"

    def result(self, image: GeoImage) -> BuildingResult:
        """The cached per-image answer (computed on first use; the image must be covered)."""
        return self.cached(self._key(image), lambda: self._compute(image))

    def _compute(self, image: GeoImage) -> BuildingResult:
        from viper_rs.vision.buildings.instances import (
            MIN_BUILDING_M2,
            instances_from_probs,
            predict_probs,
        )

        t0 = time.perf_counter()
        model = self.load()
        cfg = model.config
        x, notes = model_input(image, cfg, self.stretch)
        size = (x.shape[0], x.shape[1])
        gsd = axis_gsd(image) or (0.0, 0.0)
        valid = image.valid
        t1 = time.perf_counter()
        budget.check()
        probs = predict_probs(model, x, device=self.device, tile_px=self.tile_px)
        t2 = time.perf_counter()
        budget.check()
        min_px = max(1, round(MIN_BUILDING_M2 / (cfg.gsd_m * cfg.gsd_m)))
        score_m, labels_m = instances_from_probs(probs, min_pixels=min_px)
        budget.check()
        scores = resize(np.asarray(score_m, dtype=np.float32), image.shape)
        rows = nearest_index(image.height, size[0])
        cols = nearest_index(image.width, size[1])
        labels = np.asarray(labels_m, dtype=np.int32)[rows[:, None], cols[None, :]]
        # The instances decide the mask; the score keeps the model's confidence.
        inside = (labels > 0) & valid
        labels = np.where(inside, labels, 0).astype(np.int32)
        scores = np.where(inside, np.maximum(scores, _THRESHOLD),
                          np.minimum(scores, _THRESHOLD - 1e-3))
        scores = np.where(valid, scores, 0.0).astype(np.float32)
        if size != image.shape:
            notes.append(f"buildings found by {MODEL_TITLE} at its {_fmt(cfg.gsd_m)} m/px scale "
                         f"(the image is {_fmt(image.ground_sampling_distance or 0)} m/px)")
        else:
            notes.append(f"buildings found by {MODEL_TITLE}")
        stats = {
            "ms": ms_since(t0), "model_ms": round((t2 - t1) * 1000, 3),
            "image_px": list(image.shape), "model_px": list(size),
            "gsd_m": [round(g, 4) for g in gsd], "model_gsd_m": cfg.gsd_m,
            "instances": int(np.asarray(labels_m).max(initial=0)),
        }
        log.debug("building model on %s: %s", image.name, stats)
        return BuildingResult(scores=scores, labels=labels, notes=notes, stats=stats)

    # ------------------------------------------------------------------ Detector protocol
    def prepare(self, image: GeoImage, queries: Sequence[str] = ()) -> dict[str, Any]:
        """Run the model on ``image`` (cached) when ``queries`` name a building concept
        and the image is covered; returns its stats."""
        t0 = time.perf_counter()
        if any(is_building_query(q) for q in queries) and self.covers(image) is None:
            cached = self.is_cached(self._key(image))
            return {**self.result(image).stats, "cached": cached, "ms": ms_since(t0)}
        return {"ms": ms_since(t0), "skipped": True}

    def notes(self, image: GeoImage, query: str) -> list[str]:
        """The concept's approximation notes and how the model measured ``image``."""
        self._check(image, query)
        _, notes = resolve_concept(query)
        use = building_use(query)
        if use is not None:
            from viper_rs.vision.buildings.use import RULE

            notes = [n for n in notes if "building use" not in n]
            notes.append(f"{use} buildings told from their roofs: {RULE}")
        notes = [n.replace("the spectral detector", "the building model") for n in notes]
        return [*notes, *self.result(image).notes]

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """Per-pixel building score with the model's instances; other concepts, and
        images the model does not cover, raise UnknownConceptError."""
        self._check(image, query)
        res = self.result(image)
        return ScoreMap(scores=res.scores, threshold=_THRESHOLD, query=query, label=BUILDING,
                        detector=self.name, notes=self.notes(image, query),
                        instances=res.labels)

    def find_with_stages(self, image: GeoImage, query: str) -> tuple[list[Region], Stages]:
        """Building instances at least ``settings.min_region_m2`` large, with polygons and
        true area (built once per image and settings, copied per query text), and the
        timed stages: ``building_model`` (cached or
        not, model and image sizes), ``regions``, and for a residential / commercial query
        the roof rule that keeps that use (:mod:`viper_rs.vision.buildings.use`)."""
        self._check(image, query)
        cached = self.is_cached(self._key(image))
        res = self.result(image)
        stages: Stages = [{"stage": "building_model", "cached": cached,
                           **({} if cached else res.stats)}]
        key = (float(self.settings.min_region_m2), int(self.settings.connectivity))
        with self._lock:
            regions = res.regions.get(key)
        if regions is None:
            t0 = time.perf_counter()
            regions = regions_from_score_map(
                image, self.score_map(image, query), min_area_m2=self.settings.min_region_m2,
                connectivity=self.settings.connectivity,
            )
            with self._lock:
                res.regions[key] = regions
            stages.append({"stage": "regions", "ms": ms_since(t0), "count": len(regions)})
        use = building_use(query)
        if use is not None:
            from viper_rs.vision.buildings.use import select_use

            t0 = time.perf_counter()
            rgb, _ = rgb01(image, self.stretch)
            regions = select_use(regions, image, rgb, use)
            stages.append({"stage": f"{use} roofs", "ms": ms_since(t0), "count": len(regions)})
        return [replace(r, query=query, extra=dict(r.extra)) for r in regions], stages


def _fmt(x: float) -> str:
    """A resolution for text: 0.15, 2, 1.2."""
    return f"{x:.3g}"
