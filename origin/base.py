"""The object store's interface: what every store offers (`Store`), what it answers
(`ObjectInfo`) and raises (`StoreError`), and the key checks every store makes first.

Implementations sit beside it (`origin.dirstore`, `origin.s3store`); `origin.store` opens the
one a `--store` spec names. Keys follow `origin.layout`. Writes are atomic (a reader sees the
whole object or nothing) and streamed (an object is never held whole in memory). Reads are
streamed and may be ranged.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from origin.layout import parse_key

CHUNK = 256 * 1024


class StoreError(Exception):
    """Base class for store failures."""


class InvalidKey(StoreError):
    """The key is not part of the object layout."""


class TooLarge(StoreError):
    """A streamed write went over its byte limit; nothing was stored."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch
    etag: str  # strong validator, with its quotes


class Store(abc.ABC):
    """What every object store offers. Implementations: DirectoryStore, S3Store.

    A store may hold connections: `close()` (or `async with store`) releases them; it reopens on
    next use. Failures of the store itself raise StoreError.
    """

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None:
        """Metadata of `key`, or None when it does not exist."""

    @abc.abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) of `key` (end None: to the end). Raises FileNotFoundError."""

    @abc.abstractmethod
    async def write(
        self, key: str, chunks: AsyncIterable[bytes], max_bytes: int | None = None
    ) -> ObjectInfo:
        """Store `chunks` under `key` atomically; over `max_bytes` raises TooLarge, storing nothing."""

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; returns how many."""

    async def close(self) -> None:
        """Release what the store holds open (connections); nothing by default."""
        return None

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def copy_prefix(self, source: str, target: str) -> int:
        """Copy every object under the `source/` prefix to the same key under `target/`, inside
        the store; returns how many. A video's `master.m3u8` appears last (or all at once), so a
        reader never sees a master without its renditions; a failed copy leaves nothing."""

    async def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.write(key, one())

    async def write_file(self, key: str, path: Path) -> ObjectInfo:
        """Store a local file, streamed."""

        async def chunks() -> AsyncIterator[bytes]:
            with await asyncio.to_thread(open, path, "rb") as f:
                while block := await asyncio.to_thread(f.read, CHUNK):
                    yield block

        return await self.write(key, chunks())

    async def read_to_file(self, key: str, path: Path) -> int:
        """Copy an object to a local file, streamed; returns its size."""
        size = 0
        with await asyncio.to_thread(open, path, "wb") as f:
            async for block in self.read(key):
                await asyncio.to_thread(f.write, block)
                size += len(block)
        return size


def check_key(key: str) -> None:
    """Every store's gate: a key outside the object layout never reaches a disk or a bucket."""
    if parse_key(key) is None:
        raise InvalidKey(key)


def check_tree(prefix: str) -> None:
    """A whole tree to copy: a prefix ending in a slash."""
    check_prefix(prefix)
    if not prefix.endswith("/"):
        raise InvalidKey(prefix)


def check_prefix(prefix: str) -> None:
    """A prefix to delete under: relative, non-empty, no traversal."""
    if not prefix or ".." in prefix or prefix.startswith("/") or "\\" in prefix or "\0" in prefix:
        raise InvalidKey(prefix)
