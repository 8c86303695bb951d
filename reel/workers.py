"""N worker processes of one service on one port (SO_REUSEPORT), as `reel edge --workers` and
`reel control --workers` run them.

The supervisor makes one private loopback socket per worker (so a worker can ask its siblings,
e.g. for their /metrics), forks the workers before any event loop exists, forwards SIGTERM and
SIGINT to them, and replaces a worker that dies after running a while; a worker that dies at once
(the port is taken, say) stops them all. A worker gets SIGTERM when the supervisor dies, even by
SIGKILL, so a killed service never leaves its workers serving the port.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from reel.logs import fields

log = logging.getLogger("reel.workers")

STEADY = 5.0  # seconds a worker must have run to be restarted rather than stop everything
KILL_AFTER = 15.0  # seconds workers get to finish after SIGTERM

# serve(index, every worker's private URL, this worker's private socket): runs until told to stop.
ServeWorker = Callable[[int, tuple[str, ...], socket.socket], None]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def supervise(serve: ServeWorker, workers: int, name: str) -> int:
    """Run `serve` in `workers` forked processes until told to stop; the exit status."""
    privates = []
    for _ in range(workers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        privates.append(sock)
    urls = tuple(f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in privates)

    supervisor = os.getpid()

    def start(index: int) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            for other, sock in enumerate(privates):
                if other != index:
                    sock.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _stop_with_supervisor(supervisor)
            serve(index, urls, privates[index])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if not isinstance(exc.code, int | None):
                print(f"{name}: {exc.code}", flush=True)
        except BaseException:
            log.exception("worker failed", extra=fields(worker=index))
        finally:
            os._exit(code)

    children = {start(index): (index, time.monotonic()) for index in range(workers)}
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _kill(pid, signal.SIGTERM)
        signal.signal(signal.SIGALRM, lambda *_: [_kill(pid, signal.SIGKILL) for pid in children])
        signal.alarm(int(KILL_AFTER))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("workers started", extra=fields(service=name, workers=workers))
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid, (None, 0.0))
        if index is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if time.monotonic() - started < STEADY:
            log.error("worker died at start; stopping", extra=fields(worker=index, code=code))
            status = code or 1
            stop(signal.SIGTERM, None)
            continue
        log.error("worker died; replacing it", extra=fields(worker=index, code=code))
        children[start(index)] = (index, time.monotonic())
    signal.alarm(0)
    return status


def _stop_with_supervisor(supervisor: int) -> None:
    """SIGTERM to this worker when the supervisor dies (Linux: PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the call above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
