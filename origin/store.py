"""The object store: one small interface (`origin.base`), a directory implementation by
default (`origin.dirstore`) and S3 (`origin.s3store`) for many machines; `open_store` opens the
one a `--store` spec names.

Keys follow `origin.layout`. Writes are atomic (a reader sees the whole object or nothing) and
streamed (an object is never held whole in memory). Reads are streamed and may be ranged.
"""

from __future__ import annotations

from origin.base import CHUNK, InvalidKey, ObjectInfo, Store, StoreError, TooLarge
from origin.dirstore import DirectoryStore

__all__ = ["CHUNK", "DirectoryStore", "InvalidKey", "ObjectInfo", "STORE_HELP", "Store", "StoreError",
           "TooLarge", "open_store"]

# What `--store` takes, for the help of every command that has one.
STORE_HELP = ("object store: a directory, or s3://BUCKET/PREFIX for S3 or any S3-compatible server "
              "(?endpoint=URL&addressing=path|virtual|auto&region=R; without endpoint, "
              "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; credentials and region from the standard "
              "AWS variables and config files)")


def open_store(spec: str) -> Store:
    """A store from its command-line form: a directory path, or
    `s3://BUCKET/PREFIX[?endpoint=URL&addressing=path|virtual|auto&region=R]` (see origin.s3store).
    Nothing is connected yet: the S3 client opens on first use, in the event loop that uses it."""
    if spec.startswith("s3://"):
        from origin.s3store import S3Store

        return S3Store.from_url(spec)
    if "://" in spec:
        raise StoreError(f"unknown store {spec!r}: give a directory or s3://BUCKET/PREFIX")
    return DirectoryStore(spec)
