"""The spectral detector's vocabulary: concept words -> one canonical land-cover class.

The vocabulary is data (``VOCABULARY``): each entry maps a normalised phrase to a
canonical class and, when the class only approximates the phrase, the reason. A query is
normalised (case, whitespace, hyphens, a leading article, plurals, size/shape words) and
looked up; ``resolve_concept`` returns the class plus notes that record every
approximation, so answers can say what was really measured.

Canonical classes (``SUPPORTED_CLASSES``):

- ``water``: open water (lakes, ponds, rivers, pools).
- ``tree``: tree canopy (woods, forests, orchards).
- ``low_vegetation``: grass, meadows, lawns, fields, crops.
- ``vegetation``: any vegetation (``tree`` plus ``low_vegetation``).
- ``bare_soil``: barren ground, sand, construction sites.
- ``impervious``: any paved or built surface (roofs, roads, parking, plazas).
- ``building``: compact impervious objects of building size (roofs).
- ``road``: elongated impervious strips (roads, paths, railways).
- ``parking``: large, open, non-elongated paved areas that are not roofs.
- ``built_up``: developed land use (residential/commercial/industrial areas), measured
  as land with a high density of impervious surface.
"""

from __future__ import annotations

import re

from viper_rs.core.errors import UnknownConceptError
from viper_rs.core.vocabulary import (
    CONCEPT_ARTICLES,
    CONCEPT_SHAPE_WORDS,
    RELATION_WORDS,
    SIZE_WORDS,
    suffix_singular,
)

#: Canonical classes the spectral detector can score.
SUPPORTED_CLASSES: tuple[str, ...] = (
    "water",
    "tree",
    "low_vegetation",
    "vegetation",
    "bare_soil",
    "impervious",
    "building",
    "road",
    "parking",
    "built_up",
)

#: Classes that are objects (counted as instances) rather than land cover.
OBJECT_CLASSES: frozenset[str] = frozenset({"building", "road", "parking"})

#: Classes whose spectral rules decide in metres what the class is, so that they cannot be
#: told on an image without a ground size (refused there: NoGroundSize), and why. The
#: others (``vegetation``, ``impervious``) are decided pixel by pixel from band indices;
#: their metre sizes only fill holes and drop specks, which are then taken in pixels.
#: Measured on 20 RSVQA-HR 15 cm RGB tiles read without their ground size (at 1 m pixels)
#: against the same tiles at 0.15 m: water area x9.5, bare soil x4.1, low vegetation
#: x3.5 (vegetation x0.94, impervious x0.90).
METRIC_CLASSES: dict[str, str] = {
    "building": "buildings are told by shape rules in metres (footprints of 20-40,000 m2)",
    "road": "roads are told by shape rules in metres (centre lines of 40 m or more, "
            "2.5-28 m wide)",
    "parking": "parking lots are told by shape rules in metres (open paved areas of "
               "150 m2 or more)",
    "built_up": "built-up land is impervious density over 30 m blocks in patches of "
                "400 m2 or more",
    "tree": "tree canopy is told from grass by its texture over 5 m windows",
    "low_vegetation": "grass is told from tree canopy by its texture over 5 m windows",
    "water": "water bodies are told from shadows and dark roofs by their size in m2 "
             "(20-300 m2 and more) and smoothness over 3 m",
    "bare_soil": "bare soil is told from brown roofs and cars by patches of 30 m2 or more",
}

# Reasons recorded when a phrase is only approximated by its class.
_USE = "the spectral detector cannot tell building use"
_LANDUSE = "land use is measured as land densely covered by impervious surface"
_LINEAR = "it is found as an elongated paved strip; surface material and traffic type are not told apart"
_GREEN = "it is found as its vegetated ground (trees and grass together)"
_GRASS = "it is found as its grass/low-vegetation cover"
_TREES = "it is found as tree canopy"
_BARE = "it is found as bare, unvegetated ground"
_WATER = "it is found as open water only"
_PAVED = "it is found as paved surface"
_PARK_LOT = "it is found as a large open paved area"

#: Phrase groups: canonical class -> [(phrase, reason or None for a true synonym)].
_GROUPS: dict[str, list[tuple[str, str | None]]] = {
    "water": [
        *[(p, None) for p in (
            "water", "water area", "water body", "open water", "surface water", "lake",
            "pond", "river", "stream", "canal", "reservoir", "basin", "sea", "ocean", "bay",
            "creek", "brook", "waterway", "riverbank", "lagoon", "water surface",
        )],
        *[(p, _WATER) for p in (
            "salt pond", "swimming pool", "pool", "fountain", "marina", "harbour", "harbor",
            "dock", "wetland", "marsh", "swamp", "reedbed", "ditch", "drain", "moat",
            "water treatment", "wastewater plant", "mudflat",
        )],
    ],
    "tree": [
        *[(p, None) for p in (
            "tree", "tree canopy", "canopy", "wood", "forest", "woodland", "tree cover",
            "tree area", "wooded area", "grove", "tree row",
            "treeline", "tree line",
        )],
        *[(p, _TREES) for p in ("orchard", "hedge", "hedgerow", "plantation", "nature reserve")],
    ],
    "low_vegetation": [
        *[(p, None) for p in (
            "low vegetation", "grass", "grass area", "grassland", "lawn", "meadow", "field",
            "farmland", "farm field", "crop", "cropland", "crop field", "pasture",
            "hay field", "prairie", "turf", "green field", "agricultural land",
            "arable land",
        )],
        *[(p, _GRASS) for p in (
            "greenfield", "recreation ground", "village green", "pitch", "sports field",
            "playing field", "football pitch", "football field", "soccer field",
            "baseball field", "golf course", "heath", "playground",
        )],
    ],
    "vegetation": [
        *[(p, None) for p in (
            "vegetation", "green area", "green space", "greenery", "plant", "vegetated area",
            "green", "natural area", "scrub", "shrub", "shrubland", "bush",
        )],
        *[(p, _GREEN) for p in (
            "park", "garden", "allotment", "cemetery", "graveyard", "vineyard",
            "plant nursery", "nursery", "flowerbed",
        )],
    ],
    "bare_soil": [
        *[(p, None) for p in (
            "bare soil", "soil", "barren", "barren land", "bare ground", "bare land", "dirt",
            "sand", "beach", "dune", "earth", "gravel", "bare rock", "rock", "mud",
        )],
        *[(p, _BARE) for p in (
            "construction area", "construction site", "construction", "landfill", "quarry",
            "brownfield", "mine", "excavation",
        )],
    ],
    "impervious": [
        *[(p, None) for p in (
            "impervious", "impervious surface", "paved area", "paved surface", "pavement",
            "asphalt", "concrete", "hard surface", "man made surface", "built surface",
            "sealed surface",
        )],
        *[(p, _PAVED) for p in (
            "plaza", "town square", "courtyard", "tennis court", "basketball court",
            "sports court", "helipad", "apron", "yard", "schoolyard", "patio", "terrace",
        )],
    ],
    "building": [
        *[(p, None) for p in (
            "building", "house", "roof", "rooftop", "structure", "shed", "hut", "cabin",
            "home", "building roof",
        )],
        *[(p, _USE) for p in (
            "residential building", "commercial building", "industrial building",
            "retail building", "office building", "public building", "civic building",
            "government building", "apartment", "apartment building", "office",
            "detached house", "semidetached house", "bungalow", "townhouse", "dormitory",
            "shop", "store", "supermarket", "mall", "shopping mall", "shopping centre",
            "shopping center", "warehouse", "factory", "barn", "farm building", "garage",
            "hangar", "hospital", "clinic", "school", "university", "college",
            "kindergarten", "church", "chapel", "cathedral", "mosque", "synagogue", "temple",
            "place of worship", "theatre", "theater", "cinema", "museum", "library",
            "hotel", "bank", "restaurant", "fire station", "police station", "town hall",
            "train station", "station", "greenhouse", "silo", "storage tank", "tank",
            "tower", "sports centre", "sports center", "gym",
        )],
    ],
    "road": [
        *[(p, None) for p in (
            "road", "street", "highway", "motorway", "freeway", "expressway", "avenue",
            "boulevard", "lane", "alley", "road surface", "carriageway", "trunk road",
            "primary road", "secondary road", "tertiary road", "residential road",
            "service road", "roundabout", "intersection", "junction",
        )],
        *[(p, _LINEAR) for p in (
            "driveway", "path", "footway", "footpath", "sidewalk", "cycleway", "bike path",
            "bicycle path", "bridleway", "track", "trail", "pedestrian", "pedestrian way",
            "pedestrian area", "pedestrian street", "crossing", "crosswalk", "steps",
            "bridge", "railway", "rail", "railroad", "railway track", "train track",
            "tram", "tramway", "subway", "runway", "taxiway", "pier", "boardwalk",
            "jetty", "causeway",
        )],
    ],
    "parking": [
        *[(p, None) for p in (
            "parking", "parking lot", "parking area", "car park", "parking place",
            "parking space", "parking zone",
        )],
        *[(p, _PARK_LOT) for p in (
            "parking garage", "multistorey car park", "bus station", "bus depot",
        )],
    ],
    "built_up": [
        *[(p, None) for p in (
            "built up", "built up area", "built up land", "urban area", "urban",
            "developed area", "developed land", "settlement", "city", "town",
            "downtown",
        )],
        *[(p, _LANDUSE) for p in (
            "residential area", "residential", "residential land", "housing",
            "neighbourhood", "neighborhood", "suburb", "village", "hamlet",
            "commercial area", "commercial", "retail area", "retail", "business area",
            "industrial area", "industrial", "industrial zone", "industrial estate",
            "military area", "military", "religious area", "farmyard", "farm", "depot",
            "port", "railway yard", "rail yard", "campus", "school ground",
            "hospital ground", "stadium", "airport", "aerodrome", "power plant",
            "substation", "institutional area", "education area", "leisure area",
        )],
    ],
}

#: Normalised phrase -> (canonical class, approximation reason or None).
VOCABULARY: dict[str, tuple[str, str | None]] = {
    phrase: (cls, reason) for cls, entries in _GROUPS.items() for phrase, reason in entries
}
# The class names themselves (with spaces) are always their own synonyms.
for _cls in SUPPORTED_CLASSES:
    VOCABULARY.setdefault(_cls.replace("_", " "), (_cls, None))

_GENERIC_TAILS = ("area", "zone", "land", "surface", "region", "cover", "site", "ground")


#: Words in the longest vocabulary phrase (a longer suffix can never match).
_MAX_PHRASE_WORDS = max(len(k.split()) for k in VOCABULARY)


def normalize_phrase(query: str) -> str:
    """Lower-case, hyphen-free, single-spaced phrase without a leading article or a
    trailing ``in the image``."""
    s = query.lower().replace("-", " ").replace("_", " ").replace("/", " ")
    s = re.sub(r"[^a-z0-9' ]+", " ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+in (?:the|this) (?:image|picture|scene|photo)$", "", s)
    words = s.split()
    i = 0
    while i < len(words) and words[i] in CONCEPT_ARTICLES:
        i += 1
    return " ".join(words[i:])


def _candidates(phrase: str) -> list[str]:
    """The phrase plus its singular readings ("places of worship", "water areas")."""
    out = [phrase]
    words = phrase.split()
    if not words:
        return out
    last = words[:-1] + [suffix_singular(words[-1])]
    out.append(" ".join(last))
    if "of" in words[1:]:
        i = words.index("of")
        head = [*words[: i - 1], suffix_singular(words[i - 1]), *words[i:]]
        out.append(" ".join(head))
        out.append(" ".join([*head[:-1], suffix_singular(head[-1])]))
    return list(dict.fromkeys(out))


def _lookup(phrase: str) -> tuple[str, str] | None:
    """(matched vocabulary key, phrase as matched) for the phrase or a singular reading."""
    for cand in _candidates(phrase):
        if cand in VOCABULARY:
            return cand, cand
    return None


def _note(phrase: str, cls: str, reason: str) -> str:
    return f"'{phrase}' approximated as '{cls}': {reason}"


def concept_class(query: str) -> str | None:
    """The canonical class :func:`resolve_concept` maps ``query`` to, None for concepts
    outside the vocabulary."""
    try:
        return resolve_concept(query)[0]
    except UnknownConceptError:
        return None


#: Building phrases that name a use, and the use (:mod:`viper_rs.vision.buildings.use`
#: tells it from the roof where a detector can).
BUILDING_USES: dict[str, str] = {
    "residential building": "residential", "commercial building": "commercial",
}


def building_use(query: str) -> str | None:
    """The building use a concept phrase names ("residential" / "commercial"), None for
    other phrases and concepts outside the vocabulary."""
    try:
        return BUILDING_USES.get(_resolve(query)[2])
    except UnknownConceptError:
        return None


def resolve_concept(query: str) -> tuple[str, list[str]]:
    """Map a concept phrase to ``(canonical class, notes)``.

    Notes record every approximation (building use, land use, ignored size or shape
    words, unmodelled qualifiers). Unknown concepts raise ``UnknownConceptError``.

    Example: ``resolve_concept("commercial buildings")`` ->
    ``("building", ["'commercial building' approximated as 'building': the spectral
    detector cannot tell building use"])``.
    """
    cls, notes, _ = _resolve(query)
    return cls, notes


def _resolve(query: str) -> tuple[str, list[str], str]:
    """(canonical class, notes, the vocabulary phrase matched) of a concept phrase."""
    if not isinstance(query, str):
        raise UnknownConceptError(f"concept must be a string, got {type(query).__name__}")
    phrase = normalize_phrase(query)
    notes: list[str] = []
    words = phrase.split()
    # Size/shape words: only leading ones, and only when a noun remains.
    n_dropped = 0
    while len(words) - n_dropped > 1 and (
        words[n_dropped] in SIZE_WORDS or words[n_dropped] in CONCEPT_SHAPE_WORDS
    ):
        n_dropped += 1
    dropped, words = words[:n_dropped], words[n_dropped:]
    for w in dropped:
        kind = "size" if w in SIZE_WORDS else "shape"
        notes.append(
            f"{kind} word '{w}' is not applied by the spectral detector "
            f"(filter the regions by {'area' if kind == 'size' else 'shape'})"
        )
    phrase = " ".join(words)
    if not phrase:
        raise UnknownConceptError(_unknown_message(query))

    hit = _lookup(phrase)
    if hit is None:
        # "forest area", "parking zone" -> drop a generic trailing noun.
        if len(words) > 1 and suffix_singular(words[-1]) in _GENERIC_TAILS:
            hit = _lookup(" ".join(words[:-1]))
    qualifiers: list[str] = []
    if hit is None:
        # "red roof", "old factory building": drop leading qualifiers one by one (never
        # past a relation word). Only the last _MAX_PHRASE_WORDS words can name a concept.
        first_relation = next(
            (j for j, w in enumerate(words) if w in RELATION_WORDS), len(words)
        )
        start = max(1, len(words) - _MAX_PHRASE_WORDS)
        for i in range(start, min(len(words), first_relation + 1)):
            hit = _lookup(" ".join(words[i:]))
            if hit is not None:
                qualifiers = words[:i]
                break
    if hit is None:
        raise UnknownConceptError(_unknown_message(query))

    key, matched = hit
    cls, reason = VOCABULARY[key]
    if qualifiers:
        notes.append(
            f"'{' '.join(qualifiers)} {matched}' approximated as '{matched}': "
            f"the word(s) '{' '.join(qualifiers)}' are not modelled by the spectral detector"
        )
    if reason is not None:
        notes.append(_note(matched, cls, reason))
    return cls, notes, key


def _unknown_message(query: str) -> str:
    examples = ", ".join(
        ["building", "road", "parking", "water area", "tree", "forest", "grass",
         "low vegetation", "bare soil", "impervious surface", "residential area"]
    )
    return (
        f"unknown concept {query!r} for the spectral detector; it understands land-cover "
        f"words such as {examples} (classes: {', '.join(SUPPORTED_CLASSES)})"
    )


def known_concepts() -> list[str]:
    """Every phrase the vocabulary maps (sorted); plurals are accepted too."""
    return sorted(VOCABULARY)
