"""The edge's object cache: a byte-bounded LRU of whole responses with TinyLFU admission, and
HTTP freshness."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from edge.http import Stored
from reel.http import parse_http_date
from reel.playback_token import ACCESS_HEADER

# Response headers worth keeping; the rest (Date, Server, Connection, CORS) the edge makes itself.
STORED_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Content-Language",
    "ETag",
    "Last-Modified",
    "Cache-Control",
    "Expires",
    ACCESS_HEADER,  # private | unlisted | unknown: every viewer's token is checked
    "Retry-After",  # on answers never kept (a live part not ready yet: 503)
)
# What an entry costs beyond its body and headers: the object, the key, the LRU bookkeeping.
ENTRY_OVERHEAD = 512
SLICE = 256 * 1024
# RFC 8246 immutable with no explicit lifetime: as long as the origin's own immutable objects.
IMMUTABLE_TTL = 365 * 86400.0


def select_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, headers[name]) for name in STORED_HEADERS if name in headers)


def _directives(cache_control: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.lower()] = value.strip().strip('"')
    return out


def _seconds(value: str) -> float | None:
    """A delta-seconds directive value; None when invalid (RFC 9111 §1.2.2: digits only)."""
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return float(int(value))


@dataclass(frozen=True, slots=True)
class Policy:
    """What a shared cache may do with a response: keep it, for how long, and how stale."""

    store: bool
    ttl: float = 0.0  # freshness lifetime
    swr: float = 0.0  # stale-while-revalidate: serve stale this long past ttl, refreshing behind
    sie: float = 0.0  # stale-if-error: serve stale this long past ttl when the upstream fails


NO_STORE = Policy(False)


def policy(
    headers: Mapping[str, str], swr: float = 0.0, sie: float = 0.0, now: float | None = None
) -> Policy:
    """The shared-cache policy of a 200 response. `swr` and `sie` apply when it names neither.

    s-maxage wins over max-age, which wins over Expires - Date; immutable with none of them means
    a year. no-store, private, Set-Cookie and Vary: * forbid storing. no-cache and
    must-revalidate forbid stale serving; no-cache also means revalidate on every use. Without
    explicit freshness we do not guess.
    """
    cc = _directives(headers.get("Cache-Control", ""))
    if {"no-store", "private"} & cc.keys() or "Set-Cookie" in headers or headers.get("Vary") == "*":
        return NO_STORE
    if "stale-while-revalidate" in cc:
        swr = _seconds(cc["stale-while-revalidate"]) or 0.0
    if "stale-if-error" in cc:
        sie = _seconds(cc["stale-if-error"]) or 0.0
    if {"no-cache", "must-revalidate", "proxy-revalidate"} & cc.keys():
        swr = sie = 0.0
    if "no-cache" in cc:
        return Policy(True, 0.0, 0.0, 0.0)
    for name in ("s-maxage", "max-age"):
        if name in cc:
            ttl = _seconds(cc[name])
            # An invalid max-age means stale (RFC 9111 §4.2.1): nothing to keep.
            return Policy(True, ttl, swr, sie) if ttl else NO_STORE
    expires = headers.get("Expires")
    if expires is not None:
        at = parse_http_date(expires)
        base = parse_http_date(headers.get("Date"))
        ttl = (at or 0) - (base if base is not None else (now or time.time()))
        return Policy(True, ttl, swr, sie) if at is not None and ttl > 0 else NO_STORE
    if "immutable" in cc:
        return Policy(True, IMMUTABLE_TTL, swr, sie)
    return NO_STORE


class Entry(Stored):
    """One stored response. Times are time.monotonic() seconds.

    `memo` is for the prefetcher to keep what it derives from the entry (a playlist's segment
    list), so it does it once per entry.
    """

    __slots__ = ("body", "stored_at", "policy", "initial_age", "size", "prefetched", "memo", "next_prefetch")

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes | bytearray,
        stored_at: float,
        policy: Policy,
        initial_age: float = 0.0,  # the upstream's Age when we stored it (a shield's copy ages too)
    ) -> None:
        super().__init__(status, headers)
        self.body = body
        self.stored_at, self.policy, self.initial_age = stored_at, policy, initial_age
        self.size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers) + ENTRY_OVERHEAD
        self.prefetched = False  # brought in by a prefetch and not yet asked for
        self.memo: object = None
        self.next_prefetch = 0.0

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.policy.ttl

    def stale_while_revalidate(self, now: float) -> bool:
        return self.age(now) < self.policy.ttl + self.policy.swr

    def stale_if_error(self, now: float) -> bool:
        return self.age(now) < self.policy.ttl + self.policy.sie

    @property
    def validators(self) -> dict[str, str]:
        """Conditional request headers that revalidate this entry upstream."""
        out = {}
        if self.etag:
            out["If-None-Match"] = self.etag
        if modified := self.header("Last-Modified"):
            out["If-Modified-Since"] = modified
        return out

    def revalidated(self, headers: Mapping[str, str], swr: float, sie: float, now: float) -> Entry:
        """This body again, fresh from a 304 whose headers update ours (RFC 9111 §4.3.4)."""
        merged = dict(self.headers)
        merged.update(select_headers(headers))
        entry = Entry(
            self.status, tuple(merged.items()), self.body, now, policy(merged, swr, sie),
            header_age(headers.get("Age")),
        )
        entry.memo = self.memo  # same body, same derived facts
        return entry

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[memoryview]:
        """The body [start, end) in slices, without copying."""
        view = memoryview(self.body)[start:end]
        for offset in range(0, len(view), SLICE):
            yield view[offset : offset + SLICE]


def header_age(value: str | None) -> int:
    """Seconds of an Age header value; 0 when absent or not delta-seconds."""
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 12 else 0


class Frequency:
    """How often keys were asked for lately: TinyLFU's doorkeeper and count-min sketch, bounded.

    A key's first sighting only sets its bits in the doorkeeper (a Bloom filter), so the many
    keys asked for once never touch the counters; later sightings count in the sketch, four
    4-bit counters per key (saturating at 15) in one bytearray, the estimate being the least of
    them plus the doorkeeper's one. Every `10 * width` sightings all counters are halved and the
    doorkeeper is emptied: popularity fades, so a once-hot key can leave. Memory: 2 * width bytes.
    """

    _HALF = bytes(value >> 1 for value in range(256))

    def __init__(self, width: int) -> None:
        self._width = 1 << max(10, (width - 1).bit_length())
        self._counts = bytearray(self._width)
        self._door = bytearray(self._width)  # 8 * width bits
        self._added = 0
        self._period = 10 * self._width

    def _hash(self, key: str) -> tuple[int, int]:
        digest = hash(key) & 0xFFFFFFFFFFFFFFFF
        return digest & 0xFFFFFFFF, (digest >> 32) | 1

    def _in_door(self, low: int, high: int, mask: int) -> bool:
        door = self._door
        for bit in (low & mask, (low + high) & mask):
            if not door[bit >> 3] & (1 << (bit & 7)):
                return False
        return True

    def add(self, key: str) -> None:
        low, high = self._hash(key)
        bits = 8 * self._width - 1
        if not self._in_door(low, high, bits):
            door = self._door
            for bit in (low & bits, (low + high) & bits):
                door[bit >> 3] |= 1 << (bit & 7)
        else:
            counts, mask = self._counts, self._width - 1
            for slot in (low & mask, (low + high) & mask, (low + 2 * high) & mask, (low + 3 * high) & mask):
                if counts[slot] < 15:
                    counts[slot] += 1
        self._added += 1
        if self._added >= self._period:
            self._counts = self._counts.translate(self._HALF)
            self._door = bytearray(self._width)
            self._added = 0

    def estimate(self, key: str) -> int:
        low, high = self._hash(key)
        counts, mask = self._counts, self._width - 1
        count = min(counts[low & mask], counts[(low + high) & mask], counts[(low + 2 * high) & mask],
                    counts[(low + 3 * high) & mask])
        return count + self._in_door(low, high, 8 * self._width - 1)


class Cache:
    """Whole responses by key, never over `max_bytes` in total: an LRU sized in bytes, behind
    TinyLFU admission. The recency order is ours: an OrderedDict, least recently used first.

    Every request is counted (`seen`). While there is room anything is kept. Once the cache is
    full, a new object would push out the least recently used entries that free its room, and it
    gets in only if it is worth more than they are: its estimated frequency times its size
    against the sum of theirs (a byte hit is what the edge saves the origin, so a 2 MB segment
    asked for twice outweighs a playlist asked for three times). A scan of objects asked for once
    cannot flush a popular set; an object that becomes popular gets in as soon as its count
    passes the coldest entries'.
    """

    def __init__(
        self,
        max_bytes: int,
        max_object_bytes: int | None = None,
        on_evict: Callable[[str, Entry], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = max_object_bytes if max_object_bytes is not None else max_bytes
        self.bytes = 0  # the sum of the entries' sizes
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._on_evict = on_evict
        self._frequency = Frequency(max_bytes // (16 * 1024))

    def seen(self, key: str) -> None:
        """Count a request for `key`, whether the cache has it or not."""
        self._frequency.add(key)

    def get(self, key: str) -> Entry | None:
        """The entry for `key`, fresh or not (the caller decides); marks it recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def peek(self, key: str) -> Entry | None:
        """The entry for `key`, leaving the recency order as it is."""
        return self._entries.get(key)

    def put(self, key: str, entry: Entry, admit: bool = False) -> bool:
        """Store `entry` if it fits and wins admission (`admit`: no contest, e.g. a prefetch the
        viewer will ask for next). False when it is not kept; an older copy goes either way."""
        self.pop(key)
        if len(entry.body) > self.max_object_bytes or entry.size > self.max_bytes:
            return False
        room = self.bytes + entry.size - self.max_bytes  # bytes to free first
        if room > 0 and not admit and not self._worth_more(key, entry.size, room):
            return False
        while self.bytes + entry.size > self.max_bytes:
            victim, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size
            if self._on_evict is not None:
                self._on_evict(victim, evicted)
        self._entries[key] = entry
        self.bytes += entry.size
        return True

    def _worth_more(self, key: str, size: int, room: int) -> bool:
        """Is `key` worth more than the coldest entries holding `room` bytes, which it would
        displace? Worth: estimated frequency times bytes."""
        estimate = self._frequency.estimate
        worth = estimate(key) * size
        if worth == 0:
            return False
        against = 0
        for victim, entry in self._entries.items():  # least recently used first, order untouched
            against += estimate(victim) * entry.size
            if against >= worth:
                return False
            room -= entry.size
            if room <= 0:
                return True
        return False

    def pop(self, key: str) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def purge(self, keys: set[str], prefixes: tuple[str, ...]) -> set[str]:
        """Drop `keys` and every key starting with one of `prefixes`; the keys dropped."""
        gone = {key for key in keys if key in self._entries}
        if prefixes:
            gone.update(key for key in self._entries if key.startswith(prefixes))
        for key in gone:
            self.pop(key)
        return gone

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
