"""What one question may cost: the memory and time budget of a question about one image
(``image_max_*`` settings) or about a region of many tiles (``region_max_*``)."""

from __future__ import annotations

from dataclasses import dataclass

from viper_rs.core.config import Settings
from viper_rs.core.units import bytes_text, duration_text


@dataclass(frozen=True)
class Budget:
    """The most one question may cost: peak memory (bytes; for a region, every process of
    the run) and wall time (seconds)."""

    memory_bytes: int
    seconds: float

    @classmethod
    def for_image(cls, settings: Settings) -> Budget:
        """``image_max_memory_mb`` and ``image_max_time_s`` of ``settings``."""
        return cls(memory_bytes=int(settings.image_max_memory_mb) * 1_000_000,
                   seconds=float(settings.image_max_time_s))

    @classmethod
    def for_region(cls, settings: Settings) -> Budget:
        """``region_max_memory_mb`` and ``region_max_time_s`` of ``settings``."""
        return cls(memory_bytes=int(settings.region_max_memory_mb) * 1_000_000,
                   seconds=float(settings.region_max_time_s))

    def describe(self) -> str:
        """``"12.0 GB and 1 h"``."""
        return f"{bytes_text(self.memory_bytes)} and {duration_text(self.seconds)}"
