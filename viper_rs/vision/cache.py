"""Caches for per-image and per-query model outputs: in memory (LRU) and optionally on disk.

An entry is a dict of numpy arrays, addressed by a ``kind`` (``"graft-features"``,
``"sam-embedding"``, ``"text"``...) and a key built by :func:`cache_key` from the image
content hash and the model identity, so a different image, checkpoint or windowing never
hits a stale entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np

from viper_rs.core.lru import LRU

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def cache_key(*parts: object) -> str:
    """A short stable hex key for the given parts (content hash, model id, parameters)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


class FeatureCache:
    """LRU of array dicts in memory, backed by ``.npz`` files under ``disk_dir`` when given."""

    def __init__(self, disk_dir: Path | None = None, max_items: int = 32) -> None:
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._mem: LRU[tuple[str, str], Arrays] = LRU(max(1, int(max_items)))
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0

    def _path(self, kind: str, key: str) -> Path | None:
        if self.disk_dir is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", kind)
        return self.disk_dir / safe / f"{key}.npz"

    def get(self, kind: str, key: str) -> Arrays | None:
        """The cached arrays, or None. A corrupt disk entry is removed and counts as a miss."""
        item = self._mem.get((kind, key))
        if item is not None:
            with self._lock:
                self.hits += 1
            return item
        path = self._path(kind, key)
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    item = {name: z[name] for name in z.files}
            except Exception as exc:  # truncated or foreign file: drop it, recompute
                log.warning("ignoring unreadable cache file %s (%s)", path, exc)
                path.unlink(missing_ok=True)
            else:
                self._remember(kind, key, item)
                with self._lock:
                    self.hits += 1
                    self.disk_hits += 1
                return item
        with self._lock:
            self.misses += 1
        return None

    def put(self, kind: str, key: str, arrays: Arrays) -> None:
        """Store ``arrays`` in memory and, when a disk folder is set, atomically on disk."""
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._remember(kind, key, arrays)
        path = self._path(kind, key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except OSError as exc:  # a full or read-only disk must not fail a question
            log.warning("could not write cache file %s (%s)", path, exc)

    @property
    def max_items(self) -> int:
        """Entries kept in memory."""
        return self._mem.max_items

    @max_items.setter
    def max_items(self, value: int) -> None:
        self._mem.max_items = max(1, int(value))

    def _remember(self, kind: str, key: str, arrays: Arrays) -> None:
        self._mem.put((kind, key), arrays)

    def clear_memory(self) -> None:
        """Forget the in-memory entries (disk entries stay)."""
        self._mem.clear()

    def stats(self) -> dict[str, int]:
        """Hit/miss counters."""
        return {"hits": self.hits, "misses": self.misses, "disk_hits": self.disk_hits,
                "items": len(self._mem)}
