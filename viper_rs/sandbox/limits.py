"""What a sandboxed program may use and what it gives back: :class:`Limits`, :class:`SandboxResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from viper_rs.core.config import Settings
from viper_rs.core.errors import ConfigError, ViperError

__all__ = ["Limits", "SandboxResult"]


def _setting(name: str) -> Any:
    """The default of a ``Settings`` field (the sandbox limits' defaults live there)."""
    return Settings.model_fields[name].default


@dataclass
class Limits:
    """Resource limits for one program; the defaults are those of ``Settings.sandbox_*``."""

    wall_s: float = _setting("sandbox_wall_s")  # wall clock per program; worker killed after
    cpu_s: float = _setting("sandbox_cpu_s")  # CPU seconds per program (RLIMIT_CPU in worker)
    memory_mb: int = _setting("sandbox_memory_mb")  # address-space limit (RLIMIT_AS)
    # captured print() output; exceeding -> SandboxError
    max_output_chars: int = _setting("sandbox_max_output_chars")
    max_tool_calls: int = _setting("sandbox_max_tool_calls")  # exceeding -> SandboxError
    max_source_chars: int = 20_000  # longer program -> ValidationError
    max_result_chars: int = 1_000_000  # serialized return value larger -> SandboxError

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Limits.{name} must be a positive number, got {value!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits ``settings`` sets (its ``sandbox_*`` fields; the others default)."""
        return cls(
            wall_s=settings.sandbox_wall_s,
            cpu_s=settings.sandbox_cpu_s,
            memory_mb=settings.sandbox_memory_mb,
            max_output_chars=settings.sandbox_max_output_chars,
            max_tool_calls=settings.sandbox_max_tool_calls,
        )

    @property
    def max_message_bytes(self) -> int:
        """Largest message the parent accepts from a worker."""
        return self.max_result_chars + 12 * self.max_output_chars + 65_536

    def worker_limits(self) -> dict[str, Any]:
        """The per-program limits sent to a worker."""
        return {
            "cpu_s": self.cpu_s,
            "max_output_chars": self.max_output_chars,
            "max_tool_calls": self.max_tool_calls,
            "max_result_chars": self.max_result_chars,
            "max_message_bytes": self.max_message_bytes,
        }


@dataclass
class SandboxResult:
    """What a program returned (or why it failed), its output and its cost."""

    value: Any
    stdout: str
    error: ViperError | None
    wall_s: float
    cpu_s: float
    tool_calls: int

    @property
    def ok(self) -> bool:
        """True when the program returned a value."""
        return self.error is None
