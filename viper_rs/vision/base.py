"""The detector protocol and the ScoreMap it returns (defined in :mod:`viper_rs.core.detector`,
below the tools that call detectors)."""

from viper_rs.core.detector import (
    Detector,
    ImageEmbedder,
    MaskRefiner,
    PatchFeatures,
    ScoreMap,
    Stages,
    TextEmbedder,
)

__all__ = [
    "Detector", "ImageEmbedder", "MaskRefiner", "PatchFeatures", "ScoreMap", "Stages",
    "TextEmbedder",
]
