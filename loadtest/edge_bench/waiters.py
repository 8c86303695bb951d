"""N clients asking for one cold object at once; when did each get its first byte?

    python -m loadtest.edge_bench.waiters HOST PORT PATH N

Connects N sockets first, then sends N requests back to back, and records for each the kernel's
receive time of its first response byte (SO_TIMESTAMPNS, wall clock): what this process does
after a byte arrives cannot delay its timestamp, so the figure is the server's, not ours.
Prints JSON: {"first": [unix times], "statuses": {status: n}, "sent": [first, last send time]}.
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
    poll = select.epoll()
    by_fd = {}
    started = time.time()
    for sock in socks:
        sock.send(request)
        poll.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    finished_sending = time.time()
    first: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + TIMEOUT
    # Read each socket as soon as it has data: the kernel moves a queued segment's timestamp
    # forward when it merges later segments into it, so a late read would misdate the first byte.
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poll.poll(0.5):
            sock = by_fd.pop(fd)
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(16))
            stamp = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", payload[:16])
                    stamp = seconds + nanos / 1e9
            first.append(stamp if stamp is not None else time.time())
            statuses[data[9:12].decode("ascii", "replace") if data else "closed"] += 1
            poll.unregister(fd)  # left open till the end: closing now makes work for the server
    statuses["timeout"] += len(by_fd)
    for sock in socks:
        sock.close()
    return {"first": first, "statuses": statuses, "sent": [started, finished_sending]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
