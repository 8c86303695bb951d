"""Both stores, built the same way for the tests that must pass on each."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from aiohttp.abc import AbstractResolver, ResolveResult

from origin.store import DirectoryStore, Store, open_store
from tests.s3server import S3Server

KINDS = ["directory", "s3"]


def make_store(kind: str, tmp_path: Path, s3: S3Server | None) -> Store:
    """A fresh, empty store: a directory, or a prefix of its own in the test bucket (the S3
    endpoint and credentials from the standard AWS variables, as in production)."""
    if kind == "directory":
        return DirectoryStore(tmp_path / "store")
    assert s3 is not None
    return open_store(s3.spec(f"t-{uuid.uuid4().hex[:12]}"))


class LoopbackResolver(AbstractResolver):
    """Every name is 127.0.0.1 (for {bucket}.localhost, which the system resolver does not know);
    remembers the names it was asked for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.names.append(host)
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass
