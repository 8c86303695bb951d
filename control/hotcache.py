"""A small, bounded, short-lived in-process cache for the hot read paths (sessions, videos).

Entries live `ttl` seconds (monotonic clock) and at most `max_entries` are kept, oldest written
dropped first. The owner discards an entry when this process changes what it caches; a change
made by another process is seen once the entry expires, so `ttl` is the staleness bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        # Bumped by every discard: a value read from the database before a change made here
        # must not be cached after it (`put(..., read_at=generation before the read)`).
        self.generation = 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V, read_at: int | None = None) -> None:
        if self.ttl <= 0 or (read_at is not None and read_at != self.generation):
            return
        self._entries.pop(key, None)
        self._entries[key] = (self.clock() + self.ttl, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def refresh(self, key: K, value: V) -> None:
        """Replace a cached value without extending its life (no-op when absent)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], value)

    def discard(self, key: K) -> None:
        self.generation += 1
        self._entries.pop(key, None)

    def discard_where(self, predicate: Callable[[V], bool]) -> None:
        self.generation += 1
        for key in [k for k, (_, v) in self._entries.items() if predicate(v)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
