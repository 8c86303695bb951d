"""The directory store: objects as files under a root, the key being the relative path."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from origin.base import CHUNK, ObjectInfo, Store, TooLarge, check_key, check_prefix, check_tree

# A directory store's modes, whatever the umask: published objects (vod/, live/) are readable by
# every user (an origin, nginx or a backup job running as another user); sources and staging
# (.tmp/) stay the owner's.
PUBLISHED_MODES = (0o644, 0o755)  # files, directories
PRIVATE_MODES = (0o600, 0o700)


class DirectoryStore(Store):
    """Objects as files under `root`, the key being the relative path."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.chmod(PUBLISHED_MODES[1])
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)
        self._tmp.chmod(PRIVATE_MODES[1])

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root / key

    @staticmethod
    def _modes(key: str) -> tuple[int, int]:
        return PRIVATE_MODES if key.startswith("sources/") else PUBLISHED_MODES

    def _make_dirs(self, directory: Path, mode: int) -> None:
        """`directory` and its missing parents below the root, each with `mode`."""
        missing = []
        while directory != self.root and not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:  # another writer made it
                continue
            path.chmod(mode)

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = await asyncio.to_thread(os.stat, self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        # Objects are written once and never modified in place, so mtime+size identify content.
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime, etag=etag)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        f = await asyncio.to_thread(open, path, "rb")
        try:
            if start:
                f.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                size = CHUNK if remaining is None else min(CHUNK, remaining)
                block = await asyncio.to_thread(f.read, size)
                if not block:
                    break
                if remaining is not None:
                    remaining -= len(block)
                yield block
        finally:
            f.close()

    async def write(
        self, key: str, chunks: AsyncIterable[bytes], max_bytes: int | None = None
    ) -> ObjectInfo:
        path = self._path(key)
        file_mode, dir_mode = self._modes(key)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        size = 0
        digest = hashlib.md5(usedforsecurity=False)
        try:
            os.fchmod(fd, file_mode)
            with os.fdopen(fd, "wb") as f:
                async for block in chunks:
                    size += len(block)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLarge(f"{key}: over {max_bytes} bytes")
                    digest.update(block)
                    await asyncio.to_thread(f.write, block)
            await asyncio.to_thread(self._make_dirs, path.parent, dir_mode)
            os.replace(tmp_name, path)
        except BaseException:
            # In a thread, which finishes even if this task is cancelled again meanwhile.
            await asyncio.to_thread(Path(tmp_name).unlink, missing_ok=True)
            raise
        info = await self.stat(key)
        assert info is not None
        return info

    async def copy_prefix(self, source: str, target: str) -> int:
        # Objects are immutable and replaced atomically, never written in place, so a hard link
        # is a copy that costs no bytes; another filesystem gets a real copy.
        check_tree(source)
        check_tree(target)
        file_mode, dir_mode = self._modes(target)

        def copy() -> int:
            base = self.root / source
            if not base.is_dir():
                return 0
            files = [p for p in base.rglob("*") if p.is_file()]
            staging = Path(tempfile.mkdtemp(dir=self._tmp))
            try:
                for path in files:
                    rel = path.relative_to(base).as_posix()
                    check_key(target + rel)
                    dest = staging / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(path, dest)
                    except OSError:
                        shutil.copy2(path, dest)
                    dest.chmod(file_mode)
                for directory in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
                    directory.chmod(dir_mode)
                # One rename publishes the whole copy, so no reader sees a partial video.
                final = self.root / target
                self._make_dirs(final.parent, dir_mode)
                os.rename(staging, final)  # refuses (OSError) when the target exists
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return len(files)

        return await asyncio.to_thread(copy)

    async def delete_prefix(self, prefix: str) -> int:
        def remove() -> int:
            count = 0
            base = self.root / prefix
            if prefix.endswith("/") and base.is_dir():
                count = sum(1 for p in base.rglob("*") if p.is_file())
                shutil.rmtree(base)
                return count
            parent = base.parent
            if not parent.is_dir() or not parent.resolve().is_relative_to(self.root):
                return 0
            for p in list(parent.rglob("*")):
                rel = p.relative_to(self.root).as_posix()
                if p.is_file() and rel.startswith(prefix):
                    p.unlink()
                    count += 1
            return count

        check_prefix(prefix)
        return await asyncio.to_thread(remove)
