"""The control server on a real Unix socket, in-process: routing, errors, limits."""

from __future__ import annotations

import asyncio
import os
import socket

from llm_supervisor.control import client
from llm_supervisor.control.server import MAX_BODY, ControlServer, Request, Response, Router


async def hello(request: Request, params: dict[str, str]) -> Response:
    return Response(200, {"hello": params.get("name"), "uid": request.uid, "q": request.query})


async def boom(_: Request, __: dict[str, str]) -> Response:
    raise RuntimeError("handler bug")


async def serve(tmp_path, may_read=None) -> ControlServer:
    router = Router()
    router.add("GET", "/v1/hello/{name}", hello)
    router.add("POST", "/v1/hello/{name}", hello, write=True)
    router.add("GET", "/v1/boom", boom)
    server = ControlServer(router, tmp_path / "c.sock", may_read=may_read)
    await server.start()
    return server


def raw(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


async def test_routes_errors_and_limits(tmp_path):
    server = await serve(tmp_path)
    path = str(server.path)
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o660"
        ok = await asyncio.to_thread(client.request, path, "GET", "/v1/hello/main?x=1")
        assert ok.status == 200 and ok.json() == {"hello": "main", "uid": os.getuid(),
                                                  "q": {"x": "1"}}
        assert (await asyncio.to_thread(client.request, path, "GET", "/v2/x")).status == 404
        wrong = await asyncio.to_thread(client.request, path, "DELETE", "/v1/hello/main")
        assert wrong.status == 405 and wrong.json()["detail"] == {"allowed": ["GET", "POST"]}
        bug = await asyncio.to_thread(client.request, path, "GET", "/v1/boom")
        assert bug.status == 500 and bug.json()["error"] == "internal error"
        garbage = await asyncio.to_thread(raw, path, b"\x00\x01 nonsense\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")
        big = await asyncio.to_thread(raw, path, b"POST /v1/hello/x HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        assert big.startswith(b"HTTP/1.1 413 ")
        # and the server still answers
        assert (await asyncio.to_thread(client.request, path, "GET", "/v1/hello/a")).status == 200
    finally:
        await server.close()
    assert not os.path.exists(path)


async def test_reads_can_be_refused(tmp_path):
    server = await serve(tmp_path, may_read=lambda uid, gid, groups: False)
    try:
        denied = await asyncio.to_thread(client.request, str(server.path), "GET", "/v1/hello/a")
        assert denied.status == 403 and "socket group" in denied.json()["error"]
    finally:
        await server.close()
