"""Reading what clients send: JSON bodies into models, and the query parameters lists share.

Every refusal is a `ProblemError` with a 4xx status, so handlers never check by hand. Each
parameter is a `Param` (what the OpenAPI document says of it) beside the function reading it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from aiohttp import hdrs, web
from pydantic import BaseModel, ValidationError

from control.db import Database, Statements
from control.models import ID_PATTERN, MAX_PAGE
from control.problems import ProblemError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
MAX_JSON_BYTES = 64 * 1024
DEFAULT_PAGE = 20
MAX_OFFSET = 1000  # deep pages of a ranked list are noise; refine the query instead


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter as the document states it."""

    name: str
    where: Literal["path", "query", "header"]
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""

    def spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "in": self.where, "schema": dict(self.schema),
                "required": self.required or self.where == "path"}
        if self.description:
            spec["description"] = self.description
        return spec


def path_id(name: str, pattern: str = ID_PATTERN, description: str = "") -> Param:
    """A path segment naming something by id: anything else is a 404."""
    return Param(name, "path", {"type": "string", "pattern": pattern}, description=description)


def up_to(n: int) -> str:
    """A pattern for the decimal integers 1 to `n` (no sign, no leading zero)."""
    digits = str(n)
    shorter = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    same = [digits]
    for i, d in enumerate(digits):
        low = "1" if i == 0 else "0"
        if int(d) > int(low):
            same.append(f"{digits[:i]}[{low}-{int(d) - 1}][0-9]{{{len(digits) - i - 1}}}")
    return "^(" + "|".join(shorter + same) + ")$"


LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                  "default": DEFAULT_PAGE})
# A keyset cursor is the sort key of the last item seen, `{timestamp}~{id}`; an offset cursor is
# how many items came before. Any cursor of that shape is a place in the list: perhaps its end.
_KEYSET = re.compile(r"([0-9]{1,17}\.[0-9]{1,17})~([A-Za-z0-9_-]{1,64})")
KEYSET = Param("cursor", "query", {"type": "string", "pattern": f"^{_KEYSET.pattern}$"},
               description="next_cursor of the previous page")
OFFSET = Param("cursor", "query", {"type": "string", "pattern": "^[0-9]{1,9}$"},
               description="next_cursor of the previous page")


async def read_body(request: web.Request, model: type[M]) -> M:
    """The JSON body of `request` as `model` (an empty body is `{}`); 400/413 problems otherwise."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise ProblemError(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    raw = bytearray()
    while len(raw) <= MAX_JSON_BYTES:
        chunk = await request.content.read(MAX_JSON_BYTES + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_JSON_BYTES:
        raise ProblemError(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    try:
        return model.model_validate_json(bytes(raw) if raw.strip() else b"{}")
    except ValidationError as exc:
        raise ProblemError(400, invalid(exc)) from None


def invalid(exc: ValidationError) -> str:
    """What a client got wrong, in a sentence or three."""
    said = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"])
        said.append(f"`{where}`: {error['msg']}" if where else error["msg"])
    return "; ".join(said)


def keyset(request: web.Request) -> tuple[float, str] | None:
    """The `cursor` of a list sorted newest first, as (timestamp, id); None when absent."""
    raw = request.query.get("cursor")
    if raw is None:
        return None
    match = _KEYSET.fullmatch(raw)
    if match is None:
        raise ProblemError(400, "`cursor` is not a cursor this API gave out")
    return float(match.group(1)), match.group(2)


def keyset_cursor(timestamp: float, key: str) -> str:
    return f"{timestamp!r}~{key}"


def offset(request: web.Request) -> int:
    """The `cursor` of a ranked list: how many items came before (0 when absent)."""
    raw = request.query.get("cursor")
    if raw is None:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise ProblemError(400, "`cursor` is not a cursor this API gave out")
    return int(raw)


def page_size(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ProblemError(400, f"`limit` must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


def query_number(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ProblemError(400, f"`{name}` must be a number")
    return value


def query_time(request: web.Request, name: str) -> float | None:
    """An RFC 3339 date-time (or an ISO 8601 date), UTC when it names no zone."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ProblemError(400, f"`{name}` must be an ISO 8601 date or date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def page(rows: list[T], limit: int, render: Callable[[T], Any],
         cursor: Callable[[T], str]) -> dict[str, Any]:
    """{"items": the first `limit` rows rendered, "next_cursor": `cursor(last row)` or null}.

    Callers fetch limit + 1 rows: the extra one only says whether there is a next page.
    """
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [render(r) for r in rows],
            "next_cursor": cursor(rows[-1]) if more and rows else None}


def reads(request: web.Request, db: Database) -> Statements:
    """Where this request's public reads go: an anonymous request's to `db.stale` (a replica,
    which may lag a moment), a signed-in one's to the primary, so a user reads their own writes
    at once (and what the edges may cache is what anonymous viewers see)."""
    return db if hdrs.AUTHORIZATION in request.headers else db.stale
