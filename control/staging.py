"""Where resumable uploads grow before they become a source: append-at-offset, then read once.

The tus handler speaks only to `Staging`; `LocalStaging` keeps one file per upload under the data
directory. Bytes are streamed in and out; nothing holds an upload whole in memory.
"""

from __future__ import annotations

import abc
import asyncio
import os
import re
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

CHUNK = 256 * 1024
_ID = re.compile(r"[A-Za-z0-9_-]{6,64}")


class OffsetMismatch(Exception):
    """An append did not start where the upload ends."""

    def __init__(self, expected: int) -> None:
        super().__init__(f"the upload is at offset {expected}")
        self.expected = expected


class Staging(abc.ABC):
    """Partial uploads, by upload id."""

    @abc.abstractmethod
    async def create(self, upload_id: str) -> None:
        """An empty upload."""

    @abc.abstractmethod
    async def size(self, upload_id: str) -> int | None:
        """Bytes received so far, or None when there is no such upload."""

    @abc.abstractmethod
    async def append(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Write `chunks` at `offset` (which must be the current size, else OffsetMismatch).

        Whatever arrived stays even when `chunks` raises (that is what makes uploads resumable).
        Returns the new size.
        """

    @abc.abstractmethod
    async def truncate(self, upload_id: str, size: int) -> None:
        """Forget everything after `size` bytes (a chunk that failed its checksum)."""

    @abc.abstractmethod
    def read(self, upload_id: str) -> AsyncIterator[bytes]:
        """Stream the upload's bytes."""

    @abc.abstractmethod
    async def delete(self, upload_id: str) -> None:
        """Forget the upload (no error when it is already gone)."""


class LocalStaging(Staging):
    """One file per upload in `root`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # uploads in progress are their creators' alone

    def __repr__(self) -> str:
        return f"LocalStaging({str(self.root)!r})"

    def _path(self, upload_id: str) -> Path:
        if _ID.fullmatch(upload_id) is None:  # never a path from the outside
            raise ValueError(f"bad upload id {upload_id!r}")
        return self.root / upload_id

    async def create(self, upload_id: str) -> None:
        await asyncio.to_thread(self._path(upload_id).touch, exist_ok=False)

    async def size(self, upload_id: str) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self._path(upload_id))).st_size
        except FileNotFoundError:
            return None

    async def append(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(upload_id)
        f = await asyncio.to_thread(open, path, "r+b")
        try:
            size = await asyncio.to_thread(f.seek, 0, os.SEEK_END)
            if size != offset:
                raise OffsetMismatch(size)
            async for chunk in chunks:
                await asyncio.to_thread(f.write, chunk)
            return await asyncio.to_thread(f.tell)
        finally:
            await asyncio.to_thread(f.close)

    async def truncate(self, upload_id: str, size: int) -> None:
        await asyncio.to_thread(os.truncate, self._path(upload_id), size)

    async def read(self, upload_id: str) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self._path(upload_id), "rb")
        try:
            while block := await asyncio.to_thread(f.read, CHUNK):
                yield block
        finally:
            await asyncio.to_thread(f.close)

    async def delete(self, upload_id: str) -> None:
        await asyncio.to_thread(self._path(upload_id).unlink, missing_ok=True)
