"""Typed errors. Every failure the agent can report maps to one ``type`` string."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """First line of an error's message (its type name when it has none); rasterio's
    "See previous exception" gives way to GDAL's reason."""
    if exc.__cause__ is not None and "previous exception" in str(exc):
        exc = exc.__cause__
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class ViperError(Exception):
    """Base class; ``type`` is the name reported in ``Answer.error``."""

    type: str = "error"

    def to_dict(self) -> dict[str, str]:
        """The ``{type, message}`` form used in answers."""
        return {"type": self.type, "message": str(self)}


class ImageError(ViperError):
    """An image could not be read or has unusable content (missing, corrupt, no bands...)."""

    type = "image"


class ImageTooLarge(ImageError):
    """An image (or one request about it) would cost more memory or time than its budget,
    or an allocation failed while it was read or analysed; the message gives the estimate,
    the budget and the ways out."""

    type = "too_large"


class NoGroundSize(ImageError):
    """A question needs metres (a size, length or distance rule) about an image whose
    pixels have no ground size (no CRS, no ``--gsd``); the message names the image and
    says to pass ``--gsd M``."""

    type = "no_ground_size"


class InputError(ViperError):
    """A non-image input (questions file, program file, argument) is missing or unusable."""

    type = "input"


class PlanningError(ViperError):
    """No program could be written for the question (outside the grammar, LLM failure...)."""

    type = "planning"


class ValidationError(ViperError):
    """A program failed static validation (forbidden syntax, names, attributes)."""

    type = "validation"


class SandboxError(ViperError):
    """The program failed while running in the sandbox (exception, resource limit)."""

    type = "sandbox"


class SandboxTimeout(SandboxError):
    """The program exceeded its wall-clock or CPU budget and was killed."""

    type = "timeout"


class ToolError(ViperError):
    """A tool call was rejected (bad arguments) or failed."""

    type = "tool"


class UnknownConceptError(ToolError):
    """The detector has no mapping for a concept word."""

    type = "tool"


class ConfigError(ViperError):
    """Bad settings (unknown detector/planner name, bad value)."""

    type = "config"
