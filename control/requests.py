"""Reading what clients send: JSON bodies, typed fields, text checks, cursors and page sizes.

Every refusal is a `ProblemError` with a 4xx status, so handlers never check by hand.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from control.problems import ProblemError

T = TypeVar("T")
MAX_JSON_BYTES = 64 * 1024
DEFAULT_PAGE = 20
MAX_PAGE = 100


async def read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body of `request` ({} when empty); 400/413 problems otherwise."""
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
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProblemError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProblemError(400, "the body must be a JSON object")
    return body


def field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str,
          default: Any = ...) -> Any:
    """body[name] checked against `kind` (a boolean is never a number); 400 when missing/wrong."""
    value = body.get(name)
    if value is None:
        if default is ...:
            raise ProblemError(400, f"`{name}` is required: {what}")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProblemError(400, f"`{name}` must be {what}")
    return value


def clean_text(value: str, name: str, *, max_chars: int, multiline: bool = False,
               required: bool = False) -> str:
    """`value` NFC-normalised and stripped; 400 on control characters, lone surrogates or length.

    Newlines and tabs pass only when `multiline`.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProblemError(400, f"`{name}` is not valid Unicode") from None
    text = unicodedata.normalize("NFC", value).strip()
    allowed = "\n\t" if multiline else ""
    if any((ch < " " and ch not in allowed) or ch == "\x7f" for ch in text):
        raise ProblemError(400, f"`{name}` has control characters")
    if len(text) > max_chars:
        raise ProblemError(400, f"`{name}` is limited to {max_chars} characters")
    if required and not text:
        raise ProblemError(400, f"`{name}` must not be empty")
    return text


def text_field(body: Mapping[str, Any], name: str, *, max_chars: int, multiline: bool = False,
               required: bool = False, default: Any = ...) -> Any:
    value = field(body, name, str, "a string", default=default)
    if not isinstance(value, str):
        return value
    return clean_text(value, name, max_chars=max_chars, multiline=multiline, required=required)


def encode_cursor(*key: Any) -> str:
    """An opaque cursor for the keyset `key` (JSON, base64url)."""
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def decode_cursor(request: web.Request, shape: tuple[type, ...]) -> tuple[Any, ...] | None:
    """The `cursor` query parameter as a tuple of `shape`, None when absent; 400 when forged."""
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(raw.encode("ascii") + b"==="))
        if isinstance(key, list) and len(key) == len(shape) and all(
                isinstance(v, t) and not isinstance(v, bool) for v, t in zip(key, shape, strict=True)):
            return tuple(key)
    except (ValueError, UnicodeError):
        pass
    raise ProblemError(400, "`cursor` is not a cursor this API gave out")


def page_size(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ProblemError(400, f"`limit` must be an integer from 1 to {MAX_PAGE}")
    return int(raw)


def query_number(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise ProblemError(400, f"`{name}` must be a number")
    return value


def page(rows: list[T], limit: int, key: Callable[[T], tuple[Any, ...]],
         render: Callable[[T], Any]) -> dict[str, Any]:
    """{"items": the first `limit` rows rendered, "next_cursor": the keyset after them or null}.

    Callers fetch limit + 1 rows: the extra one only says whether there is a next page.
    """
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [render(r) for r in rows],
            "next_cursor": encode_cursor(*key(rows[-1])) if more and rows else None}
