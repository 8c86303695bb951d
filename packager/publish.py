"""Publishing straight into the object store while packaging, so renditions appear as they grow.

The pipeline is synchronous and multi-threaded (one thread per lane); the store is async. A
StoreOutput runs one event loop on a thread of its own and hands it each write, waiting for it:
writes are in order per caller, and a failed write fails the job. The store is used only from
that loop (an S3 client belongs to the loop it was opened in).
"""

from __future__ import annotations

import asyncio
import threading

from origin.store import Store

WRITE_TIMEOUT = 120.0


class StoreOutput:
    """An Output writing `prefix + name` objects into a Store."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="store-output",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, store_spec: str, prefix: str) -> StoreOutput:
        """From the command-line form of a store: picklable as functools.partial(open, ...)."""
        from origin.store import open_store

        return cls(open_store(store_spec), prefix)

    def write(self, name: str, data: bytes) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self.store.write_bytes(self.prefix + name, data), self._loop)
        future.result(WRITE_TIMEOUT)

    def close(self) -> None:
        # The store's connections (an S3 client) live in this loop: released in it, before it stops.
        asyncio.run_coroutine_threadsafe(self.store.close(), self._loop).result(WRITE_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> StoreOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
