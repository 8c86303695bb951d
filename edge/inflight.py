"""Request coalescing: one upstream fetch per key, its bytes streamed to everyone waiting on it.

Two pieces, as in Pingora's cache lock. `Flights` decides who fetches: the first request for a
missing key leads (the edge starts one `Flight`, in a task of its own so no client disconnect can
cancel it), later requests for the same key follow it; a flight ends with a named `FetchEnd`.
A `Stream` buffers the response the fetch brings: its `Head`, then chunks as they arrive, read by
any number of `Cursor`s. Every change wakes the cursors: an awaiting one through an event, a
subscribed one through its callback, called at once (the fast front writes to its socket right
there, so a thousand waiters get their first byte within a few milliseconds of the leader).
Nobody polls.

A stream normally keeps every chunk (the object is going into the cache, and a late joiner starts
from byte 0); they are joined into one buffer for the cache once the body is complete, not before:
a buffer allocated up front costs its page faults before the waiters get their first byte. An
object too big to cache is not kept: chunks every cursor has had are dropped, and the fetch goes
at the pace of its fastest reader. A cursor more than `window` bytes behind the others is cut off
(one slow client never slows the rest or makes the edge buffer without bound); the fetch stops
when its last reader leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import Enum

from edge.http import Stored, XCache


class FetchEnd(Enum):
    """How an upstream fetch ended (Pingora's LockStatus, for the edge's fetches)."""

    WAITING = "waiting"  # not yet: the fetch is running
    DONE = "done"  # the upstream answered and its whole body is in (or a 304 refreshed our copy)
    TRANSIENT_ERROR = "transient_error"  # no usable answer: 502 or a stale stand-in, or a broken body
    GIVE_UP = "give_up"  # every reader left a fetch not kept for the cache: no point going on
    DANGLING = "dangling"  # ended with nobody finishing it: the edge shut down, or a bug of ours
    TIMEOUT = "timeout"  # no upstream answered in time: 504, or a stale stand-in


class Head(Stored):
    """Status and stored headers of an upstream response; `age` is its Age header.

    `x_cache` overrides every reader's X-Cache (STALE when a stale copy stands in for a failed
    fetch); `relayed` is what the key's owner worker said, when the fetch went through it.
    """

    __slots__ = ("length", "age", "x_cache", "relayed")

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        length: int | None = None,  # Content-Length, when the upstream said
        age: int = 0,
        x_cache: XCache | None = None,
    ) -> None:
        super().__init__(status, headers)
        self.length, self.age, self.x_cache = length, age, x_cache
        self.relayed: XCache | None = None

    def x_cache_for(self, asked: XCache) -> XCache:
        """The X-Cache of a reader Edge.answer gave `asked`: STALE for all when a stale copy
        stands in; for the reader that led a fetch through the key's owner worker, what the owner
        said. So an edge says MISS once per origin fetch, whatever worker each client reached."""
        if self.x_cache is not None:
            return self.x_cache
        if asked is XCache.MISS and self.relayed is not None:
            return self.relayed
        return asked


class FetchFailed(Exception):
    """The shared fetch broke (or left this reader behind); a response cannot be completed."""


class TooManyReaders(Exception):
    """The key already has as many waiters as we allow."""


class Abandoned(Exception):
    """Every reader left a fetch that is not being kept for the cache: no point going on."""


class Waiting:
    """Every reader of every fetch in progress in one process, against one limit: a blocking
    reload holds its viewer for up to three target durations, so a celebrity's audience waits
    at once, and the total (not only each key's list) must stay bounded."""

    __slots__ = ("count", "limit")

    def __init__(self, limit: int = 100_000) -> None:
        self.count, self.limit = 0, limit


class Stream:
    """One response arriving: a head, a growing list of chunks, and the cursors reading them."""

    def __init__(self, key: str, max_readers: int = 10_000, window: int = 1 << 20,
                 waiting: Waiting | None = None) -> None:
        self.key = key
        self._waiting = waiting if waiting is not None else Waiting()
        self.head: Head | None = None
        self.done = False
        self.error: BaseException | None = None
        self.retaining = True
        self.size = 0  # bytes appended so far
        self.changed_at = 0.0  # time.perf_counter() of the last change: what waiters are woken by
        self._max_readers = max_readers
        self._window = window
        self._chunks: list[bytes | memoryview] = []
        self._dropped = 0  # chunks released from the front (only when not retaining)
        self._buffered = 0  # bytes currently held in _chunks
        self._cursors: set[Cursor] = set()
        self._subscribers: dict[Cursor, Callable[[], None]] = {}
        # Swapped for a fresh Event on every notify: a waiter awaits the one current when it
        # found nothing to do, and is woken by the next change. No polling, no lost wake-ups.
        self._changed = asyncio.Event()
        self._drained = asyncio.Event()

    @property
    def joinable(self) -> bool:
        # A streamed-through response can take a new reader only while it still has byte 0.
        return not self.done and self.error is None and self._dropped == 0

    @property
    def readers(self) -> int:
        return len(self._cursors)

    def cursor(self, on_change: Callable[[], None] | None = None, first: bool = False) -> Cursor:
        """A new cursor from byte 0; `on_change` (if given) is called on every change instead of
        waking an await, before the others' if `first`. Raises TooManyReaders when the waiting
        list is full."""
        waiting = self._waiting
        if len(self._cursors) >= self._max_readers or waiting.count >= waiting.limit:
            raise TooManyReaders(self.key)
        cursor = Cursor(self, self._dropped)
        self._cursors.add(cursor)
        waiting.count += 1
        if on_change is not None:
            if first:
                self._subscribers = {cursor: on_change, **self._subscribers}
            else:
                self._subscribers[cursor] = on_change
        return cursor

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
        if not self.retaining and not self._cursors:
            raise Abandoned(self.key)
        size = len(chunk)
        self._chunks.append(chunk)
        self.size += size
        self._buffered += size
        self._notify()
        while not self.retaining and self._buffered > self._window:
            if not self._cursors:
                raise Abandoned(self.key)
            behind = [c for c in self._cursors if self.size - c.position > self._window]
            if len(behind) < len(self._cursors):
                for cursor in behind:
                    self._cut(cursor)
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
        """The whole body of a finished, retained response, in one buffer."""
        if not (self.done and self.retaining):
            raise RuntimeError("body of an unfinished or unretained response")
        return b"".join(self._chunks)

    # -- the cursors' side --------------------------------------------------------------------

    def take(self, cursor: Cursor) -> bytes | memoryview | None:
        """The chunk at `cursor`'s place, moving it past it; b"" past the end of a complete
        response, None when that chunk is not in yet. Chunks every cursor has had go, unless
        they are kept. Raises FetchFailed when the fetch broke or left this cursor behind."""
        position = cursor.index - self._dropped
        if position >= len(self._chunks) or cursor.cut_off:
            if cursor.cut_off:
                raise FetchFailed(f"{self.key}: reader fell too far behind")
            if self.error is not None:
                raise FetchFailed(str(self.error)) from self.error
            return b"" if self.done else None
        chunk = self._chunks[position]
        cursor.index += 1
        cursor.position += len(chunk)
        if not self.retaining:
            self._trim()
        return chunk

    async def changed(self) -> None:
        """Wait for the next change (a head, a chunk, the end, a failure)."""
        await self._changed.wait()

    def release(self, cursor: Cursor) -> None:
        self._drop(cursor)
        self._subscribers.pop(cursor, None)
        if not self.retaining:
            self._trim()

    # -- internals ----------------------------------------------------------------------------

    def _cut(self, cursor: Cursor) -> None:
        """Drop `cursor` for being too slow; its next take() raises FetchFailed."""
        cursor.cut_off = True
        callback = self._subscribers.pop(cursor, None)
        self._drop(cursor)
        if callback is not None:
            callback()

    def _drop(self, cursor: Cursor) -> None:
        if cursor in self._cursors:
            self._cursors.remove(cursor)
            self._waiting.count -= 1

    def _notify(self) -> None:
        self.changed_at = time.perf_counter()
        self._changed.set()
        self._changed = asyncio.Event()
        self._drained.set()
        self._drained = asyncio.Event()
        for callback in tuple(self._subscribers.values()):
            callback()

    def _trim(self) -> None:
        end = self._dropped + len(self._chunks)
        low = min((c.index for c in self._cursors), default=end)
        drop = low - self._dropped
        if drop <= 0:
            return
        self._buffered -= sum(len(c) for c in self._chunks[:drop])
        del self._chunks[:drop]
        self._dropped = low
        if self._buffered <= self._window:
            self._drained.set()
            self._drained = asyncio.Event()


class Cursor:
    """One request's place in a Stream. Always close() it (a finally block)."""

    __slots__ = ("stream", "index", "position", "cut_off", "_closed")

    def __init__(self, stream: Stream, index: int) -> None:
        self.stream = stream
        self.index = index  # absolute number of the next chunk to read
        self.position = 0  # bytes read so far
        self.cut_off = False  # dropped for falling too far behind
        self._closed = False

    def take(self) -> bytes | memoryview | None:
        """The next chunk (Stream.take)."""
        return self.stream.take(self)

    async def head(self) -> Head:
        """Wait for the response head. Raises FetchFailed if the fetch broke first."""
        stream = self.stream
        while stream.head is None:
            if stream.error is not None:
                raise FetchFailed(str(stream.error)) from stream.error
            await stream.changed()
        return stream.head

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> bytes | memoryview:
        while (chunk := self.take()) is None:
            await self.stream.changed()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.release(self)


class Flight:
    """One key's upstream fetch: who it is for, where it went, how it ended, and its Stream."""

    __slots__ = ("key", "stream", "outcome", "cacheable", "prefetch", "upstream")

    def __init__(self, key: str, stream: Stream, prefetch: bool) -> None:
        self.key, self.stream = key, stream
        self.outcome = FetchEnd.WAITING
        self.cacheable = True  # False once purged: the fetch must not be cached
        self.prefetch = prefetch  # started by the prefetcher, and no viewer has joined it yet
        self.upstream = "-"  # the URL that answered, once one did

    def end(self, outcome: FetchEnd, error: BaseException | None = None) -> None:
        """The fetch is over; a stream not complete by now fails with `error`."""
        self.outcome = outcome
        if not self.stream.done and self.stream.error is None:
            self.stream.fail(error or FetchFailed(f"{self.key}: {outcome.value}"))


class Flights:
    """The fetches in progress, by key: who leads (fetches) and who follows (reads)."""

    def __init__(self, max_readers: int = 10_000, window: int = 1 << 20, max_total: int = 100_000) -> None:
        self._max_readers = max_readers
        self._window = window
        self.waiting = Waiting(max_total)
        self._table: dict[str, Flight] = {}

    def get(self, key: str) -> Flight | None:
        """The fetch of `key` a new request may follow, if any."""
        flight = self._table.get(key)
        return flight if flight is not None and flight.stream.joinable else None

    def lead(self, key: str, prefetch: bool = False) -> Flight:
        """A new flight for `key`; the caller must start its fetch."""
        flight = Flight(key, Stream(key, self._max_readers, self._window, self.waiting), prefetch)
        self._table[key] = flight
        return flight

    def forget(self, flight: Flight) -> None:
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
        """Requests following a fetch, in this process (those of fetches just ended included,
        until they have written their last byte)."""
        return self.waiting.count
