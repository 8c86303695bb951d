"""Who watches each live stream, counted where the players are and told upstream (edges,
then the live server that reads it: ingest).

The live server alone cannot count viewers: behind edges that cache and coalesce, a thousand
players are a few upstream requests. So each edge process keeps the distinct viewers of each live
stream it serves over the last `window` seconds (a viewer is its CMCD session id when the player
sends one, else its address and user agent), and every upstream request it makes for a live
object carries `X-Reel-Viewers: <node>=<sketch>;<age ms>[, ...]`: its own viewers and the fresh
sketches it heard from other nodes (sibling workers relaying to the key's owner, edges behind a
shield), each under the name of the node that made it and with its age, so that a sketch never
grows younger on its way: siblings relay to each other (each owns some keys), and a sketch passed
round that loop must still expire. The live server keeps the newest sketch of each node and
counts their union.

A sketch, not a count, because one player is often at two nodes at once: a browser opens several
connections, which SO_REUSEPORT spreads over an edge's workers, and a player that fails over is at
two edges for a while; counts would add such a viewer twice, a union counts it once. A sketch lists
its viewers' 32-bit hashes while they are few (exact) and is HyperLogLog registers beyond that
(about 3% standard error, 1 KiB), so a header stays small however many watch.

Bounded: at most `max_viewers` viewers per stream, `max_streams` streams and `max_nodes` nodes
per stream are remembered (the oldest go first); a sketch is forgotten `window` seconds after it
was made, so a viewer who left is no longer counted anywhere after twice the window at most.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterable

HEADER = "X-Reel-Viewers"
WINDOW = 10.0  # seconds: a player reloads a live playlist every part (a third of a second)
_VIDEO = re.compile(r"/?live/([A-Za-z0-9_-]{6,64})/")
_ENTRY = re.compile(r"\s*([A-Za-z0-9_.:+-]{1,65})=([sd][A-Za-z0-9_-]{0,1400});(\d{1,9})\s*")
_SID = re.compile(r'(?:^|,)\s*sid="([^"]{1,64})"')
MAX_ENTRIES = 256  # node sketches read from one header
HEADER_BUDGET = 6000  # characters of sketches sent in one header; the rest go merged as one
LISTED = 256  # viewers a sketch lists one by one (exact) before it turns to registers
REGISTERS = 1024  # HyperLogLog registers: 10 bits of a hash pick one, the other 22 its rank
_RANK_BITS = 22
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)


def viewer_hash(viewer: str) -> int:
    """A 32-bit hash every process computes alike (Python's own `hash` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(viewer.encode(), digest_size=4).digest(), "big")


class Sketch:
    """A set of viewers that merges with others: their hashes while few, else HyperLogLog."""

    __slots__ = ("hashes", "registers")

    def __init__(self, hashes: Iterable[int] = ()) -> None:
        self.hashes: set[int] | None = set(hashes)
        self.registers: bytearray | None = None
        if len(self.hashes) > LISTED:
            self._to_registers()

    def merge(self, other: Sketch) -> None:
        if other.registers is not None:
            if self.registers is None:
                self._to_registers()
            assert self.registers is not None
            self.registers[:] = bytes(map(max, self.registers, other.registers))
        elif self.registers is not None:
            self._add_to_registers(other.hashes or ())
        else:
            assert self.hashes is not None
            self.hashes |= other.hashes or set()
            if len(self.hashes) > LISTED:
                self._to_registers()

    def copy(self) -> Sketch:
        twin = Sketch()
        twin.hashes = None if self.hashes is None else set(self.hashes)
        twin.registers = None if self.registers is None else bytearray(self.registers)
        return twin

    def empty(self) -> bool:
        """No viewer: cheaper than count() == 0 on registers (no estimate to make)."""
        return not self.hashes if self.registers is None else not any(self.registers)

    def count(self) -> int:
        if self.registers is None:
            return len(self.hashes or ())
        estimate = _ALPHA * REGISTERS * REGISTERS / sum(2.0 ** -r for r in self.registers)
        empty = self.registers.count(0)
        if estimate <= 2.5 * REGISTERS and empty:  # few viewers: linear counting is closer
            estimate = REGISTERS * math.log(REGISTERS / empty)
        return round(estimate)

    def encode(self) -> str:
        if self.registers is None:
            raw, kind = b"".join(h.to_bytes(4, "big") for h in sorted(self.hashes or ())), "s"
        else:
            raw, kind = bytes(self.registers), "d"
        return kind + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> Sketch | None:
        """A sketch from `encode`, or None when `text` is not one."""
        try:
            raw = base64.urlsafe_b64decode(text[1:] + "=" * (-len(text[1:]) % 4))
        except (binascii.Error, ValueError):
            return None
        if text[:1] == "s" and len(raw) % 4 == 0 and len(raw) // 4 <= LISTED:
            return cls(int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw), 4))
        if text[:1] == "d" and len(raw) == REGISTERS and max(raw) <= _RANK_BITS + 1:
            sketch = cls()
            sketch.hashes, sketch.registers = None, bytearray(raw)
            return sketch
        return None

    def _to_registers(self) -> None:
        hashes, self.hashes, self.registers = self.hashes or (), None, bytearray(REGISTERS)
        self._add_to_registers(hashes)

    def _add_to_registers(self, hashes: Iterable[int]) -> None:
        registers = self.registers
        assert registers is not None
        for h in hashes:
            index, rest = h >> _RANK_BITS, h & ((1 << _RANK_BITS) - 1)
            rank = _RANK_BITS - rest.bit_length() + 1
            if rank > registers[index]:
                registers[index] = rank


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


def parse(header: str) -> dict[str, tuple[Sketch, float]]:
    """`node=sketch;age_ms, ...` -> {node: (Sketch, age in seconds)}; malformed entries skipped."""
    sketches: dict[str, tuple[Sketch, float]] = {}
    for item in header.split(",")[:MAX_ENTRIES]:
        match = _ENTRY.fullmatch(item)
        if match and (sketch := Sketch.decode(match[2])) is not None:
            sketches[match[1]] = (sketch, int(match[3]) / 1000)
    return sketches


class Viewers:
    """The viewers of each live stream at one node, and the sketches of the nodes below it."""

    def __init__(self, node: str, window: float = WINDOW, *, max_streams: int = 1024,
                 max_viewers: int = 200_000, max_nodes: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node, self.window, self.clock = node, window, clock
        self.max_streams, self.max_viewers, self.max_nodes = max_streams, max_viewers, max_nodes
        # Oldest first (a viewer seen again moves to the end), so stale ones leave from the front.
        self._viewers: dict[str, dict[str, tuple[float, int]]] = {}  # viewer: (seen at, hash)
        self._nodes: dict[str, dict[str, tuple[Sketch, float]]] = {}
        # A big audience's sketch is remade at most every window / 10: every upstream request
        # asks for it, and hashing them all each time would cost more than serving them.
        self._made: dict[str, tuple[float, Sketch]] = {}

    def seen(self, video: str, viewer: str) -> None:
        viewers = self._stream(self._viewers, video)
        known = viewers.pop(viewer, None)
        viewers[viewer] = (self.clock(), known[1] if known else viewer_hash(viewer))
        if len(viewers) > self.max_viewers:
            del viewers[next(iter(viewers))]

    def heard(self, video: str, header: str) -> None:
        """Another node reported sketches for `video`: each kept unless one made later is (ours,
        come back round a loop of siblings, is ignored)."""
        now = self.clock()
        nodes = self._stream(self._nodes, video)
        for node, (sketch, age) in parse(header).items():
            made = now - age
            if node != self.node and made > nodes.get(node, (None, -math.inf))[1]:
                nodes.pop(node, None)
                nodes[node] = (sketch, made)
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
        """The distinct viewers of `video` here and below, each once wherever it was seen."""
        return self.sketch(video).count()

    def sketch(self, video: str) -> Sketch:
        """The union of this node's fresh viewers and the fresh sketches it heard."""
        union = self._own(video).copy()
        for _, below, _ in self._heard(video):
            union.merge(below)
        return union

    def _heard(self, video: str) -> list[tuple[str, Sketch, float]]:
        """The fresh sketches heard for `video`: (node, sketch, when it was made)."""
        nodes = self._nodes.get(video)
        if nodes is None:
            return []
        since = self.clock() - self.window
        for node in [node for node, (_, made) in nodes.items() if made < since]:
            del nodes[node]
        return [(node, sketch, made) for node, (sketch, made) in nodes.items()]

    def _own(self, video: str) -> Sketch:
        now = self.clock()
        viewers = self._viewers.get(video)
        if viewers is not None:
            while viewers and next(iter(viewers.values()))[0] < now - self.window:
                del viewers[next(iter(viewers))]
        made = self._made.get(video)
        if made is not None and made[0] > now - self.window / 10:
            return made[1]
        own = Sketch(h for _, h in viewers.values()) if viewers else Sketch()
        self._made.pop(video, None)
        if viewers is not None and len(viewers) > LISTED:
            if len(self._made) >= self.max_streams:
                del self._made[next(iter(self._made))]
            self._made[video] = (now, own)
        return own

    def upstream_headers(self, key: str) -> dict[str, str]:
        """The header for an upstream request of `key` (none for what is not live): this node's
        sketch and those it heard, newest first, as many as HEADER_BUDGET holds; the rest
        merged into one under this node's name + "+", as old as the oldest of them."""
        video = video_of(key)
        if video is None:
            return {}
        now = self.clock()
        own = self._own(video)
        heard = sorted(((node, sketch, now - made) for node, sketch, made in self._heard(video)),
                       key=lambda entry: entry[2])
        entries: list[str] = []
        rest, rest_age, used = Sketch(), 0.0, 0
        for node, sketch, age in ([] if own.empty() else [(self.node, own, 0.0)]) + heard:
            entry = f"{node}={sketch.encode()};{round(age * 1000)}"
            if used + len(entry) <= HEADER_BUDGET:
                entries.append(entry)
                used += len(entry) + 2
            else:
                rest.merge(sketch)
                rest_age = age
        if not rest.empty():
            entries.append(f"{self.node}+={rest.encode()};{round(rest_age * 1000)}")
        return {HEADER: ", ".join(entries)}  # empty too: a node's request is not a viewer's

    def _stream(self, table: dict[str, dict], video: str) -> dict:
        entry = table.get(video)
        if entry is None:
            if len(table) >= self.max_streams:
                del table[next(iter(table))]
            entry = table[video] = {}
        return entry
