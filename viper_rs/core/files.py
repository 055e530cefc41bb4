"""Checks on input files, shared by images, checkpoints and other inputs read from disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: What a path that is not a regular file is, by ``stat`` mode test.
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def special_kind(mode: int) -> str | None:
    """What a non-regular file is (``"a FIFO (named pipe)"``, ``"a directory"``...) from its
    ``st_mode``; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def require_file(
    path: Path, error: type[Exception], kind: str = "a file", name: str | None = None
) -> Path:
    """``path`` when it is an existing, non-empty regular file (symlinks followed); otherwise
    ``error`` saying it does not exist, is a directory, FIFO, device or socket (``kind``
    names what it should be, e.g. "an image") or is empty. Only ``os.stat`` looks at it, so
    a FIFO cannot block. Messages start with ``name`` (default: the path)."""
    label = str(path) if name is None else name
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(f"{label}: a link to a missing file") from None
        raise error(f"{label}: no such file") from None
    except OSError as exc:
        raise error(f"{label}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    what = special_kind(st.st_mode)
    if what is not None:
        link = " a link to" if os.path.islink(path) else ""
        raise error(f"{label}: is{link} {what}, not {kind}")
    if st.st_size == 0:
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
