"""Safe terminal text: program-controlled strings made printable without side effects.

A program's answer, error message or notes may hold terminal control sequences (ESC,
OSC, a carriage return that rewrites a line), bidi overrides that reorder what is shown,
or lone surrogates that cannot be encoded. :func:`safe_text` escapes all of them, so the
text can neither move the cursor, fake a line of output nor raise when printed. It is the one
helper for every user-supplied string (file names, questions, messages naming them) on its way
to a terminal, a log line (:class:`SafeFormatter`, installed by :func:`configure_logging`) or
HTML (:func:`safe_html`).

Bottom layer: imports nothing of the project.
"""

from __future__ import annotations

import codecs
import html
import logging
import re
import sys
import traceback
from typing import TextIO

__all__ = ["SafeFormatter", "configure_logging", "cut", "safe_html", "safe_lines", "safe_text",
           "safe_traceback"]

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


def safe_html(text: object, limit: int | None = None) -> str:
    """``text`` made safe (:func:`safe_text`) and then escaped for HTML text or a quoted
    attribute value."""
    return html.escape(safe_text(text, limit), quote=True)


def safe_lines(text: object, limit: int | None = None, *, encoding: str | None = None) -> str:
    """Program-made multi-line ``text`` with each line made safe (:func:`safe_text`); the
    line breaks stay. Only for text whose line breaks are its own: a user-supplied string
    inside one line has its own breaks escaped by :func:`safe_text` first."""
    text = cut(text if isinstance(text, str) else safe_text(text), limit)
    return "\n".join(safe_text(line, encoding=encoding) for line in text.split("\n"))


def safe_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as Python prints it, each line made safe
    (:func:`safe_text`): an exception message quoting a file name cannot reach the terminal
    raw."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return safe_lines(text.rstrip("\n"))


class SafeFormatter(logging.Formatter):
    """A log formatter whose every record message is made safe (:func:`safe_text`, so one
    record is one line whatever file name or value its arguments hold); tracebacks and
    stacks keep their line breaks with each line made safe."""

    #: Longest message written (characters); the rest is cut with a marker.
    MAX_MESSAGE_CHARS = 4000

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The record's line, its message made safe."""
        record.message = safe_text(record.message, self.MAX_MESSAGE_CHARS)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:  # noqa: N802 - logging's name
        """The traceback, each line made safe."""
        return safe_lines(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        """The stack, each line made safe."""
        return safe_lines(super().formatStack(stack_info))


def configure_logging(level: int, fmt: str = "%(levelname)s %(name)s: %(message)s",
                      stream: TextIO | None = None) -> bool:
    """Like :func:`logging.basicConfig`: when the root logger has no handler yet, log
    records at ``level`` and above to ``stream`` (default: stderr) through a
    :class:`SafeFormatter` and route :mod:`warnings` into the log; True when it did. A root
    logger already set up (e.g. by an embedding program) is left as it is."""
    root = logging.getLogger()
    if root.handlers:
        return False
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(SafeFormatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return True
