"""A small thread-safe least-recently-used cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``max_items`` entries. ``get`` and ``put`` make an entry the most recent;
    after ``put`` the least recent entries beyond ``max_items`` are dropped (and returned,
    for callers that must close them). Every method is safe to call from several threads."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The entry of ``key`` (now the most recent), or None."""
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> list[V]:
        """Store ``value`` as the most recent entry; the values dropped to make room."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            evicted = []
            while len(self._items) > self.max_items:
                evicted.append(self._items.popitem(last=False)[1])
            return evicted

    def pop(self, key: K) -> V | None:
        """Remove and return the entry of ``key`` (None when absent)."""
        with self._lock:
            return self._items.pop(key, None)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._items.clear()

    def keys(self) -> list[K]:
        """The keys, least recent first (a snapshot)."""
        with self._lock:
            return list(self._items)

    def values(self) -> list[V]:
        """The entries, least recent first (a snapshot)."""
        with self._lock:
            return list(self._items.values())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
