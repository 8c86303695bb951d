"""`/api/v1/` through the edge: control's public reads cached and coalesced like media, the rest
passed through.

What may be shared is control's decision, made per response: an anonymous GET answered
`Cache-Control: public, max-age=N` is kept and coalesced exactly as an object is (an `ApiEdge` is
an `Edge` whose one upstream is control, with a cache of its own), so a hot video's JSON costs
control one request per max-age per edge, refreshes included (stale-while-revalidate). What may
not be shared never is: a request with `Authorization` or a cookie, any method but GET and HEAD,
goes to control alone and its answer to that client alone (`Stream` of its own, never in the
flights table); a shared fetch whose answer turns out personal (`private`, `no-store`, or a
`429` that throttled the client that led it) is not handed to the requests that waited on it:
each asks control for itself.

Control believes the `X-Forwarded-For` an edge sends only with the edge's shared secret
(`X-Reel-Edge`): on loopback, where `reel up` runs everything, an address cannot tell an edge
from any other local client. A shared fetch forwards the address of the client that started it,
so rate limits charge whoever missed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from yarl import URL

from edge.cache import STORED_HEADERS, Entry, Policy, policy
from edge.http import PROBLEM_HEADERS, RELAY_HEADER, Ask, XCache
from edge.inflight import FetchFailed, Flight, Head, Stream
from edge.node import Edge, Settings, parse_purge
from reel.http import CORS, EDGE_SECRET_HEADER, problem_body
from reel.logs import fields

log = logging.getLogger("reel.edge.api")

PREFIX = "/api/v1/"
MAX_BODY = 1 << 20  # request bodies the edge passes on (uploads go to control directly)
MAX_TARGET = 4096
# Seconds control has to start answering (nginx's proxy_read_timeout). Far longer than an
# origin's 5 s: a sign-up hashes a password, a busy control queues, and that is slowness to pass
# on, not a failed upstream. A client waits a little longer (edge.server.ApiFlight), so the 504
# it may get is the edge's own, saying what it waited for.
CONTROL_TIMEOUT = 60.0
# Seconds to connect to control. An origin's is 1 s, so that an edge tries the next origin soon;
# control is the one upstream, there is none to try instead, and on loopback only a starved
# machine takes a second to connect (under load 21 on two cores, 5 of 11,483 API requests got
# the edge's 504 that way): slowness to pass on too.
CONTROL_CONNECT_TIMEOUT = 5.0
# Headers the edge makes itself, or that describe one hop only (RFC 9110 §7.6.1), or that the
# edge's own CORS replaces (a second Access-Control-Allow-Origin makes browsers refuse).
_NOT_PASSED = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "date", "server", "host", "access-control-allow-origin", "x-cache", "age",
    "accept-ranges",
})
# Request headers not passed to control: hop-by-hop, the edge's own, and what a client must not
# be able to claim (the secret, a relay, an address: the edge writes those).
_NOT_ASKED = _NOT_PASSED | {EDGE_SECRET_HEADER.lower(), RELAY_HEADER.lower(), "x-forwarded-for",
                            "accept-encoding", "expect"}
# A shared answer may name these in Vary: the edge never shares with a request carrying them.
_VARY_OK = frozenset({"authorization", "cookie", "accept-encoding", "origin"})
# A sibling worker's own CORS list is the one this edge adds: not twice.
_EXPOSE_NAME = "Access-Control-Expose-Headers"
_EXPOSE = _EXPOSE_NAME.lower()
# The edge finds validators and freshness by these spellings, whatever the upstream's.
_SPELLING = {name.lower(): name for name in (*STORED_HEADERS, "Vary", "Location")}


def is_api(path: str) -> bool:
    return path.startswith(PREFIX)


def shared(method: str, headers: Mapping[bytes, str]) -> bool:
    """Whether a request may be answered from (and fill) the shared cache."""
    return method in ("GET", "HEAD") and b"authorization" not in headers and b"cookie" not in headers


def personal(head: Head) -> bool:
    """An answer meant for the one request that led the fetch, not for those waiting on it."""
    cache_control = (head.header("Cache-Control") or "").lower()
    return head.status == 429 or "private" in cache_control or "no-store" in cache_control


def passed_headers(headers: Mapping[str, str] | Any) -> tuple[tuple[str, str], ...]:
    """Control's response headers the edge passes on (and keeps with a cached copy)."""
    return tuple((_SPELLING.get(k.lower(), k), v) for k, v in headers.items()
                 if k.lower() not in _NOT_PASSED and not (k.lower() == _EXPOSE and v == CORS[_EXPOSE_NAME]))


class ApiEdge(Edge):
    """An edge in front of control: `answer` for shared reads (cache, coalescing, stale serving,
    purge, the key's owner worker), `pass_through` for the rest."""

    def __init__(self, settings: Settings, secret: str | None) -> None:
        super().__init__(settings, CollectorRegistry(auto_describe=False))
        self.secret = secret or None
        self._asking: Callable[[], str] | None = None  # the X-Forwarded-For of the request answered
        self._askers: dict[str, str] = {}  # key -> X-Forwarded-For of the request leading its fetch
        self.passed = 0  # requests passed through

    @classmethod
    def for_control(cls, media: Settings, control: str, secret: str | None, cache_bytes: int) -> ApiEdge:
        settings = dataclasses.replace(
            media, upstreams=[control], cache_bytes=cache_bytes,
            max_object_bytes=min(cache_bytes // 8, 8 << 20), prefetch_segments=0, ring=None,
            first_byte_timeout=max(media.first_byte_timeout, CONTROL_TIMEOUT),
            connect_timeout=max(media.connect_timeout, CONTROL_CONNECT_TIMEOUT),
            # control says how long and how stale; without a word, nothing is kept stale
            stale_while_revalidate=0.0, stale_if_error=0.0)
        return cls(settings, secret)

    # -- the hooks Edge calls ---------------------------------------------------------------------

    def upstream_path(self, key: str) -> str:
        return "/" + key

    def _look_ahead(self, ask: Ask, playlist: bool = True) -> None:
        return  # nothing to prefetch in JSON

    def kept_headers(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return passed_headers(headers)

    def cache_policy(self, headers: Mapping[str, str]) -> Policy:
        vary = {v.strip().lower() for v in headers.get("Vary", "").split(",") if v.strip()}
        if vary - _VARY_OK:
            return Policy(False)
        return policy(headers, 0.0, 0.0)

    def _lead(self, key: str, stale: Entry | None, prefetch: bool = False) -> Flight:
        if self._asking is not None:  # read once by the fetch's first step, fetch_headers
            self._askers[key] = self._asking()
        return super()._lead(key, stale, prefetch)

    def fetch_headers(self, key: str) -> dict[str, str]:
        return self.trust({}, self._askers.pop(key, None))

    # -- requests ---------------------------------------------------------------------------------

    def trust(self, headers: dict[str, str], forwarded: str | None) -> dict[str, str]:
        """`headers` with the secret and the client chain control may believe."""
        if self.secret is not None:
            headers[EDGE_SECRET_HEADER] = self.secret
            if forwarded:
                headers["X-Forwarded-For"] = forwarded
        return headers

    def forwarded_for(self, headers: Mapping[bytes, str], peer: str | None) -> str:
        """The X-Forwarded-For to send: a sibling worker's (it carries our secret) as it is;
        otherwise the client's own, with the address we saw appended (control reads the last)."""
        given = headers.get(b"x-forwarded-for")
        if given and self.secret is not None and hmac.compare_digest(
                headers.get(EDGE_SECRET_HEADER.lower().encode(), "").encode(), self.secret.encode()):
            return given
        return f"{given}, {peer or 'unknown'}" if given else (peer or "unknown")

    def answer_for(self, ask: Ask, forwarded: Callable[[], str]) -> tuple[XCache, Entry | Stream]:
        """Edge.answer, remembering who would lead a fetch (its address goes to control; made
        only then: a hit needs none)."""
        self._asking = forwarded
        try:
            return self.answer(ask)
        finally:
            self._asking = None

    def pass_through(self, method: str, target: str, headers: list[tuple[str, str]],
                     body: bytes | None, forwarded: str) -> Stream:
        """One request sent to control for this client alone; its answer as a stream."""
        self.passed += 1
        stream = Stream(target, 1, self.settings.stream_window)
        asked = {k: v for k, v in headers if k.lower() not in _NOT_ASKED}
        self._spawn(self._pass(stream, method, target, self.trust(asked, forwarded), body),
                    f"pass {method} {target[:80]}")
        return stream

    async def _pass(self, stream: Stream, method: str, target: str, headers: dict[str, str],
                    body: bytes | None) -> None:
        base = self.upstream.urls[0]
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self.settings.first_byte_timeout):
                    resp = await self.upstream.session.request(
                        method, URL(base + target, encoded=True), headers=headers, data=body,
                        allow_redirects=False)
            except TimeoutError:
                self.stats.upstream_failed(base)
                _problem(stream, 504, "control did not answer in time")
                return
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                self.stats.upstream_failed(base)
                _problem(stream, 502, f"control cannot be reached: {type(exc).__name__}")
                return
            self.stats.fetched(base, resp.status)
            self.stats.upstream_head(time.perf_counter() - started)
            async with resp:
                length = 0 if resp.status in (204, 304) else resp.content_length  # never chunked
                stream.start(Head(resp.status, passed_headers(resp.headers), length), keep=False)
                while chunk := await self.upstream.read(resp):
                    await stream.append(chunk)
            stream.finish()
        except asyncio.CancelledError:
            stream.fail(FetchFailed("edge shutting down"))
            raise
        except Exception as exc:  # a broken body, the client gone (Abandoned), a timeout
            log.warning("pass-through failed", extra=fields(target=target[:200], error=repr(exc)))
            stream.fail(exc)

    def forget(self, body: bytes) -> int:
        """Purge what a purge request names from this process's API cache (the media edge has
        already checked and relayed the request)."""
        paths, prefixes = parse_purge(body)
        keys = {path[1:] for path in paths if is_api(path)}
        starts = tuple(prefix[1:] for prefix in prefixes if is_api(prefix) or PREFIX.startswith(prefix))
        if not keys and not starts:
            return 0
        gone = self.cache.purge(keys, starts) | self.flights.purge(keys, starts)
        self.stats.purged += len(gone)
        return len(gone)


def _problem(stream: Stream, status: int, detail: str) -> None:
    body = problem_body(status, "Bad Gateway" if status == 502 else "Gateway Timeout", detail)
    stream.complete(Head(status, PROBLEM_HEADERS, len(body)), body)
    log.warning("control did not answer", extra=fields(status=status, detail=detail))


class ApiMetrics:
    """The API edge's counters on the edge's registry, as `reel_edge_api_*` (its Stats are the
    media edge's kind, kept apart)."""

    def __init__(self, api: ApiEdge, registry: CollectorRegistry) -> None:
        self.api = api
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for family in self.api.stats.collect():
            name = family.name.replace("reel_edge_", "reel_edge_api_", 1)
            out = Metric(name, "API (/api/v1/): " + family.documentation, family.type)
            for sample in family.samples:
                out.add_sample(sample.name.replace("reel_edge_", "reel_edge_api_", 1), sample.labels,
                               sample.value)
            yield out
        passed = Metric("reel_edge_api_passed", "API requests passed to control unshared", "counter")
        passed.add_sample("reel_edge_api_passed_total", {}, self.api.passed)
        yield passed
