"""What an edge request asks and how the edge answers it, whichever front received it.

Ranges, conditionals, CORS and problem answers are shared with the origin and live in reel/http.py
(the edge may not import origin, DESIGN.md). The edge's own parts: the loose path check (the edge
has no layout to parse, so it keeps to the layout's alphabet and lets the origin 404 the rest),
the request view `Ask`, and `shape`, the one place that turns a stored or in-flight response into
the status, headers and byte span a request gets.
"""

from __future__ import annotations

import functools
import re
from enum import StrEnum
from urllib.parse import quote, unquote, urljoin

from reel.http import (
    CORS,
    Unsatisfiable,
    if_range_applies,
    not_modified_by,
    parse_http_date,
    parse_range,
    problem_body,
    raw_target_safe,
)
from reel.playback_token import ACCESS_HEADER, split_path

# A request one worker makes of a sibling: a fetch of a key the sibling owns (served to it first),
# or a purge or /metrics that the sibling must not pass on again.
RELAY_HEADER = "X-Reel-Relay"

MAX_PATH = 512
# The layout's alphabet; the origin does the exact check and 404s the rest.
_PATH = re.compile(r"/(?:vod|live)/[A-Za-z0-9_.-][A-Za-z0-9_./-]*")
NOT_MODIFIED_HEADERS = ("ETag", "Last-Modified", "Cache-Control", "Expires")
_CORS = tuple(CORS.items())
_DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip")
PROBLEM_HEADERS = (("Content-Type", "application/problem+json"), ("Cache-Control", "no-store"))

Headers = list[tuple[str, str]]


class XCache(StrEnum):
    """Where an edge response came from; every response says it (DESIGN.md)."""

    HIT = "HIT"  # a fresh cached copy
    MISS = "MISS"  # the request that started the upstream fetch, or an answer the edge made itself
    COALESCED = "COALESCED"  # a follower of a fetch another request started
    STALE = "STALE"  # an expired copy: refreshing behind it, or standing in for a failing upstream


class Stored:
    """A response as the edge keeps it, cached (`Entry`) or arriving (`Head`): the status, the
    upstream headers worth keeping, and the validators they carry. `wire` is the front's memo of
    the heads it serialized for it, shared by every request it answers."""

    __slots__ = ("status", "headers", "etag", "modified", "wire", "guarded")

    def __init__(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        self.status, self.headers = status, headers
        self.etag = self.header("ETag")
        self.modified = parse_http_date(self.header("Last-Modified"))
        self.wire: dict[object, bytes] = {}
        # The origin marked it (a private or unlisted video, or an unknown one): only a request
        # with a valid playback token may have it.
        self.guarded = self.header(ACCESS_HEADER) is not None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def key_of_target(target: str) -> str | None:
    """The object key ("vod/…") a raw request target names, or None when it cannot be one."""
    return split_target(target)[0]


@functools.lru_cache(maxsize=4096)  # hot objects are asked for by the same few targets
def split_target(target: str) -> tuple[str | None, str | None]:
    """(the object key a raw request target names, or None; its playback token, or None). The
    token segment (`/vod/{id}/~{token}/…`) is never part of the key: one copy serves everyone."""
    if not raw_target_safe(target, MAX_PATH):
        return None, None
    path, token = split_path(target.partition("?")[0])
    if "%" in path:  # the dangerous escapes are refused above; the rest must decode to the alphabet
        path = unquote(path, errors="replace") if path.isascii() else ""
    if not _PATH.fullmatch(path) or ".." in path or "//" in path:
        return None, None
    if path.startswith("/live/") and path.endswith(".m3u8") and "_HLS_" in target:
        return path[1:] + blocking_query(target.partition("?")[2]), token
    return path[1:], token


def blocking_query(query: str) -> str:
    """The LL-HLS delivery directives of a live playlist's query, normalised ("?_HLS_msn=12&
    _HLS_part=2&_HLS_skip=YES", fixed order, numbers without leading zeros, everything else
    dropped), or "" when it has none. Part of the cache key and passed upstream as it is: every
    viewer waiting for the same part shares one key, so one upstream request."""
    found: dict[str, str] = {}
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name in _DIRECTIVES and name not in found:
            if value.isdigit() and name != "_HLS_skip":
                value = str(int(value[:12]))
            found[name] = quote(unquote(value), safe="")[:32]  # the upstream answers 400 if wrong
    return "?" + "&".join(f"{name}={found[name]}" for name in _DIRECTIVES if name in found) if found else ""


def base_key(key: str) -> str:
    """The object a key names, without its LL-HLS directives."""
    return key.partition("?")[0]


def relative_key(key: str, reference: str) -> str | None:
    """The key `reference` (a playlist URI, a CMCD nor) names, relative to `key`'s object."""
    reference = reference.partition("?")[0].partition("#")[0]
    if not reference or not reference.isascii():
        return None
    return key_of_target(urljoin("/" + key, reference))


def cmcd_nor(cmcd: str | None) -> str | None:
    """The `nor` (next object request) of CMCD data ("k=v,k2,nor=\\"seg_2.m4s\\"")."""
    if not cmcd or "nor=" not in cmcd:
        return None
    for item in cmcd.split(","):
        name, _, value = item.strip().partition("=")
        if name == "nor":
            return value.strip('"')  # a relative reference, used as it is (the edge checks it)
    return None


class Ask:
    """The parts of a GET or HEAD for an object that decide the answer."""

    __slots__ = ("method", "key", "range", "if_range", "if_none_match", "if_modified_since", "cmcd",
                 "token")

    def __init__(
        self,
        method: str,
        key: str,
        range: str | None = None,
        if_range: str | None = None,
        if_none_match: str | None = None,
        if_modified_since: str | None = None,
        cmcd: str | None = None,
        token: str | None = None,
    ) -> None:
        self.method, self.key = method, key
        self.range, self.if_range = range, if_range
        self.if_none_match, self.if_modified_since = if_none_match, if_modified_since
        self.cmcd = cmcd
        self.token = token  # checked by Edge.admits before anything is fetched

    @property
    def plain(self) -> bool:
        """No Range and no conditional: every such request for a source gets the same head."""
        return self.range is None and self.if_none_match is None and self.if_modified_since is None


class Shape:
    """A response to send: status, headers, and the body as a span of the source or as bytes.

    `span` is (start, end) with end None for "to whatever end the source has"; `length` is the
    Content-Length (None: unknown, so chunked or close-delimited).
    """

    __slots__ = ("status", "headers", "span", "body", "length")

    def __init__(
        self,
        status: int,
        headers: Headers,
        span: tuple[int, int | None] | None = None,
        body: bytes | None = None,
        length: int | None = None,
    ) -> None:
        self.status, self.headers, self.span, self.body = status, headers, span, body
        self.length = len(body) if body is not None else length


def refusal(head: bool = False) -> Shape:
    """The one answer to a request without a valid playback token, whether the video exists."""
    return local(403, "Forbidden", detail="this video needs a valid playback token", head=head)


def local(
    status: int, title: str, *, detail: str | None = None, head: bool = False,
    x_cache: XCache = XCache.MISS, age: int = 0, extra: Headers | None = None,
) -> Shape:
    """A problem+json answer the edge makes itself (never cached), with the edge's headers."""
    body = problem_body(status, title, detail)
    headers = [*PROBLEM_HEADERS, *_CORS, ("X-Cache", x_cache), ("Age", str(age)), *(extra or ())]
    shape = Shape(status, headers, body=b"" if head else body)
    shape.length = len(body)
    return shape


def shape(ask: Ask, stored: Stored, length: int | None, x_cache: XCache, age: int) -> Shape:
    """How to answer `ask` from a response (its body `length` bytes, when known): 304, 206 or 416
    when the request asks for it, else the response as it is."""
    tail = [*_CORS, ("X-Cache", x_cache), ("Age", str(age))]
    status, headers = stored.status, stored.headers
    if status == 200:
        if not_modified_by(ask.if_none_match, ask.if_modified_since, stored.etag, stored.modified):
            kept = [(k, v) for k, v in headers if k in NOT_MODIFIED_HEADERS]
            return Shape(304, kept + tail, length=None)
        tail.append(("Accept-Ranges", "bytes"))
        # A range needs the size; an upstream that did not say it gets the whole object.
        if (
            ask.range is not None
            and ask.method == "GET"
            and length is not None
            and if_range_applies(ask.if_range, stored.etag, stored.modified)
        ):
            try:
                span = parse_range(ask.range, length)
            except Unsatisfiable:
                return local(416, "Range Not Satisfiable", x_cache=x_cache, age=age,
                             extra=[("Content-Range", f"bytes */{length}")])
            if span is not None:
                tail.append(("Content-Range", f"bytes {span[0]}-{span[1] - 1}/{length}"))
                return Shape(206, [*headers, *tail], span, length=span[1] - span[0])
    return Shape(status, [*headers, *tail], None if ask.method == "HEAD" else (0, None), length=length)
