"""One edge process: its cache, its fetches in progress, its upstreams, prefetch and purge.

The fronts (app.py on aiohttp, server.py on its own protocol) turn requests into `Ask`s and call
`Edge.answer`, which says where the answer comes from: a cached entry (HIT, or STALE while a
refresh runs behind it), or the stream of the one fetch of that key (MISS for the request that
started it, COALESCED for the rest). The fronts shape and send; everything else is here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import posixpath
import time
import zlib
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from edge import live
from edge.cache import NO_STORE, Cache, Entry, Policy, header_age, policy, select_headers
from edge.http import (
    PROBLEM_HEADERS,
    RELAY_HEADER,
    Ask,
    Shape,
    XCache,
    base_key,
    cmcd_nor,
    local,
    relative_key,
)
from edge.inflight import Abandoned, FetchEnd, FetchFailed, Flight, Flights, Head, Stream
from edge.live import is_live_key, is_live_playlist
from edge.stats import Stats, merge
from edge.upstream import Upstream, UpstreamError
from reel.http import problem_body
from reel.logs import fields
from reel.playback_token import KeyRing, Viewer, token_path
from reel.viewers import Viewers, node_id

log = logging.getLogger("reel.edge")

MEDIA_PLAYLIST = "index.m3u8"  # the layout's name for a rendition's playlist (DESIGN.md)
MAX_PURGE_BODY = 1 << 20
MAX_PURGE_ITEMS = 10_000
UPSTREAM_TOKEN_TTL = 120.0  # the token an edge signs for its own fetch of a video's object
ONE_PART = Policy(True, 1.0)  # a plain live reload's rules until its PART-TARGET is read


@dataclass(frozen=True)
class Settings:
    """One edge's configuration; make_app's keyword arguments set any of these. Seconds, bytes."""

    region: str
    upstreams: list[str]  # the shield first if any, then the origins nearest first
    cache_bytes: int
    max_object_bytes: int
    max_waiters: int = 10_000  # requests following one fetch (viewers of one blocking reload)
    max_waiters_total: int = 100_000  # requests following any fetch, in one process
    waiter_timeout: float = 30.0
    connect_timeout: float = 1.0
    first_byte_timeout: float = 5.0
    # A blocking reload or a live part is held upstream until the stream makes it.
    live_hold_timeout: float = 20.0
    # ... and may wait longer for its TCP connect (edge.upstream: a SYN lost to a busy origin's
    # full accept queue is resent after 1 s, then 3 s).
    live_connect_timeout: float = 4.0
    read_timeout: float = 10.0
    # Unread bytes a streamed-through fetch holds for its readers before cutting the slowest.
    stream_window: int = 4 << 20
    # For origins that send neither directive.
    stale_while_revalidate: float = 2.0
    stale_if_error: float = 86400.0
    prefetch_segments: int = 3
    prefetch_concurrency: int = 8
    # Live: after answering a playlist, ask for the next blocking reload and the preload-hinted
    # part before any viewer does; at most this many such fetches at once (each is held upstream
    # for up to a part, so one stream's renditions take two each).
    live_prefetch: int = 64
    health_interval: float = 2.0
    # Client connections (edge.server): a request head must arrive within head_timeout, an idle
    # keep-alive connection is closed after keepalive_timeout, a reader who takes nothing for
    # send_timeout is dropped.
    max_head: int = 16 * 1024
    head_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    send_timeout: float = 30.0
    purge_token: str | None = None
    # Playback tokens (private and unlisted videos): checked on every request that carries one,
    # and signed for the edge's own upstream fetches (one fetch serves every viewer).
    ring: KeyRing | None = None
    # The worker processes of this edge (their private URLs, by index) and which one this is.
    workers: tuple[str, ...] = ()
    worker: int = 0

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(url for index, url in enumerate(self.workers) if index != self.worker)

    def owner(self, key: str) -> str | None:
        """The sibling worker that fetches `key` from upstream for every worker (None: this one).
        One worker per key keeps a burst at one origin fetch per edge, whatever worker the
        kernel handed each connection to, and spreads the fan-out to waiters over the cores."""
        if len(self.workers) < 2:
            return None
        index = zlib.crc32(key.encode()) % len(self.workers)
        return None if index == self.worker else self.workers[index]


Source = Entry | Stream


class Edge:
    """One region's edge in one process."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.cache = Cache(settings.cache_bytes, settings.max_object_bytes, self._evicted)
        self.flights = Flights(settings.max_waiters, settings.stream_window, settings.max_waiters_total)
        self.stats = Stats(registry, {
            "reel_edge_cache_bytes": ("Bytes held by the cache", lambda: self.cache.bytes),
            "reel_edge_cache_objects": ("Objects in the cache", lambda: len(self.cache)),
            "reel_edge_inflight_fetches": ("Upstream fetches in progress", lambda: len(self.flights)),
            "reel_edge_inflight_readers": ("Requests following an upstream fetch",
                                           lambda: self.flights.readers),
        })
        self.upstream = Upstream(
            settings.upstreams,
            on_response=self.stats.fetched,
            on_error=self.stats.upstream_failed,
            connect_timeout=settings.connect_timeout,
            first_byte_timeout=settings.first_byte_timeout,
            live_hold_timeout=settings.live_hold_timeout,
            live_connect_timeout=settings.live_connect_timeout,
            read_timeout=settings.read_timeout,
            health_interval=settings.health_interval,
        )
        for url in self.upstream.urls:
            self.stats.upstream_up[url] = lambda url=url: self.upstream.healthy(url)
        self._tasks: set[asyncio.Task[None]] = set()
        self._prefetching = 0
        self.viewers = Viewers(node_id(settings.region))  # of live streams, told upstream
        self._live_prefetching = 0
        self.newest = live.Newest()

    def _evicted(self, key: str, entry: Entry) -> None:
        self.stats.evictions += 1

    async def start(self) -> None:
        await self.upstream.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- answering: who serves a request, and who fetches -----------------------------------------

    def admits(self, ask: Ask, address: str | None) -> bool:
        """Whether the playback token `ask` carries (if any) is valid for its video. A request
        with none is checked against what it is answered from (`Stored.guarded`)."""
        token, ring = ask.token, self.settings.ring
        if token is None:
            return True
        video_id = ask.key.split("/", 2)[1]
        return ring is not None and ring.verify(token, video_id, Viewer(self.settings.region, address))

    def upstream_path(self, key: str) -> str:
        """The path an upstream fetch asks for: with a token of the edge's own when it has a key
        ring, so a private object is fetched once whichever viewer's request started it."""
        ring = self.settings.ring
        if ring is None:
            return "/" + key
        return token_path("/" + key, ring.sign(key.split("/", 2)[1], UPSTREAM_TOKEN_TTL))

    # What a subclass in front of another upstream changes (edge.api: control's JSON).

    def fetch_headers(self, key: str) -> dict[str, str]:
        """Headers of the upstream fetch of `key`, beside its validators."""
        return {}

    def kept_headers(self, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The upstream headers kept with a response and passed on with it."""
        return select_headers(headers)

    def cache_policy(self, headers: Mapping[str, str]) -> Policy:
        """How a 200 with `headers` may be cached."""
        return policy(headers, self.settings.stale_while_revalidate, self.settings.stale_if_error)

    def answer(self, ask: Ask) -> tuple[XCache, Source]:
        """Where `ask`'s answer comes from: a cached entry (HIT; STALE while a refresh runs behind
        it), or the stream of the one fetch of its key (MISS for the request that started it,
        COALESCED for the rest), which the front reads through a Cursor of its own."""
        key = ask.key
        self.cache.seen(key)
        entry = self.cache.get(key)
        now = time.monotonic()
        if entry is not None:
            if entry.fresh(now):
                if entry.prefetched:
                    entry.prefetched = False
                    self.stats.prefetch_hits += 1
                    if is_live_playlist(key):
                        self._live_ahead(key, entry.body)  # viewers still watch: keep ahead
                # A hot segment reads the playlist once a second; CMCD's nor on every request.
                ahead = now >= entry.next_prefetch
                if ahead:
                    entry.next_prefetch = now + 1.0
                if ahead or ask.cmcd:
                    self._look_ahead(ask, ahead)
                return XCache.HIT, entry
        # A viewer behind: a fresh newer answer holds its part (no refresh of an old key).
        if "_HLS_msn=" in key and (newer := self.newest.find(key, now)) is not None:
            return XCache.HIT, newer
        if entry is not None and entry.stale_while_revalidate(now):
            if key not in self.flights:
                self._lead(key, entry)  # the one background refresh
            return XCache.STALE, entry
        flight = self.flights.get(key)
        if flight is not None:
            if flight.prefetch:
                flight.prefetch = False  # a viewer got here first: count it once
                self.stats.prefetch_hits += 1
            return XCache.COALESCED, flight.stream
        flight = self._lead(key, entry)
        self._look_ahead(ask)
        return XCache.MISS, flight.stream

    def too_many_waiters(self, head: bool) -> Shape:
        """The answer beyond the waiting bounds (per key, per process): try again in a second."""
        self.stats.refused_waiters += 1
        return local(503, "Too Many Waiters", head=head, extra=[("Retry-After", "1")],
                     detail="this edge holds as many waiting requests as it may; retry shortly")

    def _lead(self, key: str, stale: Entry | None, prefetch: bool = False) -> Flight:
        flight = self.flights.lead(key, prefetch)
        self._spawn(self._fetch(flight, stale), f"fetch {key}")
        return flight

    def _live_ahead(self, key: str, body: bytes | bytearray | memoryview) -> None:
        """After a live playlist a viewer had: the next blocking reload and the hinted part,
        asked for now. Bounded; it stops by itself when nobody watches, since only a playlist
        some viewer read leads to the next one."""
        if self.settings.live_prefetch <= 0:
            return
        upcoming = live.ahead(key, body)
        for target in (upcoming.reload, upcoming.hint):
            if target is None or target in self.cache or target in self.flights:
                continue
            if self._live_prefetching >= self.settings.live_prefetch:
                return
            self._live_prefetching += 1
            self.stats.prefetches += 1
            self.stats.live_prefetches += 1
            self._lead(target, None, prefetch=True)

    # -- prefetch -------------------------------------------------------------------------------

    def _look_ahead(self, ask: Ask, playlist: bool = True) -> None:
        """After media segment N: fetch N+1..N+k from the cached media playlist, and CMCD's nor."""
        key = ask.key
        if base_key(key).endswith(".m3u8"):
            return
        targets: list[str] = []
        nor = cmcd_nor(ask.cmcd)
        if nor is not None and (target := relative_key(key, nor)) is not None:
            targets.append(target)
        k = self.settings.prefetch_segments
        if k > 0 and playlist:
            playlist_key = posixpath.join(posixpath.dirname(key), MEDIA_PLAYLIST)
            entry = self.cache.get(playlist_key)
            if entry is not None:
                order, position = _segments(entry, playlist_key)
                at = position.get(key)
                if at is not None:
                    targets += order[at + 1 : at + 1 + k]
        for target in targets:
            if target in self.cache or target in self.flights:
                continue
            if self._prefetching >= self.settings.prefetch_concurrency:
                return  # bounded: a prefetch is never queued behind others
            self._prefetching += 1
            self.stats.prefetches += 1
            self._lead(target, None, prefetch=True)

    # -- the one upstream fetch per key -------------------------------------------------------

    async def _fetch(self, flight: Flight, stale: Entry | None) -> None:
        """Fetch `flight.key` upstream, feed its stream, cache the result if we may, and name
        how it ended. With a `stale` entry this is a refresh: conditional, and the stale copy
        stands in when the upstream fails (stale-if-error)."""
        prefetch, live_key = flight.prefetch, is_live_key(flight.key)
        try:
            flight.end(await self._fetch_into(flight, stale))
        except Abandoned:
            flight.end(FetchEnd.GIVE_UP, FetchFailed("abandoned"))
        except asyncio.CancelledError:
            flight.end(FetchEnd.DANGLING, FetchFailed("edge shutting down"))
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, FetchFailed) as exc:
            self.upstream.failed(flight.upstream)
            log.warning("upstream body failed",
                        extra=fields(key=flight.key, upstream=flight.upstream, error=repr(exc)))
            flight.end(FetchEnd.TRANSIENT_ERROR, exc)
        except Exception as exc:  # never leave readers hanging on a bug
            log.exception("fetch failed", extra=fields(key=flight.key))
            flight.end(FetchEnd.DANGLING, exc)
        finally:
            self.flights.forget(flight)
            if prefetch:
                if live_key:
                    self._live_prefetching -= 1
                else:
                    self._prefetching -= 1
            if (flight.outcome is FetchEnd.DONE and not flight.prefetch and is_live_playlist(flight.key)
                    and flight.stream.retaining and flight.stream.head is not None
                    and flight.stream.head.status == 200):
                self._live_ahead(flight.key, flight.stream.body())
            self.stats.fetch_ended(flight.outcome.value)
            if stale is not None and flight.outcome is FetchEnd.DONE and self.cache.peek(flight.key) is stale:
                self.cache.pop(flight.key)  # a newer answer that may not be kept replaces the old one

    async def _fetch_into(self, flight: Flight, stale: Entry | None) -> FetchEnd:
        asked = time.perf_counter()
        try:
            resp, flight.upstream = await self.upstream.open(
                self.upstream_path(flight.key),
                {**self.fetch_headers(flight.key), **self.viewers.upstream_headers(flight.key),
                 **(stale.validators if stale else {})},
                via=self.settings.owner(flight.key),
            )
        except UpstreamError as exc:
            self.stats.upstream_asked(flight.key)
            outcome = FetchEnd.TIMEOUT if exc.timed_out else FetchEnd.TRANSIENT_ERROR
            if not self._stand_in(flight, stale):
                self._answer_locally(flight, 504 if exc.timed_out else 502, str(exc))
            return outcome
        if flight.upstream not in self.settings.workers:
            # Requests that left the edge: a fetch through the key's owner worker is counted by
            # the owner, so the sum over workers (/metrics) is the origin's count.
            self.stats.upstream_asked(flight.key)
        self.stats.upstream_head(time.perf_counter() - asked)
        async with resp:
            if resp.status == 304 and stale is not None:
                self._revalidated(flight, stale, resp.headers)
                return FetchEnd.DONE
            if resp.status >= 500 and self._stand_in(flight, stale):
                return FetchEnd.TRANSIENT_ERROR
            head, rules = await self._stream_body(flight, resp)
        # In one tick with _store and the flight's end: a new request finds the flight or the entry.
        flight.stream.finish()
        self._store(flight, head, rules)
        return FetchEnd.DONE

    async def _stream_body(self, flight: Flight, resp: aiohttp.ClientResponse) -> tuple[Head, Policy]:
        """Pass the upstream's response to the flight's stream as it arrives; the head and the
        rules it may be cached by once the stream is finished."""
        settings, stream = self.settings, flight.stream
        head = Head(resp.status, self.kept_headers(resp.headers), resp.content_length,
                    header_age(resp.headers.get("Age")))
        if flight.upstream == settings.owner(flight.key):
            head.relayed = XCache.__members__.get(resp.headers.get("X-Cache", ""))
        rules = self.cache_policy(resp.headers) if resp.status == 200 else NO_STORE
        if (resp.status == 200 and is_live_playlist(flight.key) and "?" not in flight.key
                and live.brief(resp.headers.get("Cache-Control", ""))):
            rules = ONE_PART  # _store reads how long a part is
        limit = settings.max_object_bytes
        keep = (
            rules.store
            and (head.length is None or head.length <= limit)
            and (rules.ttl > head.age or bool(head.etag or head.modified))
        )
        stream.start(head, keep)
        while chunk := await self.upstream.read(resp):
            await stream.append(chunk)
            if stream.retaining and stream.size > limit:
                stream.stop_retaining()
        if head.length is not None and stream.size != head.length:
            raise aiohttp.ClientPayloadError(f"{stream.size} of {head.length} bytes")
        return head, (rules if keep and stream.retaining else NO_STORE)

    def _store(self, flight: Flight, head: Head, rules: Policy) -> None:
        """Cache a complete response, if its rules and a purge allow."""
        if not (rules.store and flight.cacheable):
            return
        body = flight.stream.body()
        if rules is ONE_PART:
            # A plain live reload ("now") changes every part: kept for about one part, it spares
            # the origin a request per viewer per part without showing anyone an older "now".
            target = live.part_target(bytes(body[:4096]).decode("utf-8", "replace"))
            if not target:
                return
            rules = Policy(True, min(target, 1.0))
        entry = Entry(200, head.headers, body, time.monotonic(), rules, head.age)
        entry.prefetched = flight.prefetch
        # A prefetch is asked for next by the viewer it was made for: no contest for room.
        self.cache.put(flight.key, entry, admit=flight.prefetch)
        if "_HLS_msn=" in flight.key and is_live_playlist(flight.key) and flight.key in self.cache:
            self.newest.offer(flight.key, entry, live.ahead(flight.key, body).last)

    def _revalidated(self, flight: Flight, stale: Entry, headers: Mapping[str, str]) -> None:
        """A 304: the stale copy, fresh again, for every reader and the cache."""
        settings, now = self.settings, time.monotonic()
        entry = stale.revalidated(headers, settings.stale_while_revalidate, settings.stale_if_error, now)
        if flight.cacheable:
            self.cache.put(flight.key, entry)
        flight.stream.complete(Head(200, entry.headers, len(entry.body), int(entry.age(now))), entry.body)

    def _stand_in(self, flight: Flight, stale: Entry | None) -> bool:
        """stale-if-error: answer every reader with the stale copy, if it may still be used."""
        now = time.monotonic()
        if stale is None or not stale.stale_if_error(now):
            return False
        head = Head(stale.status, stale.headers, len(stale.body), int(stale.age(now)), x_cache=XCache.STALE)
        flight.stream.complete(head, stale.body)
        log.warning("serving stale", extra=fields(key=flight.key))
        return True

    @staticmethod
    def _answer_locally(flight: Flight, status: int, detail: str) -> None:
        """Every reader gets the same problem+json when no upstream answered."""
        body = problem_body(status, "Bad Gateway" if status == 502 else "Gateway Timeout")
        flight.stream.complete(Head(status, PROBLEM_HEADERS, len(body)), body)
        log.warning("no upstream answered", extra=fields(key=flight.key, detail=detail))

    # -- purge, health, metrics -----------------------------------------------------------------

    def authorize(self, authorization: str | None) -> int | None:
        """None when the request may purge, else the status to refuse it with (403 or 401)."""
        token = self.settings.purge_token
        if not token:
            return 403
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return 401
        return None

    async def purge(self, body: bytes, relayed: bool) -> int:
        """Purge what the JSON `body` names here and (unless `relayed`) in sibling workers.
        Raises ValueError with a message for the client when the body is not a purge request."""
        paths, prefixes = parse_purge(body)
        keys = {path[1:] for path in paths}
        # A live playlist's blocking answers are kept under its key and their directives.
        starts = tuple(prefix[1:] for prefix in prefixes) + tuple(f"{key}?" for key in keys
                                                                    if key.endswith(".m3u8"))
        gone = self.cache.purge(keys, starts) | self.flights.purge(keys, starts)
        self.newest.clear()  # rare: the next blocking answers fill it again
        self.stats.purged += len(gone)
        count = len(gone)
        if not relayed and self.settings.peers:
            headers = {"Authorization": f"Bearer {self.settings.purge_token}", RELAY_HEADER: "1"}
            for answer in await self._relay("POST", "/purge", headers, body):
                try:
                    count += int(json.loads(answer)["purged"])
                except (ValueError, KeyError, TypeError):
                    pass
        log.info("purged", extra=fields(paths=len(paths), prefixes=len(prefixes), purged=count))
        return count

    def health(self, load: dict[str, int] | None = None) -> dict[str, object]:
        """/healthz's body; `load` (client connections, from the front that has them) lets geo
        prefer the least loaded of equally near edges."""
        return {
            "status": "ok",
            "region": self.settings.region,
            "pid": os.getpid(),
            "cache": {
                "bytes": self.cache.bytes, "objects": len(self.cache), "max_bytes": self.cache.max_bytes
            },
            "inflight": len(self.flights),
            "upstreams": {url: self.upstream.healthy(url) for url in self.upstream.urls},
            **({"load": load} if load is not None else {}),
        }

    async def metrics(self, local: str, relayed: bool) -> str:
        """This process's metrics text `local`, summed with the sibling workers' unless `relayed`."""
        if relayed or not self.settings.peers:
            return local
        return merge([local, *await self._relay("GET", "/metrics", {RELAY_HEADER: "1"}, None)])

    async def _relay(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> list[str]:
        """The answers of the sibling workers that answered (each within two seconds)."""
        async def one(peer: str) -> str | None:
            try:
                async with self.upstream.session.request(
                    method, peer + path, headers=headers, data=body, timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    return await resp.text() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, OSError):
                log.warning("sibling worker did not answer", extra=fields(peer=peer, path=path))
                return None

        answers = await asyncio.gather(*(one(peer) for peer in self.settings.peers))
        return [answer for answer in answers if answer is not None]


def parse_purge(body: bytes) -> tuple[list[str], list[str]]:
    """(paths, prefixes) of a purge request body; ValueError says what is wrong with it."""
    if len(body) > MAX_PURGE_BODY:
        raise ValueError("body too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError('expected an object {"paths": [...], "prefixes": [...]}')
    lists = []
    for name in ("paths", "prefixes"):
        items = doc.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, str) and i.startswith("/") for i in items):
            raise ValueError(f"{name} must be a list of paths starting with /")
        lists.append(items)
    if len(lists[0]) + len(lists[1]) > MAX_PURGE_ITEMS:
        raise ValueError(f"at most {MAX_PURGE_ITEMS} paths and prefixes at once")
    return lists[0], lists[1]


def _segments(playlist: Entry, playlist_key: str) -> tuple[list[str], dict[str, int]]:
    """A media playlist's segment keys in order, and each one's position; parsed once per entry."""
    if not isinstance(playlist.memo, tuple):
        position: dict[str, int] = {}
        for line in bytes(playlist.body).decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key = relative_key(playlist_key, line)
                if key is not None and key not in position:  # byte-range segments repeat a URI
                    position[key] = len(position)
        playlist.memo = (list(position), position)
    return playlist.memo
