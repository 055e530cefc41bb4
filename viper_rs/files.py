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


#: Most bytes of a small text input read whole: source lists, run manifests, index
#: descriptions (refused past it, before reading).
SMALL_FILE_MAX_BYTES = 1_000_000
#: Deepest nesting of arrays and objects accepted in a JSON input (viper-rs writes flat
#: ones; deeper nesting is refused before parsing, never a RecursionError).
JSON_MAX_DEPTH = 64


def read_small_text(path: Path, error: type[Exception], what: str,
                    limit: int = SMALL_FILE_MAX_BYTES, inside: Path | None = None) -> str:
    """The UTF-8 text of a small input file (``what`` names it in messages); ``error``
    when it does not exist, is not a regular file (a FIFO, device or socket is never
    opened), is over ``limit`` bytes, or (with ``inside``) resolves, through links,
    outside the folder ``inside``."""
    import os
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        raise error(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path}: not a regular file (a folder, FIFO, device or socket); "
                    "give a regular file")
    if inside is not None:
        real, folder = Path(path).resolve(), Path(inside).resolve()
        if not real.is_relative_to(folder):
            raise error(f"{what} {path}: links outside its folder {folder} (to {real}); "
                        "it must be a file inside the folder")
    if st.st_size > limit:
        raise error(f"{what} {path}: {st.st_size:,} bytes; at most {limit:,} are read")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise error(f"{what} {path}: over {limit:,} bytes; at most {limit:,} are read")
    return data.decode("utf-8", errors="replace")


def loads_json(text: str, error: type[Exception], what: str,
               max_depth: int = JSON_MAX_DEPTH) -> object:
    """``text`` parsed as JSON; ``error`` naming ``what`` when it is malformed or nested
    deeper than ``max_depth`` (checked before parsing)."""
    import json
    import re

    depth = 0
    for ch in re.sub(r'"(?:\\.|[^"\\])*"', "", text):
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                raise error(f"{what}: JSON nested deeper than {max_depth} levels; not a file "
                            "viper-rs wrote")
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what}: not valid JSON ({str(exc)[:200]})") from None
