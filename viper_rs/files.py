"""Checks on input files, shared by images, checkpoints and other inputs read from disk."""

from __future__ import annotations

from pathlib import Path


def require_file(
    path: Path, error: type[Exception], kind: str = "a file", name: str | None = None
) -> Path:
    """``path`` when it is an existing, non-empty file; otherwise ``error`` saying it does
    not exist, is a directory (``kind`` names what it should be, e.g. "an image") or is
    empty. Messages start with ``name`` (default: the path)."""
    label = str(path) if name is None else name
    if not path.exists():
        raise error(f"{label}: no such file")
    if path.is_dir():
        raise error(f"{label}: is a directory, not {kind}")
    if path.stat().st_size == 0:
        raise error(f"{label}: file is empty")
    return path
