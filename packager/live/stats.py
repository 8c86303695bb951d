"""What ingest reports, whatever the protocol: Prometheus metrics, and one log line per
publisher's end (a warning with its reason when it was refused or cut off)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from packager.live.errors import CutOff
from reel.logs import fields

log = logging.getLogger("ingest")


class IngestMetrics:
    """One set per registry, labelled by protocol: give the same one to the RTMP and the SRT
    server of a process (a second set on one registry would clash)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Counter("reel_ingest_connections_total", "Connections accepted, by protocol",
                                   ["protocol"], registry=registry)
        self.open = Gauge("reel_ingest_connections_open", "Connections open, by protocol",
                          ["protocol"], registry=registry)
        self.publishers = Gauge("reel_ingest_publishers", "Publishers live (accepted, not yet gone)",
                                ["protocol"], registry=registry)
        self.received = Counter("reel_ingest_received_bytes_total", "Bytes received from publishers",
                                ["protocol"], registry=registry)
        self.refusals = Counter("reel_ingest_refusals_total",
                                "Connections and publishers refused or cut off, by reason",
                                ["protocol", "reason"], registry=registry)


@dataclass
class Session:
    """What one connection's end is reported with. The stream key is a secret: only a digest
    of it is logged, enough to tell streams apart and to match control's records."""

    protocol: str
    remote: str
    app: str = ""
    key: str = ""
    published: bool = False
    packets: int = 0
    received: int = 0

    def describe(self) -> dict[str, object]:
        key = hashlib.sha256(self.key.encode()).hexdigest()[:12] if self.key else None
        return {"protocol": self.protocol, "remote": self.remote, "app": self.app or None,
                "key_sha256": key, "packets": self.packets, "bytes": self.received}


def report(session: Session, outcome: BaseException | None, metrics: IngestMetrics) -> None:
    """Exactly one line for a publisher however it went; nothing for a connection that said
    nothing (a port probe)."""
    where = session.describe()
    if isinstance(outcome, CutOff):
        metrics.refusals.labels(session.protocol, outcome.reason).inc()
        log.warning("publisher cut off", extra=fields(reason=outcome.reason, **where, **outcome.detail))
    elif isinstance(outcome, ConnectionError | asyncio.IncompleteReadError):
        if session.received:
            log.info("publisher gone", extra=fields(reason="connection_lost", **where))
    elif outcome is not None:
        metrics.refusals.labels(session.protocol, "internal_error").inc()
        log.error("publisher failed", exc_info=outcome, extra=fields(reason="internal_error", **where))
    elif session.published:
        log.info("publish ended", extra=fields(**where))
