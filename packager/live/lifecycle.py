"""The life of one ingest connection, whatever the protocol: run it, end its publisher exactly
once on every path (clean unpublish, reset, error, server shutdown), report it once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from packager.live.errors import CutOff
from packager.live.media import StreamSink
from packager.live.publisher import Publisher
from packager.live.stats import IngestMetrics, Session, report

Authorize = Callable[[str, str], Awaitable[StreamSink | None]]
"""`authorize(app, stream_key)`: the sink for an accepted publish, or None to refuse it."""


class Connection(Protocol):
    session: Session
    publisher: Publisher | None

    async def run(self) -> BaseException | None:
        """Serve to the end; return what ended it (None for a clean end), never raise."""

    async def close(self) -> None:
        """Release what the protocol holds (socket, child process); never raise."""


def publishing(connection: Connection, publisher: Publisher, metrics: IngestMetrics) -> None:
    """Record an accepted publisher: `serve` ends it, however the connection ends."""
    connection.publisher = publisher
    connection.session.published = True
    metrics.publishers.labels(connection.session.protocol).inc()


async def serve(connection: Connection, metrics: IngestMetrics) -> None:
    protocol = connection.session.protocol
    metrics.connections.labels(protocol).inc()
    metrics.open.labels(protocol).inc()
    outcome: BaseException | None = None
    try:
        outcome = await connection.run()
    except asyncio.CancelledError:
        pass  # the server's close() ends connections so; nothing above this task awaits it
    finally:
        await connection.close()
        outcome = await _end(connection, metrics, outcome)
        metrics.open.labels(protocol).dec()
        report(connection.session, outcome, metrics)


async def _end(connection: Connection, metrics: IngestMetrics,
               outcome: BaseException | None) -> BaseException | None:
    publisher, connection.publisher = connection.publisher, None
    if publisher is None:
        return outcome
    metrics.publishers.labels(connection.session.protocol).dec()
    connection.session.packets = publisher.packets
    try:
        await publisher.end()
    except CutOff as exc:  # the sink failed to end: reported unless something failed first
        return outcome or exc
    return outcome
