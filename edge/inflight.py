"""Request coalescing: one upstream fetch per key, its bytes streamed to everyone waiting on it.

Like Pingora's cache lock. The first request for a missing key leads: the edge starts one fetch,
in a task of its own so no client disconnect can cancel it. Later requests for the same key attach
as readers of the same `InFlight`. The fetch appends chunks as they arrive and every change wakes
the readers: an awaiting reader through an event, a subscribed one through its callback, called
at once (the fast front writes to its socket right there, so a thousand waiters get their first
byte within a few milliseconds of the leader). Nobody polls.

An InFlight normally keeps every chunk (the object is going into the cache, and a late joiner
starts from byte 0); they are joined into one buffer for the cache once the body is complete, not
before: a buffer allocated up front costs its page faults before the waiters get their first
byte. An object too big to cache is not kept: chunks every reader
has had are dropped, and the fetch goes at the pace of its fastest reader. A reader more than
`window` bytes behind the others is cut off (one slow client never slows the rest or makes the
edge buffer without bound); the fetch stops when its last reader leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reel.http import parse_http_date


class Head:
    """Status and stored headers of an upstream response; `age` is its Age header.

    `x_cache` overrides every reader's X-Cache (STALE when a stale copy stands in for a failed
    fetch); `wire` is the front's memo of serialized headers, shared by every reader.
    """

    __slots__ = ("status", "headers", "length", "age", "x_cache", "etag", "modified", "wire")

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        length: int | None = None,  # Content-Length, when the upstream said
        age: int = 0,
        x_cache: str | None = None,
    ) -> None:
        self.status, self.headers, self.length, self.age = status, headers, length, age
        self.x_cache = x_cache
        self.etag = self.header("ETag")
        self.modified = parse_http_date(self.header("Last-Modified"))
        self.wire: dict[object, bytes] = {}

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class FetchFailed(Exception):
    """The shared fetch broke (or left this reader behind); a response cannot be completed."""


class TooManyReaders(Exception):
    """The key already has as many waiters as we allow."""


class Abandoned(Exception):
    """Every reader left a fetch that is not being kept for the cache: no point going on."""


class InFlight:
    """One fetch in progress: a head, a growing list of chunks, and the readers following it."""

    def __init__(self, key: str, max_readers: int = 10_000, window: int = 1 << 20) -> None:
        self.key = key
        self.head: Head | None = None
        self.done = False
        self.error: BaseException | None = None
        self.retaining = True
        self.cacheable = True  # False once purged: the old fetch must not be cached
        self.prefetch = False  # started by the prefetcher, not by a client
        self.size = 0  # bytes appended so far
        self._max_readers = max_readers
        self._window = window
        self._chunks: list[bytes | memoryview] = []
        self._dropped = 0  # chunks released from the front (only when not retaining)
        self._buffered = 0  # bytes currently held in _chunks
        self._readers: set[Reader] = set()
        self._subscribers: dict[Reader, Callable[[], None]] = {}
        # Swapped for a fresh Event on every notify: a waiter awaits the one current when it
        # found nothing to do, and is woken by the next change. No polling, no lost wake-ups.
        self._changed = asyncio.Event()
        self._drained = asyncio.Event()

    @property
    def joinable(self) -> bool:
        # A streamed-through fetch can take a new reader only while it still has byte 0.
        return not self.done and self.error is None and self._dropped == 0

    @property
    def readers(self) -> int:
        return len(self._readers)

    def reader(self, on_change: Callable[[], None] | None = None, first: bool = False) -> Reader:
        """A new reader from byte 0; `on_change` (if given) is called on every change instead of
        waking an await, before the others' if `first`. Raises TooManyReaders when the waiting
        list is full."""
        if len(self._readers) >= self._max_readers:
            raise TooManyReaders(self.key)
        reader = Reader(self, self._dropped)
        self._readers.add(reader)
        if on_change is not None:
            if first:
                self._subscribers = {reader: on_change, **self._subscribers}
            else:
                self._subscribers[reader] = on_change
        return reader

    # -- the fetch's side ---------------------------------------------------------------------

    def start(self, head: Head, keep: bool = True) -> None:
        """The head is in. `keep=False`: the body will not be cached, so it is not kept."""
        self.head = head
        if not keep:
            self.stop_retaining()
        self._notify()

    async def append(self, chunk: bytes | memoryview) -> None:
        """Add a chunk; when not retaining, pace the fetch to its fastest reader."""
        if not chunk:
            return
        if not self.retaining and not self._readers:
            raise Abandoned(self.key)
        size = len(chunk)
        self._chunks.append(chunk)
        self.size += size
        self._buffered += size
        self._notify()
        while not self.retaining and self._buffered > self._window:
            if not self._readers:
                raise Abandoned(self.key)
            behind = [r for r in self._readers if self.size - r.position > self._window]
            if len(behind) < len(self._readers):
                for reader in behind:
                    reader.cut()
                self._trim()
            else:
                await self._drained.wait()

    def stop_retaining(self) -> None:
        """The object will not be cached: keep only what some reader has yet to read."""
        self.retaining = False
        self._trim()

    def complete(self, head: Head, body: bytes | bytearray) -> None:
        """The whole response at once (a revalidated or stale copy, a local problem), uncopied."""
        self.head = head
        self._chunks = [memoryview(body)] if body else []
        self.size = self._buffered = len(body)
        self.done = True
        self._notify()

    def finish(self) -> None:
        if self.head is None:
            self.fail(FetchFailed(f"{self.key}: fetch ended without a response"))
            return
        self.done = True
        self._notify()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._chunks.clear()  # a broken body is of no use to anyone
        self._buffered = 0
        self._notify()

    def body(self) -> bytes:
        """The whole body of a finished, retained fetch, in one buffer."""
        if not (self.done and self.retaining):
            raise RuntimeError("body of an unfinished or unretained fetch")
        return b"".join(self._chunks)

    # -- internals ----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self._drained.set()
        self._drained = asyncio.Event()
        for callback in tuple(self._subscribers.values()):
            callback()

    def _release(self, reader: Reader) -> None:
        self._readers.discard(reader)
        self._subscribers.pop(reader, None)
        if not self.retaining:
            self._trim()

    def _trim(self) -> None:
        end = self._dropped + len(self._chunks)
        low = min((r.index for r in self._readers), default=end)
        drop = low - self._dropped
        if drop <= 0:
            return
        self._buffered -= sum(len(c) for c in self._chunks[:drop])
        del self._chunks[:drop]
        self._dropped = low
        if self._buffered <= self._window:
            self._drained.set()
            self._drained = asyncio.Event()


class Reader:
    """One request's cursor over an InFlight. Always close() it (a finally block)."""

    __slots__ = ("_flight", "index", "position", "_closed", "_cut")

    def __init__(self, flight: InFlight, index: int) -> None:
        self._flight = flight
        self.index = index  # absolute number of the next chunk to read
        self.position = 0  # bytes read so far
        self._closed = False
        self._cut = False

    @property
    def flight(self) -> InFlight:
        return self._flight

    @property
    def finished(self) -> bool:
        """Every byte of a completed fetch has been taken."""
        flight = self._flight
        return flight.done and self.index - flight._dropped >= len(flight._chunks)

    def take(self) -> bytes | memoryview | None:
        """The next chunk if one is there, else None (see `finished`). Raises FetchFailed."""
        flight = self._flight
        if self._cut:
            raise FetchFailed(f"{flight.key}: reader fell too far behind")
        position = self.index - flight._dropped
        if position < len(flight._chunks):
            chunk = flight._chunks[position]
            self.index += 1
            self.position += len(chunk)
            if not flight.retaining:
                flight._trim()
            return chunk
        if flight.error is not None:
            raise FetchFailed(str(flight.error)) from flight.error
        return None

    async def head(self) -> Head:
        """Wait for the response head. Raises FetchFailed if the fetch broke first."""
        flight = self._flight
        while flight.head is None:
            if flight.error is not None:
                raise FetchFailed(str(flight.error)) from flight.error
            await flight._changed.wait()
        return flight.head

    def __aiter__(self) -> Reader:
        return self

    async def __anext__(self) -> bytes | memoryview:
        while True:
            chunk = self.take()
            if chunk is not None:
                return chunk
            if self._flight.done:
                raise StopAsyncIteration
            await self._flight._changed.wait()

    def cut(self) -> None:
        """Drop this reader for being too slow; its next take() raises FetchFailed."""
        self._cut = True
        callback = self._flight._subscribers.get(self)
        self._flight._readers.discard(self)
        self._flight._subscribers.pop(self, None)
        if callback is not None:
            callback()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._flight._release(self)


class Flights:
    """The fetches in progress, by key: join one, or lead a new one."""

    def __init__(self, max_readers: int = 10_000, window: int = 1 << 20) -> None:
        self._max_readers = max_readers
        self._window = window
        self._table: dict[str, InFlight] = {}

    def get(self, key: str) -> InFlight | None:
        flight = self._table.get(key)
        return flight if flight is not None and flight.joinable else None

    def lead(self, key: str) -> InFlight:
        """A new flight for `key`; the caller must start its fetch."""
        flight = InFlight(key, self._max_readers, self._window)
        self._table[key] = flight
        return flight

    def forget(self, flight: InFlight) -> None:
        if self._table.get(flight.key) is flight:
            del self._table[flight.key]

    def purge(self, keys: set[str], prefixes: tuple[str, ...]) -> set[str]:
        """Stop the fetches of these keys from being cached, and let new requests fetch anew."""
        hit = {key for key in self._table if key in keys or (prefixes and key.startswith(prefixes))}
        for key in hit:
            self._table.pop(key).cacheable = False
        return hit

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def __len__(self) -> int:
        return len(self._table)

    @property
    def readers(self) -> int:
        return sum(flight.readers for flight in self._table.values())
