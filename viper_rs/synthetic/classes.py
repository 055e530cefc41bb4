"""The object classes a synthetic scene can contain (the names its ground truth uses)."""

from __future__ import annotations

RESIDENTIAL = "residential building"
COMMERCIAL = "commercial building"
ROAD = "road"
WATER = "water area"
TREE = "tree"
GRASS = "grass area"
PARKING = "parking"
#: Every class, in the order scenes list them.
CLASSES = (RESIDENTIAL, COMMERCIAL, ROAD, WATER, TREE, GRASS, PARKING)
BUILDING_CLASSES = (RESIDENTIAL, COMMERCIAL)
