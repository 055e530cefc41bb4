"""The English words the project reads in questions and concept phrases, in one place.

Size, shape and article words, the spatial relation phrases, the English plural tables
and the two singular readings. Every other module imports them from here (bottom layer:
this module imports nothing of the project).

The readers of these words do not all accept the same ones. Each difference is a named
set below with the reason it exists; they are kept as they are because merging them would
change answers (for example, ``find("big building")`` is today the concept "big building",
which the spectral vocabulary reads as "building" with a note, while the rule planner reads
"big" in a question as the size filter "large"). Unifying them is a behaviour change of its
own.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- size and shape

#: The size classes, smallest first: the values of ``filter_size`` (the synthetic scenes
#: draw question modifiers in this order).
SIZE_WORDS: tuple[str, ...] = ("small", "medium", "large")
#: The shape classes: the values of ``filter_shape`` (drawn in this order after the sizes).
SHAPE_WORDS: tuple[str, ...] = ("square", "rectangular", "circular")
#: Other words for a shape class that ``find()`` phrases accept (:func:`split_modifiers`).
SHAPE_ALIASES: dict[str, str] = {"round": "circular", "rectangle": "rectangular", "squared": "square"}

#: The rule planner's size words in questions -> the filter value (:mod:`planning.rules`).
#: Wider than ``find()``'s: "big" and "medium-sized" become filters only in questions.
RULE_SIZE_WORDS: dict[str, str] = {
    **{w: w for w in SIZE_WORDS}, "big": "large", "medium-sized": "medium", "mid-sized": "medium",
}
#: The rule planner's shape words in questions -> the filter value. Narrower than
#: ``find()``'s: of the aliases only "round" ("rectangle"/"squared" stay in the noun, where
#: ``find()`` then reads them).
RULE_SHAPE_WORDS: dict[str, str] = {**{w: w for w in SHAPE_WORDS}, "round": "circular"}

#: Shape words the detectors' concept vocabulary (:mod:`vision.concepts`) drops from the
#: front of a phrase, with a note naming the word: the shape classes plus "round" (it never
#: learnt the other aliases).
CONCEPT_SHAPE_WORDS: tuple[str, ...] = (*SHAPE_WORDS, "round")

# --------------------------------------------------------------------------- articles

#: Determiners dropped in front of an object phrase: by ``find()`` (:func:`split_modifiers`)
#: and by the rule planner's object phrases.
ARTICLES: tuple[str, ...] = ("a", "an", "the", "some", "any")
#: Determiners the detectors' concept vocabulary drops (``normalize_phrase``): also "all",
#: so a detector asked for "all buildings" reads "buildings". ``find()`` passes "all" on to
#: the detector with the concept, and the rule planner reads it only where a question form
#: names it (e.g. "Count all X").
CONCEPT_ARTICLES: tuple[str, ...] = (*ARTICLES, "all")

# --------------------------------------------------------------------------- relations

#: Spatial relation tool -> the phrases that mean it (the RSVQA-HR phrase first).
RELATIONS: dict[str, tuple[str, ...]] = {
    "left_of": ("on the left of", "to the left of", "at the left of", "left of"),
    "right_of": ("on the right of", "to the right of", "at the right of", "right of"),
    "above": ("at the top of", "above"),
    "below": ("at the bottom of", "below"),
    "next_to": ("next to", "adjacent to", "beside"),
}

#: Single words that mark a relation or a clause: the detectors' concept vocabulary never
#: reads one concept across them ("red roof" is a roof; "roof next to a road" is not one
#: concept).
RELATION_WORDS: frozenset[str] = frozenset({
    "of", "to", "at", "on", "in", "near", "with", "without", "and", "or", "than", "next",
    "left", "right", "top", "bottom", "above", "below", "beside", "between", "from", "by",
    "not", "no", "under", "over", "behind",
})

# --------------------------------------------------------------------------- plural tables

#: Words that read like English plurals but are singular or invariant.
INVARIANT_NOUNS: frozenset[str] = frozenset("""
    grass glass gas water sheep deer fish aircraft spacecraft hovercraft series species news
    means chassis corps headquarters barracks crossroads works gasworks waterworks ironworks
    steelworks brickworks sewage police cattle livestock equipment premises gallows lens bias
    canvas atlas alias data media sports athletics gymnastics physics
""".split())

#: Irregular plurals.
IRREGULAR_PLURALS: dict[str, str] = {
    "people": "person", "persons": "person", "children": "child", "feet": "foot",
    "teeth": "tooth", "geese": "goose", "mice": "mouse", "lice": "louse", "oxen": "ox",
    "criteria": "criterion", "phenomena": "phenomenon", "cacti": "cactus", "fungi": "fungus",
    "nuclei": "nucleus", "radii": "radius", "indices": "index", "matrices": "matrix",
    "vertices": "vertex", "quizzes": "quiz", "analyses": "analysis", "oases": "oasis",
    "crises": "crisis", "theses": "thesis", "women": "woman", "men": "man",
}

#: -ves plurals whose singular ends in -f/-fe (others, like "groves", just drop the s).
VES_PLURALS: dict[str, str] = {
    "leaves": "leaf", "shelves": "shelf", "wolves": "wolf", "halves": "half", "calves": "calf",
    "knives": "knife", "lives": "life", "wives": "wife", "loaves": "loaf", "thieves": "thief",
    "sheaves": "sheaf", "scarves": "scarf", "wharves": "wharf", "elves": "elf",
    "selves": "self", "hooves": "hoof", "dwarves": "dwarf",
}

#: Singulars ending in -s whose plural adds -es (buses -> bus).
S_NOUNS: frozenset[str] = frozenset("""
    bus gas campus virus bonus census circus status walrus octopus cactus chorus corpus canvas
    atlas alias lens iris terminus apparatus plus
""".split())

#: Singulars ending in -ie (movies -> movie, not movy).
IE_NOUNS: frozenset[str] = frozenset("""
    prairie movie cookie pie tie lie calorie zombie rookie birdie genie goalie collie brownie
    smoothie eyrie
""".split())

#: Singulars ending in -che/-she/-xe (niches -> niche, not nich).
E_NOUNS: frozenset[str] = frozenset("niche cache avalanche quiche moustache cliche axe".split())

#: -oes plurals whose singular ends in -o (others, like "shoes", just drop the s).
OES_PLURALS: frozenset[str] = frozenset("""
    tomatoes potatoes volcanoes heroes echoes torpedoes vetoes mosquitoes buffaloes dominoes
    tornadoes cargoes mangoes grottoes haloes
""".split())

#: -men words that are not plurals of -man.
MEN_SINGULARS: frozenset[str] = frozenset("specimen abdomen omen stamen regimen hymen".split())

#: Endings :func:`suffix_singular` never strips an "s" from (glass, campus, tennis).
_NO_STRIP = ("ss", "us", "is")

# --------------------------------------------------------------------------- functions


def query_key(query: str) -> str:
    """A concept query as the detectors' caches and the answer's wording key it: lower case,
    single-spaced, no leading or trailing space (``" Water  Area"`` -> ``"water area"``)."""
    return " ".join(query.lower().split())


def split_modifiers(phrase: str) -> tuple[str, str | None, str | None]:
    """Split the leading articles, size and shape words off a lower-case phrase:
    ``"a small round water area"`` -> (``"water area"``, ``"small"``, ``"circular"``).

    Reads :data:`ARTICLES`, :data:`SIZE_WORDS`, :data:`SHAPE_WORDS` and
    :data:`SHAPE_ALIASES` (an alias gives its shape class); when a kind appears twice the
    last word wins. The rest is single-spaced and may be empty.
    """
    words = phrase.split()
    size = shape = None
    i = 0
    while i < len(words) and (words[i] in ARTICLES or words[i] in SIZE_WORDS
                              or words[i] in SHAPE_WORDS or words[i] in SHAPE_ALIASES):
        w = words[i]
        i += 1
        if w in SIZE_WORDS:
            size = w
        elif w in SHAPE_WORDS or w in SHAPE_ALIASES:
            shape = SHAPE_ALIASES.get(w, w)
    return " ".join(words[i:]), size, shape


def singular(word: str) -> str:
    """Singular of one lower-case English noun; singular and invariant words come back as is.

    Covers the RSVQA-HR vocabulary, including its mechanical plurals ("cemeterys",
    "worships"), and the regular English patterns (-ies, -ves, -es, -s, -men, irregulars).
    The rule planner's reading of question nouns.
    """
    w = word
    if w in INVARIANT_NOUNS or len(w) <= 2:
        return w
    if w in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[w]
    if w in VES_PLURALS:
        return VES_PLURALS[w]
    if w.endswith("women"):
        return w[:-5] + "woman"
    if w.endswith("men") and w not in MEN_SINGULARS and len(w) > 4:
        return w[:-3] + "man"
    if w.endswith(_NO_STRIP):
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-1] if w[:-1] in IE_NOUNS else w[:-3] + "y"
    if w.endswith("ies"):  # ties, pies, lies
        return w[:-1]
    if w.endswith("sses") or w.endswith("zzes"):
        return w[:-2]
    if w.endswith("ses") and w[:-2] in S_NOUNS:
        return w[:-2]
    if w.endswith(("xes", "ches", "shes")):
        return w[:-1] if w[:-1] in E_NOUNS else w[:-2]
    if w.endswith("oes"):
        return w[:-2] if w in OES_PLURALS else w[:-1]
    if w.endswith("s"):
        return w[:-1]
    return w


def singular_phrase(phrase: str) -> str:
    """Singular of a noun phrase: its head word, and the word before "of" when there is one.

    "residential buildings" -> "residential building", "places of worship" and the RSVQA
    form "place of worships" -> "place of worship", "water areas" -> "water area".
    """
    words = phrase.split()
    if not words:
        return phrase
    heads = {len(words) - 1}
    if "of" in words[1:-1]:
        heads.add(words.index("of") - 1)
    return " ".join(singular(w) if i in heads else w for i, w in enumerate(words))


def suffix_singular(word: str) -> str:
    """One plural -> singular suffix step without exception tables (enough for land-cover
    nouns): the detectors' reading of a concept's last word (spectral vocabulary,
    calibration thresholds, oracle).

    It differs from :func:`singular` on words those tables cover, e.g. "prairies" ->
    "prairy" (not "prairie"), "buses" -> "buse", "leaves" -> "leave", "sports" -> "sport";
    a detector asked for such a word reads it as today (tests/test_vocabulary.py lists
    them).
    """
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(_NO_STRIP):
        return word[:-1]
    return word
