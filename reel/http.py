"""HTTP semantics shared by the services that serve objects: ranges, conditionals, CORS, problems.

The origin and the edge must answer a request for an object the same way (RFC 9110 byte ranges,
If-None-Match / If-Modified-Since / If-Range, the same CORS headers), but DESIGN.md forbids the edge
importing origin. So the one implementation lives here, in the small shared package both may import.
Validators are passed as an ETag string and a Last-Modified in seconds since the epoch; a service
that only has the Last-Modified header (the edge's cache) converts it with `parse_http_date`.
"""

from __future__ import annotations

import email.utils
import json
import re

import aiohttp
from aiohttp import web

# An edge proves itself to control with this header carrying their shared secret: only then does
# control believe its X-Forwarded-For (control.caching, edge.api).
EDGE_SECRET_HEADER = "X-Reel-Edge"

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Age, X-Cache, ETag",
}
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Modified-Since",
    "Access-Control-Max-Age": "86400",
}

# Checked on the raw (still percent-encoded) path: aiohttp decodes %2f and %2e before routing, so
# an encoded traversal would otherwise reach the key check looking like an ordinary path.
_FORBIDDEN_RAW = ("%2e", "%2f", "%5c", "%00", "..", "\\", "\x00", "//")
_FORBIDDEN = re.compile("|".join(re.escape(bad) for bad in _FORBIDDEN_RAW), re.IGNORECASE)

# At most 18 digits: a longer number is malformed (and int() of a huge string is costly).
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", re.IGNORECASE | re.ASCII)


class Unsatisfiable(Exception):
    """The Range names no byte of the object (answer 416)."""


def raw_path_safe(request: web.BaseRequest, max_length: int | None = None) -> bool:
    """False when the raw path (query aside) is longer than `max_length` or could hide a traversal."""
    return raw_target_safe(request.raw_path, max_length)


def raw_target_safe(target: str, max_length: int | None = None) -> bool:
    """`raw_path_safe` for a request target as it came off the wire."""
    raw = target.partition("?")[0]
    if max_length is not None and len(raw) > max_length:
        return False
    return _FORBIDDEN.search(raw) is None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range [start, end) a Range header asks for, or None for the whole object.

    Malformed, multi-range and unknown-unit headers give None: RFC 9110 lets a server ignore them
    and answer 200. Raises Unsatisfiable when the range starts past the end.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = int(last) + 1 if last else size
        if last and end <= start:
            return None  # "5-3" is invalid, not unsatisfiable
        if start >= size:
            raise Unsatisfiable
        return start, min(end, size)
    if not last:
        return None
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise Unsatisfiable
    return max(0, size - suffix), size


def http_date(ts: float) -> str:
    """`ts` (seconds since the epoch) as an IMF-fixdate, for Last-Modified."""
    return email.utils.formatdate(ts, usegmt=True)


def parse_http_date(value: str | None) -> int | None:
    """Whole seconds since the epoch of an HTTP date, or None when absent or unparseable."""
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _opaque(etag: str) -> str:
    return etag.removeprefix("W/").strip('"')


# An entity tag in a list: optional W/, then a quoted string (RFC 9110 §8.8.3).
_ETAG = re.compile(r'\s*(?:W/)?"([^"]*)"\s*(?:,|$)')


def etag_matches(if_none_match: str, etag: str | None) -> bool:
    """Whether an If-None-Match value names `etag` (weak comparison); "*" matches anything."""
    if if_none_match.strip() == "*":
        return True
    if not etag:
        return False
    mine = _opaque(etag)
    return any(match.group(1) == mine for match in _ETAG.finditer(if_none_match))


def not_modified_by(
    if_none_match: str | None, if_modified_since: str | None, etag: str | None, last_modified: float | None
) -> bool:
    """`not_modified` from the raw header values, for servers that have no aiohttp request."""
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    since = parse_http_date(if_modified_since)
    return since is not None and last_modified is not None and int(last_modified) <= since


def not_modified(request: web.BaseRequest, etag: str | None, last_modified: float | None) -> bool:
    """RFC 9110 §13.2.2 for GET/HEAD: If-None-Match (weak comparison) wins over If-Modified-Since."""
    tags = request.if_none_match
    if tags is not None:
        mine = _opaque(etag) if etag else None
        return any(tag.value == "*" or tag.value == mine for tag in tags)
    since = request.if_modified_since
    return since is not None and last_modified is not None and int(last_modified) <= since.timestamp()


def if_range_applies(if_range: str | None, etag: str | None, last_modified: float | None) -> bool:
    """`if_range_ok` from the raw If-Range value."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return etag is not None and value == etag  # strong comparison: a weak tag never matches
    if value.startswith("W/"):
        return False
    date = parse_http_date(value)
    return date is not None and last_modified is not None and date == int(last_modified)


def if_range_ok(request: web.BaseRequest, etag: str | None, last_modified: float | None) -> bool:
    """True when the Range applies: no If-Range, or it still names this representation."""
    return if_range_applies(request.headers.get("If-Range"), etag, last_modified)


def problem_body(status: int, title: str, detail: str | None = None) -> bytes:
    """The RFC 7807 document `problem` sends, for servers that write their own responses."""
    doc: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        doc["detail"] = detail
    return json.dumps(doc).encode()


def problem(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    head: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An RFC 7807 `application/problem+json` answer (no body for HEAD); never cached."""
    return web.Response(
        status=status,
        body=None if head else problem_body(status, title, detail),
        content_type="application/problem+json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """A client response's body, or None once it runs over `limit` bytes (reading stops there,
    so a peer cannot make us hold more)."""
    body = bytearray()
    while chunk := await resp.content.readany():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
