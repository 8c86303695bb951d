"""`reel edge --workers N`: N edge processes on one port (SO_REUSEPORT), by default one per core.

Each worker is a whole edge with its own cache (so a hot object is cached once per worker) and
its own upstream pool; they share no memory and no lock, and a crash takes one worker. They talk
over private loopback sockets, one per worker: every key has an owner worker, and the others
fetch a missing key from its owner rather than from the origin (Settings.owner), so a burst for a
cold object makes one origin fetch per edge and its waiters are fed from every core. A purge
received by any worker is relayed to the others, and /metrics on any worker sums all of them.
The supervisor is reel.workers' (shared with `reel control --workers`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web

from edge.server import serve
from reel.workers import cpu_count, supervise

__all__ = ["cpu_count", "run"]


def run(
    build: Callable[..., web.Application],
    host: str,
    port: int,
    workers: int = 1,
    access_log: bool = False,
) -> int:
    """Serve `build(workers=URLS, worker=INDEX)` (the workers' private URLs, and which one this
    is: edge.node.Settings) in each worker until told to stop; with one worker, `build()`."""
    if workers <= 1:
        serve(build(), host, port, access_log=access_log)
        return 0

    def one(index: int, urls: tuple[str, ...], private: socket.socket) -> None:
        serve(build(workers=urls, worker=index), host, port, reuse_port=True,
              sockets=(private,), access_log=access_log)

    return supervise(one, workers, "reel edge")
