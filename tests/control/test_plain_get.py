"""The control server's one shortcut: a plain GET (``server.plain_get``) is answered with the
bytes h11 would send, encoded once per kept response; everything else is h11's, as before."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from llm_supervisor.control import handlers
from llm_supervisor.control.server import (
    ControlServer,
    Plain,
    Request,
    Response,
    Router,
    plain_get,
)

STATUS = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
CLIENT = (b"GET /v1/status?format=text HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
          b"Accept: application/json\r\nContent-Length: 0\r\n\r\n")  # client.request's GET
CURL = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"

NOT_PLAIN = [
    b"GET /v1/status HTTP/1.0\r\nHost: x\r\n\r\n",                        # another version
    b"get /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",                        # methods are upper case
    b"HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\n\r\n",                                   # no Host
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",             # two
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n",           # a header not listed
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",  # a body
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\n",                            # not whole yet
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    b"GET /v1/st\xc3\xa4tus HTTP/1.1\r\nHost: x\r\n\r\n",                  # not plain ASCII
    b"GET v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/status HTTP/1.1\nHost: x\n\n",                              # bare LF
    b"GET /v1/status HTTP/1.1\r\nHost: x\x00\r\n\r\n",
    b"\x00\x01 nonsense\r\n\r\n",
    b"",
]


def test_plain_get_is_a_narrow_rule() -> None:
    assert plain_get(STATUS) == Plain("/v1/status", STATUS, close=True)
    assert plain_get(CLIENT) == Plain("/v1/status?format=text", CLIENT, close=True)
    assert plain_get(CURL) == Plain("/v1/status", CURL, close=False)
    keep = b"GET /v1/status HTTP/1.1\r\nhost:x\r\nCONNECTION: Keep-Alive\r\n\r\n"
    assert plain_get(keep) == Plain("/v1/status", keep, close=False)
    for data in NOT_PLAIN:
        assert plain_get(data) is None, data


def exchange(path: str, *parts: bytes) -> bytes:
    """Send ``parts`` (a pause between them: the server reads them apart), then read to EOF."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.1)
            s.sendall(part)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


class Kept:
    """A handler that answers with one kept response (as the status cache does), replaced
    when the test says the document changed."""

    def __init__(self) -> None:
        self.response = self.make(1)

    @staticmethod
    def make(version: int) -> Response:
        return Response(200, body=json.dumps({"version": version}).encode(),
                        headers=[("X-Unhealthy-Engines", "0")])

    async def __call__(self, request: Request, _: dict[str, str]) -> Response:
        return self.response


async def hello(request: Request, params: dict[str, str]) -> Response:
    return Response(200, {"hello": params["name"], "q": request.query})


async def serve(tmp_path: Path, kept: Kept, may_read: Any = None) -> ControlServer:
    router = Router()
    router.add("GET", "/v1/status", kept)
    router.add("GET", "/v1/hello/{name}", hello)
    router.add("POST", "/v1/hello/{name}", hello, write=True)
    server = ControlServer(router, tmp_path / "c.sock", may_read=may_read)
    await server.start()
    return server


def split(request: bytes) -> tuple[bytes, bytes]:
    """The same request in two reads: h11's to read."""
    return request[:9], request[9:]


async def test_a_plain_get_gets_the_bytes_h11_sends(tmp_path: Path) -> None:
    kept = Kept()
    server = await serve(tmp_path, kept)
    path = str(server.path)
    try:
        for request in (STATUS, CURL, CLIENT, b"GET /v1/hello/a?x=1&x=2 HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        b"GET /v1/hello/a/b HTTP/1.1\r\nHost: x\r\n\r\n"):
            kept.response = Kept.make(1)
            by_h11 = await asyncio.to_thread(exchange, path, *split(request))
            assert kept.response.encoded == {}  # h11 read it and sent the answer itself
            plain = await asyncio.to_thread(exchange, path, request)
            assert plain == by_h11, (request, plain, by_h11)
        assert plain.startswith(b"HTTP/1.1 404 ")
        first = await asyncio.to_thread(exchange, path, STATUS)
        assert first.startswith(b"HTTP/1.1 200 ") and b"connection: close" in first.lower()
        assert first.endswith(b'{"version": 1}') and b"X-Unhealthy-Engines: 0\r\n" in first
        assert set(kept.response.encoded) == {True}  # encoded once, kept on the response
        # keep-alive: two plain GETs on one connection, each answered without closing it
        twice = await asyncio.to_thread(exchange, path, CURL, CURL)
        assert twice.count(b"HTTP/1.1 200 ") == 2 and set(kept.response.encoded) == {True, False}
    finally:
        await server.close()


async def test_anything_else_goes_through_h11_as_before(tmp_path: Path) -> None:
    kept = Kept()
    server = await serve(tmp_path, kept, may_read=lambda uid, gid, groups: uid == 0)
    path = str(server.path)
    try:
        pipelined = await asyncio.to_thread(exchange, path, STATUS.replace(b"close", b"keep-alive")
                                            + STATUS)
        assert pipelined.count(b"HTTP/1.1 200 ") == 2
        old = await asyncio.to_thread(exchange, path, b"GET /v1/status HTTP/1.0\r\n\r\n")
        assert old.startswith(b"HTTP/1.1 200 ") and old.endswith(b'{"version": 1}')
        body = await asyncio.to_thread(exchange, path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        assert body.startswith(b"HTTP/1.1 200 ")
        garbage = await asyncio.to_thread(exchange, path, b"GET /v1/status HTTP/1.1\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")  # no Host: h11 says so
        assert kept.response.encoded == {}  # none of them was plain
        post = await asyncio.to_thread(exchange, path, b"POST /v1/hello/a HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 200 ")  # this test runs as root
    finally:
        await server.close()


async def test_a_plain_get_is_checked_like_any_other(tmp_path: Path) -> None:
    kept = Kept()
    server = await serve(tmp_path, kept, may_read=lambda uid, gid, groups: False)
    try:
        denied = await asyncio.to_thread(exchange, str(server.path), STATUS)
        assert denied.startswith(b"HTTP/1.1 403 ") and b"socket group" in denied
        assert kept.response.encoded == {}
    finally:
        await server.close()


class Doc:
    """What the status cache reads of the daemon, and the document it builds."""

    def __init__(self) -> None:
        self.generation = 0
        self.config_error = None
        self.engines = {"main": SimpleNamespace(ticks=0)}
        self.state = "healthy"

    def document(self, _: object) -> dict[str, Any]:
        return {"api": 1, "engines": [{"name": "main", "state": self.state}]}


@pytest.mark.parametrize("bump", ["tick", "event"])
async def test_a_changed_document_is_served_fresh(tmp_path: Path, monkeypatch, bump) -> None:
    sup = Doc()
    monkeypatch.setattr(handlers, "status_document", sup.document)
    server = ControlServer(handlers.routes(sup), tmp_path / "c.sock")  # type: ignore[arg-type]
    await server.start()
    path = str(server.path)
    try:
        first = await asyncio.to_thread(exchange, path, STATUS)
        assert b'"state": "healthy"' in first and b"X-Unhealthy-Engines: 0\r\n" in first
        assert await asyncio.to_thread(exchange, path, STATUS) == first  # kept
        sup.state = "failed"
        assert await asyncio.to_thread(exchange, path, STATUS) == first  # nothing said so yet
        if bump == "tick":
            sup.engines["main"].ticks += 1  # the engine finished a check
        else:
            sup.generation += 1  # the daemon recorded an event
        fresh = await asyncio.to_thread(exchange, path, STATUS)
        assert b'"state": "failed"' in fresh and b"X-Unhealthy-Engines: 1\r\n" in fresh
        assert fresh == await asyncio.to_thread(exchange, path, *split(STATUS))  # as h11's
        text = await asyncio.to_thread(exchange, path, CLIENT)
        assert text.startswith(b"HTTP/1.1 200 ") and b"text/plain" in text
    finally:
        await server.close()
