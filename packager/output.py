"""Where packaged files go. The pipeline only ever calls `write(name, data)`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol


class Output(Protocol):
    def write(self, name: str, data: bytes) -> None:
        """Publish one file (`name` is relative, e.g. "v720/seg_00001.m4s") atomically."""


class DirectoryOutput:
    """Files under a directory, each written to a temporary name and renamed into place."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            os.fchmod(fd, 0o644)  # published: readable by an origin or web server of another user
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
