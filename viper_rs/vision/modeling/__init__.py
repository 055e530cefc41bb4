"""Image towers that give per-patch embeddings in CLIP's text space (GRAFT, dense CLIP)."""

from viper_rs.vision.modeling.clip_dense import CLIP_MEAN, CLIP_STD, ClipDenseEncoder
from viper_rs.vision.modeling.graft import GraftConfig, GraftPixelModel

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipDenseEncoder", "GraftConfig", "GraftPixelModel"]
