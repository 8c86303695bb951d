"""Which object key an edge request names: the one check the edge makes before its cache.

Ranges, conditionals, CORS and problem answers are shared with the origin and live in reel/http.py
(the edge may not import origin, DESIGN.md). Only this loose path check is the edge's own: the edge
has no layout to parse, so it keeps to the layout's alphabet and lets the origin 404 the rest.
"""

from __future__ import annotations

import re

from aiohttp import web

from reel.http import raw_path_safe

MAX_PATH = 512
# The layout's alphabet; the origin does the exact check and 404s the rest.
_PATH = re.compile(r"/(?:vod|live)/[A-Za-z0-9_.-][A-Za-z0-9_./-]*")


def key_of(request: web.BaseRequest) -> str | None:
    """The object key ("vod/…") a request names, or None when it cannot be one."""
    if not raw_path_safe(request, MAX_PATH):
        return None
    path = request.path
    if not _PATH.fullmatch(path) or ".." in path or "//" in path:
        return None
    return path[1:]
