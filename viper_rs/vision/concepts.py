"""The spectral detector's vocabulary: concept words -> one canonical land-cover class.

The vocabulary is data (``VOCABULARY``), built from the concept table
(:data:`viper_rs.core.classes.CONCEPT_CLASSES`): each entry maps a normalised phrase to a
canonical class and, when the class only approximates the phrase, the reason. A query is
normalised (case, whitespace, hyphens, a leading article, plurals, size/shape words) and
looked up; ``resolve_concept`` returns the class plus notes that record every
approximation, so answers can say what was really measured.
"""

from __future__ import annotations

import re

from viper_rs.core.classes import CONCEPT_CLASSES, SUPPORTED_CLASSES
from viper_rs.core.errors import UnknownConceptError
from viper_rs.core.vocabulary import (
    CONCEPT_ARTICLES,
    CONCEPT_SHAPE_WORDS,
    RELATION_WORDS,
    SIZE_WORDS,
    suffix_singular,
)

#: Normalised phrase -> (canonical class, approximation reason or None).
VOCABULARY: dict[str, tuple[str, str | None]] = {
    phrase: (c.name, reason)
    for c in CONCEPT_CLASSES
    for phrases, reason in ((c.synonyms, None), (c.approximated, c.approximation))
    for phrase in phrases
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
