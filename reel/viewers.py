"""Who watches each live stream, counted where the players are and told upstream (edges,
then the live server that sums it: ingest).

The live server alone cannot count viewers: behind edges that cache and coalesce, a thousand
players are a few upstream requests. So each edge process counts the distinct viewers of each
live stream it serves over the last `window` seconds (a viewer is its CMCD session id when the
player sends one, else its address and user agent), and every upstream request it makes for a
live object carries `X-Reel-Viewers: <node>=<n>[, <node>=<n>...]`: its own count, and the fresh
counts it heard from the nodes below it (sibling workers relaying to the key's owner, edges
behind a shield). The live server keeps the newest count of each node and sums them.

Bounded: at most `max_viewers` viewers per stream, `max_streams` streams and `max_nodes` nodes
per stream are remembered (the oldest go first); a count is forgotten after `window` seconds.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable

HEADER = "X-Reel-Viewers"
WINDOW = 10.0  # seconds: a player reloads a live playlist every part (a third of a second)
_VIDEO = re.compile(r"/?live/([A-Za-z0-9_-]{6,64})/")
_ENTRY = re.compile(r"\s*([A-Za-z0-9_.:-]{1,64})=(\d{1,9})\s*")
_SID = re.compile(r'(?:^|,)\s*sid="([^"]{1,64})"')
MAX_ENTRIES = 256  # node counts read from one header


def node_id(region: str) -> str:
    """This process's name in the reports: region, host and process (every worker counts)."""
    return f"{region}.{socket.gethostname()}.{os.getpid()}"[:64]


def video_of(key: str) -> str | None:
    match = _VIDEO.match(key)
    return match[1] if match else None


def viewer_of(cmcd: str | None, address: str | None, user_agent: str | None) -> str:
    """A viewer: the CMCD session id (`sid`, as hls.js and dash.js send it), else address and
    user agent (players behind one NAT with the same browser count once)."""
    if cmcd:
        match = _SID.search(cmcd)
        if match:
            return "sid:" + match[1]
    return f"{address or '?'}|{(user_agent or '')[:200]}"


def parse(header: str) -> dict[str, int]:
    """`node=n, node=n` -> {node: n}; malformed entries are skipped."""
    counts: dict[str, int] = {}
    for item in header.split(",")[:MAX_ENTRIES]:
        match = _ENTRY.fullmatch(item)
        if match:
            counts[match[1]] = int(match[2])
    return counts


class Viewers:
    """The viewers of each live stream at one node, and the counts of the nodes below it."""

    def __init__(self, node: str, window: float = WINDOW, *, max_streams: int = 1024,
                 max_viewers: int = 200_000, max_nodes: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node, self.window, self.clock = node, window, clock
        self.max_streams, self.max_viewers, self.max_nodes = max_streams, max_viewers, max_nodes
        # Oldest first (a viewer seen again moves to the end), so stale ones leave from the front.
        self._viewers: dict[str, dict[str, float]] = {}
        self._nodes: dict[str, dict[str, tuple[int, float]]] = {}

    def seen(self, video: str, viewer: str) -> None:
        viewers = self._stream(self._viewers, video)
        viewers.pop(viewer, None)
        viewers[viewer] = self.clock()
        if len(viewers) > self.max_viewers:
            del viewers[next(iter(viewers))]

    def heard(self, video: str, header: str) -> None:
        """A node below reported its counts for `video` (our own name is ignored)."""
        now = self.clock()
        nodes = self._stream(self._nodes, video)
        for node, count in parse(header).items():
            if node != self.node:
                nodes.pop(node, None)
                nodes[node] = (count, now)
        while len(nodes) > self.max_nodes:
            del nodes[next(iter(nodes))]

    def request(self, key: str, cmcd: str | None, address: str | None, user_agent: str | None,
                report: str | None) -> None:
        """One request at this node: a player's (counted) or a lower node's (`report`: the
        X-Reel-Viewers it sent, kept). `cmcd`: the CMCD data it sent (query or headers)."""
        video = video_of(key)
        if video is None:
            return
        if report is not None:
            self.heard(video, report)
        else:
            self.seen(video, viewer_of(cmcd, address, user_agent))

    def total(self, video: str) -> int:
        return sum(self.counts(video).values())

    def counts(self, video: str) -> dict[str, int]:
        """This node's fresh count and those of the nodes below it."""
        since = self.clock() - self.window
        counts: dict[str, int] = {}
        viewers = self._viewers.get(video)
        if viewers is not None:
            while viewers and next(iter(viewers.values())) < since:
                del viewers[next(iter(viewers))]
            if viewers:
                counts[self.node] = len(viewers)
        nodes = self._nodes.get(video)
        if nodes is not None:
            while nodes and next(iter(nodes.values()))[1] < since:
                del nodes[next(iter(nodes))]
            counts.update({node: count for node, (count, _) in nodes.items()})
        return counts

    def upstream_headers(self, key: str) -> dict[str, str]:
        """The header for an upstream request of `key` (none for what is not live)."""
        video = video_of(key)
        counts = self.counts(video) if video is not None else {}
        if not counts:
            return {}
        return {HEADER: ", ".join(f"{node}={count}" for node, count in counts.items())}

    def _stream(self, table: dict[str, dict], video: str) -> dict:
        entry = table.get(video)
        if entry is None:
            if len(table) >= self.max_streams:
                del table[next(iter(table))]
            entry = table[video] = {}
        return entry
