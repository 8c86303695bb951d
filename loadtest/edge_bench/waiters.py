"""N clients asking for one cold object at once; when did each get its first byte?

    python -m loadtest.edge_bench.waiters HOST PORT PATH N

Connects N sockets first, then sends N requests back to back, and records for each two times of
its first response byte, both wall clock:
  - "first": the kernel's receive time (SO_TIMESTAMPNS): what this process does after a byte
    arrives cannot delay it, so the figure is the server's, not ours;
  - "read": when this process read it (epoll, then recvmsg), which adds the time this one
    process takes to go round a thousand sockets, as any client's event loop would.
Prints JSON: {"first": [...], "read": [...], "statuses": {status: n}, "sent": [first, last send]}.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import struct
import sys
import time
from collections import Counter

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMEOUT = 30.0
PAUSE = 0.001


def main(host: str, port: int, path: str, count: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 64)), hard))
    socks = []
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        socks.append(sock)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    poll = select.epoll(count)
    by_fd = {}
    started = time.time()
    for sock in socks:
        sock.send(request)
        # One-shot: a socket reports once and is then disarmed, with no epoll_ctl call per socket.
        poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
        by_fd[sock.fileno()] = sock
    finished_sending = time.time()
    got: list[tuple[bytes, list, float]] = []
    deadline = time.monotonic() + TIMEOUT
    # Read each socket as soon as it has data, doing no more than that till all have answered
    # (this process shares the CPUs with the server): the kernel moves a queued segment's
    # timestamp forward when it merges later segments into it, so a late read would misdate the
    # first byte.
    space, clock, ready = socket.CMSG_SPACE(16), time.time, poll.poll
    while len(got) < count and time.monotonic() < deadline:
        for fd, _ in ready(0.5, count):
            data, ancillary, _, _ = by_fd[fd].recvmsg(64, space)
            got.append((data, ancillary, clock()))
        # Let arrivals gather for a while rather than be woken by each: a wake-up per socket
        # would cost the server as much CPU as its own write does.
        time.sleep(PAUSE)
    first: list[float] = []
    read: list[float] = []
    statuses: Counter[str] = Counter()
    for data, ancillary, now in got:
        stamp = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanos = struct.unpack("qq", payload[:16])
                stamp = seconds + nanos / 1e9
        first.append(stamp if stamp is not None else now)
        read.append(now)
        statuses[data[9:12].decode("ascii", "replace") if data else "closed"] += 1
    statuses["timeout"] += count - len(got)
    for sock in socks:  # left open till now: closing makes work for the server
        sock.close()
    return {"first": first, "read": read, "statuses": statuses, "sent": [started, finished_sending]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
