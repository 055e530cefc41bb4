"""Seeded synthetic aerial scenes with exact ground truth, and RSVQA-HR style questions.

``make_scene(seed)`` draws a 4-band (R, G, B, NIR) image in a projected CRS (UTM 18N,
true metres) with roads, residential and commercial buildings, water areas, woods, grass
areas and parking lots. Every object has a polygon in the image CRS, its rasterised mask
and an instance id; objects never touch (at least three empty pixels between any two,
so 8-connected components of the label image are exactly the objects).

Each object's size class (``tools.measures.size_class``) and shape class
(``tools.measures.shape_class``) are checked on its rasterised mask while the scene is
built; objects whose area falls within 15 % of a size threshold, or whose shape class is
not the intended one, are redrawn, so the classes are unambiguous.

``make_questions(scene)`` writes questions with the RSVQA-HR templates and grammar and
answers them with the tools' semantics: presence = at least one object, count = number
of objects, comparison = counts compared, area = union of the rasterised masks in true
ground m2. Relations reuse ``tools.spatial`` (centroids for left/right/top/bottom, mask
distance within ``settings.next_to_m`` for "next to"); questions whose relation is within
one pixel of a tie are not asked.

One idea per module: :mod:`~viper_rs.synthetic.scene` (the scene types and builder),
:mod:`~viper_rs.synthetic.questions` (the question writer and its exact answers),
:mod:`~viper_rs.synthetic.paint` (the pixels: surfaces, cast shadows, camera blur and noise,
as a ~1 m camera records them) and :mod:`~viper_rs.synthetic.classes` (the class names).
"""

from viper_rs.synthetic.classes import (
    BUILDING_CLASSES,
    CLASSES,
    COMMERCIAL,
    GRASS,
    PARKING,
    RESIDENTIAL,
    ROAD,
    TREE,
    WATER,
)
from viper_rs.synthetic.questions import (
    QUESTION_CONCEPTS,
    QUESTION_TYPES,
    RELATIONS,
    SceneQuestion,
    answer_matches,
    make_questions,
)
from viper_rs.synthetic.scene import SIZE_MARGIN, Scene, SceneObject, make_scene

__all__ = [
    "BUILDING_CLASSES",
    "CLASSES",
    "COMMERCIAL",
    "GRASS",
    "PARKING",
    "QUESTION_CONCEPTS",
    "QUESTION_TYPES",
    "RELATIONS",
    "RESIDENTIAL",
    "ROAD",
    "SIZE_MARGIN",
    "TREE",
    "WATER",
    "Scene",
    "SceneObject",
    "SceneQuestion",
    "answer_matches",
    "make_questions",
    "make_scene",
]
