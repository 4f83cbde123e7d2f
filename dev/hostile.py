"""Hostile and clumsy clients of the control socket, for dev/reliability (run inside the
container, as root, with the project's venv). Prints one JSON document.

    hostile.py socket MEMBER_USER     slowloris + dead followers + a group member's followers,
                                      while root asks for status and restarts; then a burst
    hostile.py status SECONDS         root's status latency, sampled every 0.2 s
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from llm_supervisor.control import client
from llm_supervisor.errors import ProtocolError

SOCKET = "/run/llm-supervisor/control.sock"


def timed(method: str, target: str, timeout: float = 5.0) -> float | None:
    """Seconds to a 2xx answer, or None."""
    started = time.monotonic()
    try:
        answer = client.request(SOCKET, method, target, timeout=timeout)
    except (client.Unreachable, ProtocolError, OSError):
        return None
    return time.monotonic() - started if answer.status < 300 else None


def summary(latencies: list[float | None]) -> dict[str, object]:
    """Requests asked and answered, and the slowest answer (None: none answered)."""
    answered = [x for x in latencies if x is not None]
    return {"asked": len(latencies), "answered": len(answered),
            "max_ms": round(max(answered) * 1000, 1) if answered else None}


def sample_status(seconds: float, interval: float = 0.2) -> dict[str, object]:
    latencies: list[float | None] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        latencies.append(timed("GET", "/v1/status"))
        time.sleep(interval)
    unanswered = sum(x is None for x in latencies)
    return {**summary(latencies), "unanswered_s": round(unanswered * interval, 1)}


def opened(n: int, request: bytes) -> list[socket.socket]:
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(SOCKET)
            s.sendall(request)
        except OSError:
            s.close()
            continue
        conns.append(s)
    return conns


def member_followers(user: str, n: int) -> int:
    """A child as ``user`` (a socket-group member) holds n followers; returns the pid."""
    entry = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:
        os.initgroups(user, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        held = opened(n, b"GET /v1/events?follow=1 HTTP/1.0\r\nHost: x\r\n\r\n")
        time.sleep(60 if held else 0)
        os._exit(0)
    return pid


def socket_abuse(member: str) -> dict[str, object]:
    result: dict[str, object] = {}
    loris = opened(200, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    result["slowloris_open"] = len(loris)
    dead = opened(100, b"GET /v1/events?follow=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    for s in dead:  # interrupted `events -f`
        s.close()
    result["dead_followers"] = len(dead)
    child = member_followers(member, 64)
    time.sleep(0.5)
    result["root_status"] = sample_status(5)
    restart = timed("POST", "/v1/engines/main/restart", timeout=30)
    result["root_restart_ms"] = None if restart is None else round(restart * 1000, 1)
    with ThreadPoolExecutor(500) as pool:
        burst = list(pool.map(lambda _: timed("GET", "/v1/status", timeout=30), range(500)))
    result["burst"] = summary(burst)
    for s in loris:
        s.close()
    os.kill(child, 9)
    os.waitpid(child, 0)
    return result


def main() -> int:
    if sys.argv[1] == "socket":
        print(json.dumps(socket_abuse(sys.argv[2])))
    elif sys.argv[1] == "status":
        print(json.dumps(sample_status(float(sys.argv[2]))))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
