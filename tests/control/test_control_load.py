"""The control socket under hostile and clumsy clients, on a real Unix socket in-process:
slowloris connections, dead and never-reading followers, bursts, other uids, group members."""

from __future__ import annotations

import asyncio
import grp
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from llm_supervisor.control import client, handlers
from llm_supervisor.control import server as control
from llm_supervisor.control.server import ControlServer, Request, Response, Router, group_reader
from llm_supervisor.records.history import (
    MAX_FOLLOWERS,
    MAX_FOLLOWERS_PER_CLIENT,
    EventLog,
    TooManyFollowers,
)

NOBODY = 65534


async def status(request: Request, _: dict[str, str]) -> Response:
    return Response(200, {"api": 1, "uid": request.uid})


async def serve(directory: Path, log: EventLog, may_read=None) -> ControlServer:
    router = Router()
    router.add("GET", "/v1/status", status)
    real = handlers.routes(SimpleNamespace(events=log, disk=Inline()))  # type: ignore[arg-type]
    for method, pattern, handler, write in real.routes:
        if "/".join(pattern) == "v1/events":
            router.routes.append((method, pattern, handler, write))
    server = ControlServer(router, directory / "c.sock", may_read=may_read)
    await server.start()
    return server


@pytest.fixture
def shared_dir() -> AsyncIterator[Path]:
    """A directory other uids can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="llm-ctl-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


class Inline:
    """The daemon's disk thread, run inline."""

    async def run(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        return fn(*args, **kwargs)


def timed_status(path: str) -> float:
    started = time.monotonic()
    answer = client.request(path, "GET", "/v1/status", timeout=5)
    assert answer.status == 200
    return time.monotonic() - started


def slowloris(path: str, n: int) -> list[socket.socket]:
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        conns.append(s)
    return conns


def follow(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b"GET /v1/events?follow=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    assert s.recv(12) == b"HTTP/1.1 200"
    return s


async def until(condition, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition never met"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_root_answers_within_1s_under_slowloris_and_dead_followers(shared_dir) -> None:
    log = EventLog(shared_dir / "events")
    log.append("started")
    server = await serve(shared_dir, log)
    path = str(server.path)
    loris: list[socket.socket] = []
    followers: list[socket.socket] = []
    try:
        loris += await asyncio.to_thread(slowloris, path, 200)
        followers += [await asyncio.to_thread(follow, path) for _ in range(100)]
        await until(lambda: len(log.followers) == 100)
        for s in followers:  # interrupted `llm-supervisorctl events -f`
            s.close()
        noticed = await until(lambda: not log.followers, timeout=2)
        assert noticed < 1.0
        assert len(server.connections) >= 200  # the slowloris ones are still open...
        for _ in range(5):  # ...and root's status is answered at once, every time
            assert await asyncio.to_thread(timed_status, path) < 1.0
    finally:
        for s in loris + followers:
            s.close()
        await server.close()


async def test_partial_requests_get_408_and_idle_connections_close(shared_dir,
                                                                   monkeypatch) -> None:
    monkeypatch.setattr(control, "READ_TIMEOUT", 0.3)
    monkeypatch.setattr(control, "IDLE_TIMEOUT", 0.3)
    server = await serve(shared_dir, EventLog(shared_dir / "events"))
    try:
        def exchange(data: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(server.path))
                s.sendall(data)
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                return out
        slow = await asyncio.to_thread(exchange, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        assert slow.startswith(b"HTTP/1.1 408 ") and b"not received within" in slow
        assert await asyncio.to_thread(exchange, b"") == b""  # idle: closed, no answer
        assert not server.connections
    finally:
        await server.close()


async def test_500_concurrent_status_requests_all_answered(shared_dir) -> None:
    server = await serve(shared_dir, EventLog(shared_dir / "events"))
    path = str(server.path)

    def burst() -> list[int]:
        with ThreadPoolExecutor(500) as pool:
            return list(pool.map(lambda _: client.request(path, "GET", "/v1/status",
                                                          timeout=30).status, range(500)))
    try:
        assert await asyncio.to_thread(burst) == [200] * 500
    finally:
        await server.close()


async def test_a_never_reading_follower_is_dropped_not_the_daemon(shared_dir) -> None:
    log = EventLog(shared_dir / "events")
    server = await serve(shared_dir, log)
    stuck = await asyncio.to_thread(follow, str(server.path))
    try:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await until(lambda: len(log.followers) == 1)
        for i in range(2000):  # ~8 MB of events the follower never takes
            log.append("probe", engine="main", reason=f"{i} " + "z" * 4000)
            if i % 50 == 0:
                await asyncio.sleep(0)
        await until(lambda: not log.followers)
        assert log.lagging_dropped == 1
        # its connection goes too, at the latest once a write has waited WRITE_TIMEOUT
        await until(lambda: not server.connections, timeout=control.WRITE_TIMEOUT + 5)
        assert await asyncio.to_thread(timed_status, str(server.path)) < 1.0
    finally:
        stuck.close()
        await server.close()


async def test_followers_are_bounded_per_client(shared_dir) -> None:
    log = EventLog(shared_dir / "events")
    server = await serve(shared_dir, log)
    path = str(server.path)
    held: list[socket.socket] = []
    try:
        held += [await asyncio.to_thread(follow, path) for _ in range(MAX_FOLLOWERS)]
        extra = await asyncio.to_thread(client.request, path, "GET", "/v1/events?follow=1")
        assert extra.status == 429 and "too many followers" in extra.json()["error"]
    finally:
        for s in held:
            s.close()
        await server.close()
    assert not log.followers
    for uid in (1000, 1001):  # other users: per client, and together below root's reserve
        for _ in range(MAX_FOLLOWERS_PER_CLIENT):
            log.follow(client=uid)
    with pytest.raises(TooManyFollowers, match="followers of uid 1000"):
        log.follow(client=1000)


async def test_events_since_must_be_a_time(shared_dir) -> None:
    log = EventLog(shared_dir / "events")
    log.append("started")
    server = await serve(shared_dir, log)
    path = str(server.path)
    try:
        bad = await asyncio.to_thread(client.request, path, "GET", "/v1/events?since=yesterday")
        assert bad.status == 400 and "ISO-8601" in bad.json()["error"]
        day = await asyncio.to_thread(client.request, path, "GET", "/v1/events?since=2000-01-01")
        assert day.status == 200 and b'"started"' in day.body
    finally:
        await server.close()


AS_USER = textwrap.dedent("""
    import os, socket, sys, time
    path, groups, n = sys.argv[1], [int(g) for g in sys.argv[2].split(",") if g], int(sys.argv[3])
    os.setgroups(groups); os.setgid(65534); os.setuid(65534)
    if n:
        held = []
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
            except OSError:
                break
            held.append(s)
        print(len(held), flush=True)
        time.sleep(60)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(b"GET /v1/status HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        print(s.recv(12).decode())
""")


def as_nobody(path: str, groups: list[int], n: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", AS_USER, path,
                             ",".join(map(str, groups)), str(n)],
                            stdout=subprocess.PIPE, text=True)


async def test_other_uids_cannot_lock_root_out(shared_dir) -> None:
    server = await serve(shared_dir, EventLog(shared_dir / "events"))
    path = str(server.path)
    os.chmod(path, 0o666)
    hog = as_nobody(path, [], n=control.MAX_PER_UID + 50)
    try:
        assert hog.stdout is not None
        await asyncio.to_thread(hog.stdout.readline)
        await until(lambda: server.per_uid.get(NOBODY) == control.MAX_PER_UID)
        assert await asyncio.to_thread(timed_status, path) < 1.0
        await until(lambda: server.refused >= 50)
    finally:
        hog.kill()
        hog.communicate()
        await server.close()


async def test_a_supplementary_group_member_can_read(shared_dir) -> None:
    group = grp.getgrnam("video")
    assert group.gr_gid != NOBODY and "nobody" not in group.gr_mem
    server = await serve(shared_dir, EventLog(shared_dir / "events"),
                         may_read=group_reader("video"))
    path = str(server.path)
    os.chmod(path, 0o666)
    try:
        member = as_nobody(path, [group.gr_gid])
        stranger = as_nobody(path, [])
        out = [(await asyncio.to_thread(p.communicate))[0].strip() for p in (member, stranger)]
        assert out == ["HTTP/1.1 200", "HTTP/1.1 403"]
    finally:
        await server.close()
    may_read = group_reader("video")
    assert may_read(NOBODY, NOBODY, (group.gr_gid,)) and not may_read(NOBODY, NOBODY, ())
    assert may_read(0, 0, ())


async def test_events_into_a_closed_pipe_exit_cleanly(shared_dir) -> None:
    log = EventLog(shared_dir / "events")
    for i in range(3000):
        log.append("probe", engine="main", reason=f"check {i}")
    server = await serve(shared_dir, log)
    ctl = f"{sys.executable} -c 'from llm_supervisor.control.cli import main; main()'"
    try:
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", f"set -o pipefail; {ctl} --socket {server.path}"
                             " events -n 0 | head -1"], capture_output=True, text=True,
            timeout=30)
    finally:
        await server.close()
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.count("\n") == 1 and "check 0" in done.stdout
