"""Safe terminal text: program-controlled strings made printable without side effects.

A program's answer, error message or notes may hold terminal control sequences (ESC,
OSC, a carriage return that rewrites a line), bidi overrides that reorder what is shown,
or lone surrogates that cannot be encoded. :func:`safe_text` escapes all of them, so the
text can neither move the cursor, fake a line of output nor raise when printed.

Bottom layer: imports nothing of the project.
"""

from __future__ import annotations

import codecs
import re

__all__ = ["cut", "safe_text"]

# C0 controls (newline included: a line break could fake an "A: ..." line), DEL and C1,
# bidi marks/embeddings/overrides/isolates, line/paragraph separators, lone surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def cut(text: str, limit: int | None) -> str:
    """``text`` when at most ``limit`` characters, else its start and a ``[cut: N more
    characters]`` marker (the marker is not counted in ``limit``)."""
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:max(limit, 0)]}... [cut: {len(text) - max(limit, 0):,} more characters]"


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(
    text: object, limit: int | None = None, *, keep: str = "\t", encoding: str | None = None
) -> str:
    """``text`` (any object, via ``str``) cut to ``limit`` characters with every control
    character, bidi control and lone surrogate written as a visible ``\\xNN`` / ``\\uNNNN``
    escape; characters in ``keep`` (default: tab) stay as they are. With ``encoding``
    (e.g. ``sys.stdout.encoding``), characters it cannot encode are escaped as well, so
    writing the result to a stream of that encoding cannot raise."""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:  # noqa: BLE001 - an object whose str() fails still prints
            text = f"<unprintable {type(text).__name__}>"
    text = cut(text, limit)
    if keep:
        text = _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m), text)
    else:
        text = _UNSAFE.sub(_escape, text)
    if encoding:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            codec = "ascii"
        if codec not in ("utf-8", "utf-16", "utf-32"):
            text = text.encode(codec, "backslashreplace").decode(codec, "replace")
    return text
