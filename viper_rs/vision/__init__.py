"""Detectors (score maps for text queries), connected components and region building."""

from viper_rs.vision.base import Detector, ScoreMap

__all__ = ["Detector", "ScoreMap"]
