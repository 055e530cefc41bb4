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
