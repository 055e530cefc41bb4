"""One factory for detectors: by name, or ``auto`` (the best one whose weights are present)."""

from __future__ import annotations

import logging
from typing import Any

from viper_rs.config import Settings
from viper_rs.errors import ConfigError

log = logging.getLogger(__name__)

DETECTOR_NAMES = ("auto", "spectral", "graft", "clip")


def build_detector(name: str, settings: Settings | None = None) -> Any:
    """Create a detector. ``auto`` picks GRAFT, then CLIP, when their weights are configured
    or downloaded, else the weight-free spectral detector; the result's ``choice_note``
    says why."""
    from viper_rs.weights import auto_detector, auto_reason, resolve_settings

    name = (name or "auto").lower()
    settings = settings or Settings()
    if name in ("auto", "graft", "clip"):
        settings = resolve_settings(settings)  # fill unset checkpoints from the cache dir
    note = None
    if name == "auto":
        name = auto_detector(settings)
        note = f"detector {auto_reason(settings)}"
    if name == "spectral":
        from viper_rs.vision.spectral import SpectralDetector

        det: Any = SpectralDetector(settings)
    elif name in ("graft", "clip"):
        det = build_dense_detector(name, settings)
    elif name == "oracle":
        raise ConfigError("the oracle detector needs a synthetic scene; build OracleDetector(scene)")
    else:
        raise ConfigError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    det.choice_note = note
    return det


def build_dense_detector(name: str, settings: Settings) -> Any:
    """A GRAFT or CLIP DenseDetector with its text tower, caches and (optional) SAM."""
    from viper_rs.vision.build import load_clip, load_graft, resolve_device
    from viper_rs.vision.cache import FeatureCache
    from viper_rs.vision.calibration import Calibration
    from viper_rs.vision.dense import DenseDetector
    from viper_rs.vision.embedder import Embedder
    from viper_rs.vision.text import TextEncoder

    if name == "graft" and settings.graft_checkpoint is None:
        raise ConfigError(
            "the graft detector needs a GRAFT checkpoint: pass --graft-checkpoint PATH or set "
            "VIPER_RS_GRAFT_CHECKPOINT (README 'Model weights' says where to get it)"
        )
    calibration = Calibration.load(settings.calibration_file)
    device = resolve_device(settings.device)
    disk = settings.cache_dir / "features" if settings.disk_cache else None
    cache = FeatureCache(disk, settings.memory_cache_items)
    clip, tokenizer, clip_id = load_clip(
        settings.clip_model, settings.clip_checkpoint, settings.clip_pretrained, device
    )
    text = TextEncoder(clip, tokenizer, clip_id, device, cache)
    if name == "graft":
        encoder: Any = load_graft(settings.graft_checkpoint, device)
    else:
        from viper_rs.vision.modeling.clip_dense import ClipDenseEncoder

        encoder = ClipDenseEncoder(clip, clip_id)
    sam = None
    if settings.sam and settings.sam_checkpoint is not None:
        from viper_rs.vision.sam import SamRefiner

        sam = SamRefiner(settings.sam_checkpoint, settings, cache, device)
    log.info("built %s detector on %s (sam: %s)", name, device, sam is not None)
    return DenseDetector(name, Embedder(encoder, settings, cache), text, settings,
                         calibration, sam)
