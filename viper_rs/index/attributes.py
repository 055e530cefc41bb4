"""Chip attributes: what the detectors measure on each chip, stored beside its embedding.

Every indexed chip carries the share of its valid pixels covered by buildings, roads, water
and vegetation, and its building count (:data:`ATTRIBUTES`), measured by the detector each
concept is routed to: buildings by the learned building model (BuildingNet) wherever it
covers the chip (R, G, B at a ground resolution it was validated for), land cover by the
spectral detector's class maps (the land-cover source until a learned one exists; any
:class:`~viper_rs.core.detector.Detector` can take its place, see :class:`DetectorAttributes`).
Where the detector a concept is routed to cannot measure a chip (a specialist that does not
cover it, a chip it fails on), the value is unknown (NULL) and the reason is kept: never a 0.

A query that names such a concept ranks chips by it (:mod:`viper_rs.index.query`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from viper_rs.core.config import Settings
from viper_rs.core.detector import Detector
from viper_rs.core.errors import ViperError, first_line
from viper_rs.core.geo import GeoImage

if TYPE_CHECKING:
    from viper_rs.vision.spectral import SpectralDetector

log = logging.getLogger(__name__)

#: Version of what the attributes mean (part of every chip's recipe: a change re-measures).
ATTRIBUTE_VERSION = 1
SHARE, COUNT = "share", "count"


@dataclass(frozen=True)
class Attribute:
    """One measured attribute: its column, the canonical concept it measures
    (:mod:`viper_rs.vision.concepts`), a share of the chip's valid pixels or a count of
    instances, and what people call it."""

    column: str
    concept: str
    kind: str
    label: str
    noun: str


#: Every attribute a chip carries (one place: schema, build, search, UI read it from here).
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("building_share", "building", SHARE, "building cover", "buildings"),
    Attribute("building_count", "building", COUNT, "buildings", "buildings"),
    Attribute("road_share", "road", SHARE, "road cover", "roads"),
    Attribute("water_share", "water", SHARE, "water cover", "water"),
    Attribute("vegetation_share", "vegetation", SHARE, "vegetation cover", "vegetation"),
)
ATTRIBUTE_COLUMNS: tuple[str, ...] = tuple(a.column for a in ATTRIBUTES)
#: The concepts measured, in order.
CONCEPTS: tuple[str, ...] = tuple(dict.fromkeys(a.concept for a in ATTRIBUTES))
#: Per chip: what made its attributes (empty: not measured) and, as JSON, which detector
#: measured each concept and why the unknown ones are unknown.
RECIPE_COLUMN = "attr_recipe"
INFO_COLUMN = "attr_info"
#: The attribute a query of each concept is ranked by.
RANK_ATTRIBUTE: dict[str, Attribute] = {a.concept: a for a in ATTRIBUTES if a.kind == SHARE}
#: Attributes by column.
BY_COLUMN: dict[str, Attribute] = {a.column: a for a in ATTRIBUTES}


@dataclass
class ChipMeasures:
    """One chip's attributes: ``values`` by column (None = unknown), the detector that
    measured each concept (``by``) and why each unknown concept is unknown."""

    values: dict[str, float | int | None] = field(default_factory=dict)
    by: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)

    @classmethod
    def all_unknown(cls, why: str) -> ChipMeasures:
        """Every attribute unknown for the same reason (e.g. the chip failed to measure)."""
        return cls({c: None for c in ATTRIBUTE_COLUMNS}, {}, dict.fromkeys(CONCEPTS, why))

    def columns(self, recipe: str) -> dict[str, Any]:
        """The chip row's attribute columns, its recipe and its info JSON."""
        out: dict[str, Any] = {c: self.values.get(c) for c in ATTRIBUTE_COLUMNS}
        out[RECIPE_COLUMN] = recipe
        out[INFO_COLUMN] = json.dumps({"by": self.by, "unknown": self.unknown},
                                      separators=(",", ":"))
        return out


def not_measured() -> dict[str, Any]:
    """The attribute columns of a chip indexed without attributes."""
    return ChipMeasures({c: None for c in ATTRIBUTE_COLUMNS}).columns("")


def parse_info(text: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(by, unknown) of a stored info JSON (empty dicts for none or a damaged one)."""
    try:
        d = json.loads(text) if text else {}
    except ValueError:
        return {}, {}
    if not isinstance(d, dict):
        return {}, {}
    by, unknown = d.get("by"), d.get("unknown")
    return (by if isinstance(by, dict) else {}), (unknown if isinstance(unknown, dict) else {})


@runtime_checkable
class ChipAttributer(Protocol):
    """Measures a chip's :data:`ATTRIBUTES`; ``recipe`` names what measures them (a change
    of models or settings re-measures the chips made by another recipe)."""

    recipe: str

    def measure(self, image: GeoImage) -> ChipMeasures:
        """The chip's attributes (unknown ones None with their reason; never raises for
        one bad chip)."""
        ...


class DetectorAttributes:
    """:data:`ATTRIBUTES` from any detector: a share is the fraction of the chip's valid
    pixels its score map puts at or above the threshold, a count the number of regions
    ``find`` returns. A concept whose specialist does not cover the chip (the detector's
    ``uncovered(image, query)``: a routing detector's building model outside its range)
    is unknown with the specialist's reason: a fallback detector that was not validated
    there does not stand in for it.

    Example: ``DetectorAttributes(SpectralDetector(), "spectral").measure(chip_image)``.
    """

    def __init__(self, detector: Detector, recipe: str) -> None:
        self.detector = detector
        self.recipe = recipe

    def measure(self, image: GeoImage) -> ChipMeasures:
        """The chip's attributes (see the class docstring)."""
        out = ChipMeasures()
        valid = image.valid
        n_valid = int(valid.sum())
        for concept in CONCEPTS:
            columns = [a for a in ATTRIBUTES if a.concept == concept]
            why = self.detector.uncovered(image, concept)
            if why is None and n_valid == 0:
                why = "the chip has no valid pixels"
            if why is None:
                try:
                    values, name = self._measure(image, concept, columns, valid, n_valid)
                except (ViperError, ValueError, RuntimeError, MemoryError) as exc:
                    why = f"{type(exc).__name__}: {first_line(exc)}"
                    log.warning("chip attribute %s not measured on %s: %s", concept,
                                image.name, why)
                else:
                    out.values.update(values)
                    out.by[concept] = name
                    continue
            out.values.update({a.column: None for a in columns})
            out.unknown[concept] = why
        return out

    def _measure(self, image: GeoImage, concept: str, columns: list[Attribute],
                 valid: np.ndarray, n_valid: int) -> tuple[dict[str, float | int], str]:
        values: dict[str, float | int] = {}
        smap = self.detector.score_map(image, concept)
        for a in columns:
            if a.kind == SHARE:
                values[a.column] = float((smap.mask & valid).sum()) / n_valid
            else:
                values[a.column] = len(self.detector.find(image, concept))
        return values, smap.detector


@lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """Short content hash of a weights file (computed once per file version)."""
    st = Path(path).stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def build_attributer(settings: Settings | None = None,
                     spectral: SpectralDetector | None = None) -> DetectorAttributes:
    """The attributes ``auto`` would measure: buildings by the learned building model where
    it covers a chip (when it is on and its weights load), land cover by the spectral
    detector (``spectral``: one to share, e.g. the spectral chip embedder's, so each chip's
    class maps are computed once). Independent of the answering detector setting: an index
    serves every detector."""
    from viper_rs.vision.factory import build_auto_buildings
    from viper_rs.vision.spectral import SpectralDetector

    settings = settings or Settings()
    primary = spectral if spectral is not None else SpectralDetector(settings)
    buildings, error = build_auto_buildings(settings)
    parts = [f"attributes-v{ATTRIBUTE_VERSION}", f"min_region_m2={settings.min_region_m2:g}",
             f"connectivity={settings.connectivity}"]
    if buildings is None:
        if error:
            log.warning("chip attributes: buildings measured by the spectral detector: %s", error)
        return DetectorAttributes(primary, "|".join([*parts, primary.name]))
    from viper_rs.vision.routed import RoutedDetector

    detector = RoutedDetector(primary, buildings)
    weights = buildings.weights
    digest = file_digest(weights) if weights is not None and Path(weights).is_file() else "shipped"
    return DetectorAttributes(detector, "|".join([*parts, detector.name, f"buildingnet={digest}"]))


@dataclass(frozen=True)
class AttributeSpec:
    """A picklable recipe for the attributer (sent to worker processes and Ray actors)."""

    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings | None = None) -> AttributeSpec:
        """Spec for ``settings``."""
        return cls((settings or Settings()).model_dump(mode="json"))

    def build(self, spectral: SpectralDetector | None = None) -> DetectorAttributes:
        """The attributer (loads the building model)."""
        return build_attributer(Settings(**self.settings), spectral)


def rank_attribute(query: str, embedder: str) -> tuple[Attribute | None, list[str]]:
    """The attribute ``query`` ranks by, and notes: the concept's share when the query
    resolves to a measured concept. With an open-vocabulary embedder (CLIP, GRAFT), a
    query the vocabulary only approximates ("swimming pool" as water) ranks by the
    embedding, which reads the whole phrase."""
    from viper_rs.core.errors import UnknownConceptError
    from viper_rs.vision.concepts import resolve_concept

    try:
        concept, approximations = resolve_concept(query)
    except UnknownConceptError:
        return None, []
    attr = RANK_ATTRIBUTE.get(concept)
    if attr is None:
        return None, []
    if approximations and embedder != "spectral":
        return None, [f"ranked by the {embedder} embedding, not by the measured "
                      f"{attr.label}: the vocabulary only approximates {query!r} as "
                      f"{concept.replace('_', ' ')}"]
    return attr, []


def describe(values: Mapping[str, Any], by: Mapping[str, str], unknown: Mapping[str, str],
             attr: Attribute, reasons: bool = True) -> str:
    """``attr``'s value for people: ``building cover 23.4% (buildingnet), 14 buildings``;
    ``building cover unknown (the image is 5 m/px, ...)`` (the reason left out without
    ``reasons``); ``building cover not measured``."""
    value = values.get(attr.column)
    if value is None:
        why = unknown.get(attr.concept)
        if not why:
            return f"{attr.label} not measured"
        return f"{attr.label} unknown ({why})" if reasons else f"{attr.label} unknown"
    text = f"{attr.label} {_share(float(value))}"
    if attr.concept in by:
        text += f" ({by[attr.concept]})"
    counts = [a for a in ATTRIBUTES if a.concept == attr.concept and a.kind == COUNT]
    for c in counts:
        n = values.get(c.column)
        if n is not None:
            text += f", {int(n)} {c.label}"
    return text


def cell(values: Mapping[str, Any], unknown: Mapping[str, str], attr: Attribute) -> str:
    """A table cell: ``82.2% buildings (68)``, ``45.0% water``, ``buildings unknown``."""
    value = values.get(attr.column)
    if value is None:
        return f"{attr.noun} {'unknown' if attr.concept in unknown else 'not measured'}"
    text = f"{_share(float(value))} {attr.noun}"
    for c in (a for a in ATTRIBUTES if a.concept == attr.concept and a.kind == COUNT):
        n = values.get(c.column)
        if n is not None:
            text += f" ({int(n)})"
    return text


def _share(v: float) -> str:
    pct = 100.0 * v
    return f"{pct:.1f}%" if pct >= 0.1 or pct == 0 else "<0.1%"
