"""One factory for detectors: by name, or ``auto`` (the best one whose weights are present)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from viper_rs.core.config import DETECTOR_NAMES, ORACLE_DETECTOR, Settings
from viper_rs.core.detector import Detector
from viper_rs.core.errors import ConfigError
from viper_rs.core.geo import GeoImage

if TYPE_CHECKING:
    from viper_rs.vision.buildings.detector import BuildingDetector
    from viper_rs.vision.dense import DenseDetector

log = logging.getLogger(__name__)

#: The detectors :func:`build_detector` makes by name: every detector but the oracle.
NAMED_DETECTORS: tuple[str, ...] = tuple(n for n in DETECTOR_NAMES if n != ORACLE_DETECTOR)


def build_detector(name: str, settings: Settings | None = None) -> Detector:
    """Create a detector. ``auto`` picks GRAFT, then CLIP, when their weights are configured
    or downloaded, else the weight-free spectral detector, and answers building concepts
    with the learned building model (a :class:`~viper_rs.vision.routed.RoutedDetector`)
    when its weights load; the result's ``choice_note`` says why. Named detectors
    (``spectral``, ``graft``, ``clip``) answer every concept themselves."""
    from viper_rs.core.weights import auto_detector, auto_reason, resolve_settings

    name = (name or "auto").lower()
    settings = settings or Settings()
    if name in ("auto", "graft", "clip"):
        settings = resolve_settings(settings)  # fill unset checkpoints from the cache dir
    note = None
    buildings = None
    if name == "auto":
        name = auto_detector(settings)
        buildings, error = build_auto_buildings(settings)
        note = f"detector {auto_reason(settings, building_error=error)}"
    if name == "spectral":
        from viper_rs.vision.spectral import SpectralDetector

        det: Detector = SpectralDetector(settings)
    elif name in ("graft", "clip"):
        det = build_dense_detector(name, settings)
    elif name == ORACLE_DETECTOR:
        raise ConfigError("the oracle detector needs a synthetic scene; build OracleDetector(scene)")
    else:
        raise ConfigError(f"unknown detector {name!r}; choose one of {', '.join(NAMED_DETECTORS)}")
    if buildings is not None:
        from viper_rs.vision.routed import RoutedDetector

        det = RoutedDetector(det, buildings)
    det.choice_note = note
    return det


def image_problem(image: GeoImage, detector: str, settings: Settings) -> str | None:
    """Why detector ``detector`` (``auto`` as it resolves with ``settings``) cannot answer
    questions about ``image`` because of its bands, None when it can: checked when the
    image is opened, before any question."""
    name = detector or "auto"
    resolved = name
    if name == "auto":
        from viper_rs.core.weights import auto_detector

        resolved = auto_detector(settings)
    if resolved == "spectral":
        from viper_rs.vision.spectral.maps import band_problem
    elif resolved in ("graft", "clip"):
        from viper_rs.vision.embedder import band_problem
    else:
        return None
    problem = band_problem(image)
    return f"{problem} (detector auto -> {resolved})" if problem and name == "auto" else problem


def build_building_detector(settings: Settings) -> BuildingDetector:
    """The learned building detector with its weights loaded now (``building_checkpoint``,
    else the shipped file); CheckpointError when they are missing, truncated or of
    another architecture."""
    from viper_rs.vision.build import resolve_device
    from viper_rs.vision.buildings.detector import BuildingDetector

    det = BuildingDetector(settings, device=str(resolve_device(settings.device)))
    det.load()
    return det


def build_auto_buildings(settings: Settings) -> tuple[BuildingDetector | None, str | None]:
    """``(detector, None)`` when ``auto`` answers buildings with the learned model, else
    ``(None, why not)``. Turned off, or shipped weights missing: ``(None, None)``
    (:func:`~viper_rs.core.weights.auto_reason` says why itself); shipped weights that do not
    load: ``(None, the loader's message)``, since the model is optional for ``auto``. A
    configured ``building_checkpoint`` is what the user asked for: when it is missing,
    truncated or of another architecture, CheckpointError is raised."""
    from viper_rs.core.weights import building_weights

    if not settings.building_model:
        return None, None
    if settings.building_checkpoint is not None:
        from viper_rs.core.overrides import setting_hint, setting_source
        from viper_rs.vision.build import CheckpointError

        try:
            return build_building_detector(settings), None
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc} (the building model weights, set by "
                f"{setting_source('building_checkpoint')}: fix the path, unset it to use the "
                f"shipped weights, or {setting_hint('building_model', '0')} to turn the model "
                "off)") from None
    path, _ = building_weights(settings)
    if path is None:
        return None, None
    try:
        det = build_building_detector(settings.model_copy(update={"building_checkpoint": path}))
    except ConfigError as exc:  # CheckpointError, or a device that cannot be used
        log.warning("auto: the learned building model is not used: %s", exc)
        return None, f"the shipped building model weights do not load ({exc})"
    return det, None


def build_dense_detector(name: str, settings: Settings) -> DenseDetector:
    """A GRAFT or CLIP DenseDetector with its text tower, caches and (optional) SAM."""
    from viper_rs.core.weights import check_configured
    from viper_rs.vision.build import (
        graft_checkpoint,
        load_image_tower,
        load_settings_clip,
        resolve_device,
    )
    from viper_rs.vision.cache import FeatureCache
    from viper_rs.vision.calibration import Calibration
    from viper_rs.vision.dense import DenseDetector
    from viper_rs.vision.embedder import Embedder
    from viper_rs.vision.text import TextEncoder

    if name == "graft":
        graft_checkpoint(settings)  # fail before loading anything without one
    # A configured path that is not a file: say which setting, before loading anything.
    check_configured(settings, [name] * (name != "clip") + ["clip"] + ["sam"] * settings.sam)
    calibration = Calibration.load(settings.calibration_file)
    device = resolve_device(settings.device)
    disk = settings.cache_dir / "features" if settings.disk_cache else None
    cache = FeatureCache(disk, settings.memory_cache_items)
    clip = load_settings_clip(settings, device)
    text = TextEncoder(*clip, device, cache)
    encoder = load_image_tower(name, settings, device, clip=clip)
    sam = None
    if settings.sam and settings.sam_checkpoint is not None:
        from viper_rs.vision.sam import SamRefiner

        sam = SamRefiner(settings.sam_checkpoint, settings, cache, device)
    log.info("built %s detector on %s (sam: %s)", name, device, sam is not None)
    return DenseDetector(name, Embedder(encoder, settings, cache), text, settings,
                         calibration, sam)
