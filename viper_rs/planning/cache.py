"""On-disk cache of generated programs, keyed by (endpoint, model, prompt hash, question).

One JSON file per key under ``<cache_dir>/programs/``, written atomically (temporary file
then rename). Only programs that ran without error are stored. A file that cannot be read
is treated as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Format version of the cache files (part of the key).
CACHE_VERSION = 1


def question_key(question: str) -> str:
    """The question as a cache key: Unicode NFKC, lower case, single spaces, no trailing
    punctuation (two spellings of one question share a program; not the rule planner's
    ``normalise_question``, which also drops scope tails such as " in the image")."""
    text = unicodedata.normalize("NFKC", str(question)).lower()
    text = " ".join(text.split())
    return re.sub(r"[\s?.!]+$", "", text)


def cache_key(base_url: str, model: str, prompt_hash: str, question: str) -> dict[str, Any]:
    """The fields identifying one cached program."""
    return {
        "version": CACHE_VERSION,
        "base_url": base_url.rstrip("/"),
        "model": model,
        "prompt_hash": prompt_hash,
        "question": question_key(question),
    }


class ProgramCache:
    """Programs on disk under ``root`` (one JSON file per key)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: dict[str, Any]) -> Path:
        """The file holding ``key``'s program."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
        return self.root / f"{digest[:32]}.json"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record for ``key`` (``program``, ``kind``, ...), or None."""
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("program cache: ignoring unreadable %s (%s)", path, exc)
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        if not isinstance(record.get("program"), str):
            return None
        return record

    def put(self, key: dict[str, Any], record: dict[str, Any]) -> Path | None:
        """Store ``record`` for ``key`` atomically; returns the file, or None when the disk
        refuses (the cache is an optimisation: failures are logged, never raised)."""
        path = self.path(key)
        data = {**record, "key": key, "stored": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.root)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, indent=1, default=str)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("program cache: cannot write %s (%s)", path, exc)
            return None
        return path
