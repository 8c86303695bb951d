"""The edge's object cache: a byte-bounded LRU of whole responses, with HTTP freshness."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from cachetools import LRUCache

# Response headers worth keeping; the rest (Date, Server, Connection, CORS) the edge makes itself.
STORED_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Content-Language",
    "ETag",
    "Last-Modified",
    "Cache-Control",
    "Expires",
)
# What an entry costs beyond its body and headers: the object, the key, the LRU bookkeeping.
ENTRY_OVERHEAD = 512
SLICE = 256 * 1024


def select_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, headers[name]) for name in STORED_HEADERS if name in headers)


def _directives(cache_control: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.lower()] = value.strip().strip('"')
    return out


def freshness(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds a shared cache may serve this response without asking again; 0 means do not store.

    s-maxage wins over max-age, which wins over Expires; no-store, private and no-cache (until
    revalidation exists) forbid storing. Without explicit freshness we do not guess.
    """
    cc = _directives(headers.get("Cache-Control", ""))
    if {"no-store", "private", "no-cache"} & cc.keys():
        return 0.0
    for name in ("s-maxage", "max-age"):
        if name in cc:
            try:
                return max(0.0, float(int(cc[name])))
            except ValueError:
                return 0.0  # an invalid max-age means stale (RFC 9111 §4.2.1)
    expires = headers.get("Expires")
    if expires:
        try:
            at = email.utils.parsedate_to_datetime(expires).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return 0.0
        date = headers.get("Date")
        try:
            base = email.utils.parsedate_to_datetime(date).timestamp() if date else None
        except (TypeError, ValueError, IndexError, OverflowError):
            base = None
        return max(0.0, at - (base if base is not None else (now or time.time())))
    return 0.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored response. Times are time.monotonic() seconds."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    ttl: float  # freshness lifetime
    initial_age: float = 0.0  # the upstream's Age when we stored it (a shield's copy ages too)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        overhead = sum(len(k) + len(v) + 4 for k, v in self.headers) + ENTRY_OVERHEAD
        object.__setattr__(self, "size", len(self.body) + overhead)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.ttl

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[memoryview]:
        """The body [start, end) in slices, without copying."""
        view = memoryview(self.body)[start:end]
        for offset in range(0, len(view), SLICE):
            yield view[offset : offset + SLICE]


class _LRU(LRUCache):
    def __init__(self, maxsize: int, on_evict: Callable[[str, Entry], None]) -> None:
        super().__init__(maxsize, getsizeof=lambda entry: entry.size)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, Entry]:
        # cachetools evicts only through popitem, so this sees every eviction.
        key, entry = super().popitem()
        self._on_evict(key, entry)
        return key, entry


class Cache:
    """Whole responses by key, least recently used first out, never over `max_bytes` in total."""

    def __init__(
        self,
        max_bytes: int,
        max_object_bytes: int | None = None,
        on_evict: Callable[[str, Entry], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes if max_object_bytes is not None else max_bytes
        self._on_evict = on_evict
        self._lru = _LRU(max_bytes, self._evicted)

    def _evicted(self, key: str, entry: Entry) -> None:
        if self._on_evict is not None:
            self._on_evict(key, entry)

    def get(self, key: str) -> Entry | None:
        """The entry for `key`, fresh or not (the caller decides); marks it recently used."""
        return self._lru.get(key)

    def put(self, key: str, entry: Entry) -> bool:
        """Store `entry`; False when it is too big to keep."""
        if len(entry.body) > self.max_object_bytes or entry.size > self.max_bytes:
            return False
        self._lru[key] = entry
        return True

    def pop(self, key: str) -> Entry | None:
        return self._lru.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        return int(self._lru.currsize)
