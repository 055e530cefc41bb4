"""The concept classes: one table (:data:`CONCEPT_CLASSES`) of every canonical class a
question's concept resolves to, with the phrases that name it, its colour on maps, and how
the detectors answer it. The vocabulary (:mod:`viper_rs.vision.concepts`), the spectral
class maps and chip index, the answer map's colours and the oracle all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConceptClass:
    """One canonical class and everything stated about it."""

    #: Canonical name (``low_vegetation``), as answers label regions.
    name: str
    #: What it is, for people.
    description: str
    #: ``#rrggbb`` colour of its regions on maps and overlays.
    colour: str
    #: Words that mark a label of this class when the label is no known phrase (dataset
    #: labels such as "river bank"): the answer map's colour fallback, tried in table order.
    keywords: tuple[str, ...]
    #: Phrases (normalised, singular) that name exactly this class.
    synonyms: tuple[str, ...]
    #: Phrases this class only approximates, each answered with :attr:`approximation`.
    approximated: tuple[str, ...]
    #: Why the :attr:`approximated` phrases are only approximated (a note in the answer).
    approximation: str
    #: Classes whose union it is (``vegetation`` = ``tree`` + ``low_vegetation``).
    parts: tuple[str, ...] = ()
    #: An object (counted as instances) rather than land cover.
    is_object: bool = False
    #: Why the spectral rules need a ground size to tell it (None: decided per pixel).
    #: Measured on 20 RSVQA-HR 15 cm RGB tiles read without their ground size (at 1 m
    #: pixels) against the same tiles at 0.15 m: water area x9.5, bare soil x4.1, low
    #: vegetation x3.5 (vegetation x0.94, impervious x0.90).
    metric: str | None = None
    #: Its dimension in the spectral chip index (stored indexes depend on this order; None
    #: for a union of dimensions).
    index_dimension: int | None = None
    #: Detectors that answer it by their own rules or model (beside the open-vocabulary
    #: GRAFT/CLIP, which answer any phrase).
    detectors: tuple[str, ...] = ("spectral",)


#: Every canonical class, in the vocabulary's order.
CONCEPT_CLASSES: tuple[ConceptClass, ...] = (
    ConceptClass(
        name="water",
        description="open water (lakes, ponds, rivers, pools).",
        colour="#1f78b4",
        keywords=("water", "river", "lake"),
        synonyms=(
            "water", "water area", "water body", "open water", "surface water", "lake", "pond",
            "river", "stream", "canal", "reservoir", "basin", "sea", "ocean", "bay", "creek",
            "brook", "waterway", "riverbank", "lagoon", "water surface",
        ),
        approximated=(
            "salt pond", "swimming pool", "pool", "fountain", "marina", "harbour", "harbor",
            "dock", "wetland", "marsh", "swamp", "reedbed", "ditch", "drain", "moat",
            "water treatment", "wastewater plant", "mudflat",
        ),
        approximation="it is found as open water only",
        metric=(
            "water bodies are told from shadows and dark roofs by their size in m2 (20-300 m2 and "
            "more) and smoothness over 3 m"
        ),
        index_dimension=0,
    ),
    ConceptClass(
        name="tree",
        description="tree canopy (woods, forests, orchards).",
        colour="#1a9641",
        keywords=("tree", "forest"),
        synonyms=(
            "tree", "tree canopy", "canopy", "wood", "forest", "woodland", "tree cover",
            "tree area", "wooded area", "grove", "tree row", "treeline", "tree line",
        ),
        approximated=(
            "orchard", "hedge", "hedgerow", "plantation", "nature reserve",
        ),
        approximation="it is found as tree canopy",
        metric="tree canopy is told from grass by its texture over 5 m windows",
        index_dimension=1,
    ),
    ConceptClass(
        name="low_vegetation",
        description="grass, meadows, lawns, fields, crops.",
        colour="#b2df8a",
        keywords=("grass", "low veg"),
        synonyms=(
            "low vegetation", "grass", "grass area", "grassland", "lawn", "meadow", "field",
            "farmland", "farm field", "crop", "cropland", "crop field", "pasture", "hay field",
            "prairie", "turf", "green field", "agricultural land", "arable land",
        ),
        approximated=(
            "greenfield", "recreation ground", "village green", "pitch", "sports field",
            "playing field", "football pitch", "football field", "soccer field", "baseball field",
            "golf course", "heath", "playground",
        ),
        approximation="it is found as its grass/low-vegetation cover",
        metric="grass is told from tree canopy by its texture over 5 m windows",
        index_dimension=2,
    ),
    ConceptClass(
        name="vegetation",
        description="any vegetation (``tree`` plus ``low_vegetation``).",
        colour="#66bd63",
        keywords=("vegetation",),
        synonyms=(
            "vegetation", "green area", "green space", "greenery", "plant", "vegetated area",
            "green", "natural area", "scrub", "shrub", "shrubland", "bush",
        ),
        approximated=(
            "park", "garden", "allotment", "cemetery", "graveyard", "vineyard", "plant nursery",
            "nursery", "flowerbed",
        ),
        approximation="it is found as its vegetated ground (trees and grass together)",
        parts=("tree", "low_vegetation"),
    ),
    ConceptClass(
        name="bare_soil",
        description="barren ground, sand, construction sites.",
        colour="#a6611a",
        keywords=("soil", "bare"),
        synonyms=(
            "bare soil", "soil", "barren", "barren land", "bare ground", "bare land", "dirt",
            "sand", "beach", "dune", "earth", "gravel", "bare rock", "rock", "mud",
        ),
        approximated=(
            "construction area", "construction site", "construction", "landfill", "quarry",
            "brownfield", "mine", "excavation",
        ),
        approximation="it is found as bare, unvegetated ground",
        metric="bare soil is told from brown roofs and cars by patches of 30 m2 or more",
        index_dimension=3,
    ),
    ConceptClass(
        name="impervious",
        description="any paved or built surface (roofs, roads, parking, plazas).",
        colour="#525252",
        keywords=("impervious",),
        synonyms=(
            "impervious", "impervious surface", "paved area", "paved surface", "pavement",
            "asphalt", "concrete", "hard surface", "man made surface", "built surface",
            "sealed surface",
        ),
        approximated=(
            "plaza", "town square", "courtyard", "tennis court", "basketball court",
            "sports court", "helipad", "apron", "yard", "schoolyard", "patio", "terrace",
        ),
        approximation="it is found as paved surface",
        index_dimension=4,
    ),
    ConceptClass(
        name="building",
        description="compact impervious objects of building size (roofs).",
        colour="#e31a1c",
        keywords=("building",),
        synonyms=(
            "building", "house", "roof", "rooftop", "structure", "shed", "hut", "cabin", "home",
            "building roof",
        ),
        approximated=(
            "residential building", "commercial building", "industrial building",
            "retail building", "office building", "public building", "civic building",
            "government building", "apartment", "apartment building", "office", "detached house",
            "semidetached house", "bungalow", "townhouse", "dormitory", "shop", "store",
            "supermarket", "mall", "shopping mall", "shopping centre", "shopping center",
            "warehouse", "factory", "barn", "farm building", "garage", "hangar", "hospital",
            "clinic", "school", "university", "college", "kindergarten", "church", "chapel",
            "cathedral", "mosque", "synagogue", "temple", "place of worship", "theatre", "theater",
            "cinema", "museum", "library", "hotel", "bank", "restaurant", "fire station",
            "police station", "town hall", "train station", "station", "greenhouse", "silo",
            "storage tank", "tank", "tower", "sports centre", "sports center", "gym",
        ),
        approximation="the spectral detector cannot tell building use",
        is_object=True,
        metric="buildings are told by shape rules in metres (footprints of 20-40,000 m2)",
        index_dimension=6,
        detectors=("spectral", "buildingnet"),
    ),
    ConceptClass(
        name="road",
        description="elongated impervious strips (roads, paths, railways).",
        colour="#9e9e9e",
        keywords=("road",),
        synonyms=(
            "road", "street", "highway", "motorway", "freeway", "expressway", "avenue",
            "boulevard", "lane", "alley", "road surface", "carriageway", "trunk road",
            "primary road", "secondary road", "tertiary road", "residential road", "service road",
            "roundabout", "intersection", "junction",
        ),
        approximated=(
            "driveway", "path", "footway", "footpath", "sidewalk", "cycleway", "bike path",
            "bicycle path", "bridleway", "track", "trail", "pedestrian", "pedestrian way",
            "pedestrian area", "pedestrian street", "crossing", "crosswalk", "steps", "bridge",
            "railway", "rail", "railroad", "railway track", "train track", "tram", "tramway",
            "subway", "runway", "taxiway", "pier", "boardwalk", "jetty", "causeway",
        ),
        approximation=(
            "it is found as an elongated paved strip; surface material and traffic type are not "
            "told apart"
        ),
        is_object=True,
        metric=(
            "roads are told by shape rules in metres (centre lines of 40 m or more, 2.5-28 m "
            "wide)"
        ),
        index_dimension=5,
    ),
    ConceptClass(
        name="parking",
        description="large, open, non-elongated paved areas that are not roofs.",
        colour="#4d4d4d",
        keywords=("parking",),
        synonyms=(
            "parking", "parking lot", "parking area", "car park", "parking place", "parking space",
            "parking zone",
        ),
        approximated=(
            "parking garage", "multistorey car park", "bus station", "bus depot",
        ),
        approximation="it is found as a large open paved area",
        is_object=True,
        metric=(
            "parking lots are told by shape rules in metres (open paved areas of 150 m2 or more)"
        ),
        index_dimension=7,
    ),
    ConceptClass(
        name="built_up",
        description=(
            "developed land use (residential/commercial/industrial areas), measured as land with "
            "a high density of impervious surface."
        ),
        colour="#ff7f00",
        keywords=(),
        synonyms=(
            "built up", "built up area", "built up land", "urban area", "urban", "developed area",
            "developed land", "settlement", "city", "town", "downtown",
        ),
        approximated=(
            "residential area", "residential", "residential land", "housing", "neighbourhood",
            "neighborhood", "suburb", "village", "hamlet", "commercial area", "commercial",
            "retail area", "retail", "business area", "industrial area", "industrial",
            "industrial zone", "industrial estate", "military area", "military", "religious area",
            "farmyard", "farm", "depot", "port", "railway yard", "rail yard", "campus",
            "school ground", "hospital ground", "stadium", "airport", "aerodrome", "power plant",
            "substation", "institutional area", "education area", "leisure area",
        ),
        approximation="land use is measured as land densely covered by impervious surface",
        metric="built-up land is impervious density over 30 m blocks in patches of 400 m2 or more",
        index_dimension=8,
    ),
)

#: Class name -> its row.
BY_NAME: dict[str, ConceptClass] = {c.name: c for c in CONCEPT_CLASSES}
#: Canonical class names, in table order.
SUPPORTED_CLASSES: tuple[str, ...] = tuple(BY_NAME)
#: Classes that are objects (counted as instances) rather than land cover.
OBJECT_CLASSES: frozenset[str] = frozenset(c.name for c in CONCEPT_CLASSES if c.is_object)
#: Classes whose spectral rules decide in metres what the class is, so that they cannot be
#: told on an image without a ground size (refused there: NoGroundSize), and why. The
#: others are decided pixel by pixel from band indices; their metre sizes only fill holes
#: and drop specks, which are then taken in pixels.
METRIC_CLASSES: dict[str, str] = {c.name: c.metric for c in CONCEPT_CLASSES if c.metric}
#: The spectral chip index's dimensions, in their stored order.
INDEX_DIMENSIONS: tuple[str, ...] = tuple(
    c.name for c in sorted((c for c in CONCEPT_CLASSES if c.index_dimension is not None),
                           key=lambda c: c.index_dimension or 0)
)


def answered_by(detector: str) -> tuple[str, ...]:
    """The classes ``detector`` answers by its own rules or model (table order)."""
    return tuple(c.name for c in CONCEPT_CLASSES if detector in c.detectors)
