"""The detector protocol and its base class, the small protocols of dense detectors, and
the ScoreMap.

Lives below the tools (which call detectors) and above geo and regions; the detectors
themselves are in :mod:`viper_rs.vision` (region questions wrap one in
:class:`viper_rs.region.detector.RegionDetector`). :class:`Detector` is what the agent, the
tools, region questions, the index and the UI read; :class:`DetectorBase` gives every
member a default and owns the per-image cache and the pickling, so a detector subclasses
it and writes only what it does differently (``docs/adding-a-detector.md``).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, cast, runtime_checkable

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.geo import GeoImage
from viper_rs.core.image import Image
from viper_rs.core.lru import LRU
from viper_rs.core.regions import Region

T = TypeVar("T")


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

    ``choice_note`` says why the detector was chosen (``auto``), or None; ``settings`` the
    settings it measures with (minimum region size, connectivity); ``min_area_m2`` the
    smallest object it keeps when its chips are stitched over a region (None: the
    settings' ``min_region_m2``); ``instance_ids_global`` whether the instance ids of its
    score maps name the same object in every chip (ground-truth ids) rather than per
    chip; ``stats`` the image-wide statistics every image is measured with (a region's,
    shared by its chips; None: each image its own, or the detector has none). The
    methods after :meth:`notes` are what region questions and the index ask of it; a
    subclass of :class:`DetectorBase` has them all.
    """

    name: str
    choice_note: str | None
    settings: Settings
    min_area_m2: float | None
    instance_ids_global: bool
    stats: object | None

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

    def uncovered(self, image: GeoImage, query: str) -> str | None:
        """Why the specialist for ``query`` cannot answer ``image`` (a fallback would answer
        instead); None when it can or when ``query`` has no specialist."""
        ...

    def region_halo(self, pixel_size: float, default: float) -> float:
        """The context (grid units) a region's chip reads around its core for this
        detector's answers not to depend on where the region is cut; ``default`` for a
        detector whose rules read no wider than its own window."""
        ...

    def stats_halo(self, pixel_size: float) -> float | None:
        """The context the chips measuring a region's image-wide statistics read around
        their cores; None when the detector measures with no such statistics, or already
        has its own (:meth:`with_stats_of` is then not needed)."""
        ...

    def with_stats_of(self, images: Sequence[GeoImage], cache_items: int) -> Detector:
        """This detector measuring every image with the statistics of ``images`` taken
        together (a region's chips, their ``roi`` the cores), keeping the results of
        ``cache_items`` images; itself when :meth:`stats_halo` is None."""
        ...

    def cost_parts(self, pixel_m: float, concepts: Sequence[str] | None = None) -> list[str]:
        """Names of the parts (``spectral``, ``buildingnet``, ``graft``, ``clip``, ``sam``)
        that analyse chips of ``pixel_m`` metres for ``concepts`` (None: every part), for
        a region's cost estimate; a name without a measured cost is charged as ``other``."""
        ...

    def loaded_parts(self) -> list[str]:
        """Names of every part this detector loads, whether or not it answers."""
        ...


class DetectorBase:
    """Defaults for every member of :class:`Detector`, a per-image cache, and pickling.

    A subclass sets ``name`` (a class attribute), and writes :meth:`score_map` and
    :meth:`find_with_stages`; :meth:`find` is the regions of :meth:`find_with_stages`.
    ``settings`` default to ``Settings()``. Work shared by every query on one image is
    kept with :meth:`cached` (an LRU of ``cache_size`` images; ``computations`` counts
    its misses). A pickled detector (sent to a worker process or a Ray actor) leaves its
    cache and locks behind and gets fresh ones; a subclass holding more locks names them
    in ``_locks``.

    Example::

        class Toy(DetectorBase):
            name = "toy"
            def score_map(self, image, query): ...
            def find_with_stages(self, image, query): ...
    """

    name: str = "detector"
    choice_note: str | None = None
    min_area_m2: float | None = None
    instance_ids_global: bool = False
    stats: object | None = None
    #: Attributes holding a ``threading.Lock`` (not pickled; new ones on unpickling).
    _locks: ClassVar[tuple[str, ...]] = ("_lock",)

    def __init__(self, settings: Settings | None = None, cache_size: int = 8) -> None:
        self.settings = settings or Settings()
        self.computations = 0  # per-image computations (cache misses)
        self._cache: LRU[Hashable, object] = LRU(cache_size)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the per-image cache
    @property
    def cache_size(self) -> int:
        """Images whose per-image work is kept."""
        return self._cache.max_items

    @cache_size.setter
    def cache_size(self, value: int) -> None:
        self._cache.max_items = value

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value of ``key``, or ``compute()`` stored under it (a miss)."""
        hit = self._cache.get(key)
        if hit is not None:
            return cast(T, hit)
        value = compute()
        with self._lock:
            self.computations += 1
            self._cache.put(key, value)
        return value

    def is_cached(self, key: Hashable) -> bool:
        """Whether ``key``'s value is in the cache."""
        return key in self._cache

    def with_cache(self: DetectorT, items: int) -> DetectorT:
        """The same detector (models, settings and statistics shared) with a cache of its
        own keeping ``items`` images."""
        out = copy.copy(self)
        out._cache = LRU(items)
        out._lock = threading.Lock()
        return out

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the cache and the locks (the cache's size is kept)."""
        state = {k: v for k, v in self.__dict__.items()
                 if k != "_cache" and k not in self._locks}
        state["_cache_size"] = self._cache.max_items
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the cache and the locks of an unpickled detector."""
        state = dict(state)
        self._cache = LRU(state.pop("_cache_size"))
        for lock in self._locks:
            setattr(self, lock, threading.Lock())
        self.__dict__.update(state)

    # ------------------------------------------------------------------ the protocol
    def prepare(self, image: GeoImage, queries: Sequence[str] = ()) -> dict[str, Any]:
        """Nothing shared to compute ahead by default; returns its (empty) stats."""
        return {}

    def score_map(self, image: GeoImage, query: str) -> ScoreMap:
        """Score every pixel of ``image`` for ``query`` (a subclass writes it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define score_map")

    def find(self, image: GeoImage, query: str) -> list[Region]:
        """Instances of ``query`` in ``image``: the regions of :meth:`find_with_stages`."""
        return self.find_with_stages(image, query)[0]

    def find_with_stages(self, image: GeoImage, query: str) -> tuple[list[Region], Stages]:
        """Regions plus the timed stages that produced them (a subclass writes it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define find_with_stages")

    def notes(self, image: GeoImage, query: str) -> list[str]:
        """No approximation to report by default."""
        return []

    def uncovered(self, image: GeoImage, query: str) -> str | None:
        """No specialist that could fail to cover an image: None."""
        return None

    def region_halo(self, pixel_size: float, default: float) -> float:
        """``default``: the detector reads no wider than its window."""
        return default

    def stats_halo(self, pixel_size: float) -> float | None:
        """None: no image-wide statistics to share over a region."""
        return None

    def with_stats_of(self, images: Sequence[GeoImage], cache_items: int) -> Detector:
        """Itself (no image-wide statistics)."""
        return self

    def cost_parts(self, pixel_m: float, concepts: Sequence[str] | None = None) -> list[str]:
        """The detector's own name: one part answers every concept."""
        return [self.name]

    def loaded_parts(self) -> list[str]:
        """The parts of :meth:`cost_parts` for every concept."""
        return self.cost_parts(1.0, None)


DetectorT = TypeVar("DetectorT", bound=DetectorBase)


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
