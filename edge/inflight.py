"""Request coalescing: one upstream fetch per key, its bytes streamed to everyone waiting on it.

Like Pingora's cache lock. The first request for a missing key leads: the app starts one fetch, in
a task of its own so no client disconnect can cancel it. Later requests for the same key attach
as readers of the same `InFlight`. The fetch appends chunks as they arrive and readers are woken
by an event, so a waiter's first byte comes about when the leader's does.

An InFlight normally keeps every chunk (the object is going into the cache, and a late joiner
starts from byte 0). An object too big to cache is not kept: once every reader has had a chunk it
is dropped, the fetch waits for the slowest reader when `window` bytes are buffered, nobody new
may join, and the fetch stops when its last reader leaves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Head:
    """Status and stored headers of an upstream response; `age` is its Age header."""

    status: int
    headers: tuple[tuple[str, str], ...]
    length: int | None = None  # Content-Length, when the upstream said
    age: int = 0

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class FetchFailed(Exception):
    """The shared fetch broke; a reader's response cannot be completed."""


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
        self.size = 0  # bytes appended so far
        self._max_readers = max_readers
        self._window = window
        self._chunks: list[bytes] = []
        self._dropped = 0  # chunks released from the front (only when not retaining)
        self._buffered = 0  # bytes currently held in _chunks
        self._readers: set[Reader] = set()
        # Swapped for a fresh Event on every notify: a waiter awaits the one current when it
        # found nothing to do, and is woken by the next change. No polling, no lost wake-ups.
        self._changed = asyncio.Event()
        self._drained = asyncio.Event()

    @property
    def joinable(self) -> bool:
        return self.retaining and not self.done and self.error is None

    @property
    def readers(self) -> int:
        return len(self._readers)

    def reader(self) -> Reader:
        """A new reader from byte 0. Raises TooManyReaders when the waiting list is full."""
        if len(self._readers) >= self._max_readers:
            raise TooManyReaders(self.key)
        reader = Reader(self, self._dropped)
        self._readers.add(reader)
        return reader

    # -- the fetch's side ---------------------------------------------------------------------

    def start(self, head: Head) -> None:
        self.head = head
        self._notify()

    async def append(self, chunk: bytes) -> None:
        """Add a chunk; when not retaining, wait while `window` bytes are still unread."""
        if not chunk:
            return
        if not self.retaining and not self._readers:
            raise Abandoned(self.key)
        self._chunks.append(chunk)
        self.size += len(chunk)
        self._buffered += len(chunk)
        self._notify()
        while not self.retaining and self._buffered > self._window:
            if not self._readers:
                raise Abandoned(self.key)
            await self._drained.wait()

    def stop_retaining(self) -> None:
        """The object will not be cached: keep only what some reader has yet to read."""
        self.retaining = False
        self._trim()

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
        """The whole body of a finished, retained fetch."""
        if not (self.done and self.retaining):
            raise RuntimeError("body of an unfinished or unretained fetch")
        return b"".join(self._chunks)

    # -- internals ----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self._drained.set()
        self._drained = asyncio.Event()

    def _release(self, reader: Reader) -> None:
        self._readers.discard(reader)
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

    __slots__ = ("_flight", "index", "_closed")

    def __init__(self, flight: InFlight, index: int) -> None:
        self._flight = flight
        self.index = index  # absolute number of the next chunk to read
        self._closed = False

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

    async def __anext__(self) -> bytes:
        flight = self._flight
        while True:
            position = self.index - flight._dropped
            if position < len(flight._chunks):
                chunk = flight._chunks[position]
                self.index += 1
                if not flight.retaining:
                    flight._trim()
                return chunk
            if flight.error is not None:
                raise FetchFailed(str(flight.error)) from flight.error
            if flight.done:
                raise StopAsyncIteration
            await flight._changed.wait()

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

    def join(self, key: str) -> tuple[InFlight, Reader, bool]:
        """(flight, reader, leader). The leader must start the fetch. May raise TooManyReaders."""
        flight = self._table.get(key)
        if flight is not None and flight.joinable:
            return flight, flight.reader(), False
        flight = InFlight(key, self._max_readers, self._window)
        self._table[key] = flight
        return flight, flight.reader(), True

    def forget(self, flight: InFlight) -> None:
        if self._table.get(flight.key) is flight:
            del self._table[flight.key]

    def __len__(self) -> int:
        return len(self._table)

    @property
    def readers(self) -> int:
        return sum(flight.readers for flight in self._table.values())
