"""The control socket: HTTP/1.1 + JSON over a Unix socket, parsed by h11 (never by hand).

One request per connection is enough for ``llm-supervisorctl`` and ``curl --unix-socket``;
keep-alive works too. Malformed requests get 400, oversized ones 413, slow ones are cut off;
none of them disturbs the daemon. Writes need uid 0, checked with ``SO_PEERCRED``.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import structlog

log = structlog.get_logger("llm-supervisor")

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 64


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    uid: int
    gid: int
    pid: int

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, "the request body is not JSON", str(exc)) from None


@dataclass
class Response:
    status: int = 200
    document: Any = None
    content_type: str = "application/json"
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class HTTPError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


class Router:
    """``(method, "/v1/engines/{name}")`` -> handler; ``write=True`` routes need uid 0."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, list[str], Handler, bool]] = []

    def add(self, method: str, pattern: str, handler: Handler, *, write: bool = False) -> None:
        self.routes.append((method, pattern.strip("/").split("/"), handler, write))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str], bool]:
        parts = path.strip("/").split("/")
        allowed = []
        for route_method, pattern, handler, write in self.routes:
            params = _match(pattern, parts)
            if params is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            return handler, params, write
        if allowed:
            raise HTTPError(405, f"method {method} not allowed on {path}",
                            {"allowed": sorted(set(allowed))})
        raise HTTPError(404, f"no such resource: {path}")


def _match(pattern: list[str], parts: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    params = {}
    for want, got in zip(pattern, parts, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def _encode(response: Response) -> bytes:
    if response.body is not None:
        return response.body
    return (json.dumps(response.document, indent=1, default=str) + "\n").encode()


def error_response(status: int, error: str, detail: Any = None) -> Response:
    return Response(status, {"error": error, "detail": detail})


class ControlServer:
    def __init__(self, router: Router, path: Path, *, group: str | None = None,
                 may_read: Callable[[int, int], bool] | None = None) -> None:
        self.router = router
        self.path = path
        self.group = group
        self.may_read = may_read or (lambda uid, gid: True)
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket() or self.path.exists():
            self.path.unlink()  # a leftover from a daemon that was killed
        self.server = await asyncio.start_unix_server(self._accept, path=str(self.path),
                                                      limit=MAX_HEAD)
        gid = -1
        if self.group:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                log.warning("socket group does not exist; socket readable by root only",
                            group=self.group)
        os.chown(self.path, 0 if os.getuid() == 0 else -1, gid)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None
        self.path.unlink(missing_ok=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            if len(self.connections) > MAX_CONNECTIONS:
                writer.close()
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a broken connection must never reach the daemon
            log.warning("control connection failed", error=repr(exc))
        finally:
            self.connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pid, uid, gid = peer_credentials(sock)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            try:
                request = await asyncio.wait_for(self._read_request(conn, reader), READ_TIMEOUT)
            except HTTPError as exc:
                await self._send(conn, writer, error_response(exc.status, exc.error, exc.detail))
                return
            except TimeoutError:
                if conn.our_state is h11.IDLE and conn.their_state is not h11.IDLE:
                    await self._send(conn, writer, error_response(408, "request timed out"))
                return
            if request is None:
                return
            request.uid, request.gid, request.pid = uid, gid, pid
            response = await self._dispatch(request)
            await self._send(conn, writer, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader
                            ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                raise HTTPError(413 if status == 431 else 400,
                                f"malformed HTTP request: {exc}") from None
            if event is h11.NEED_DATA:
                # small reads, so h11 sees an oversized head before it is complete
                data = await reader.read(4096)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > MAX_BODY:
                    raise HTTPError(413, f"request body over {MAX_BODY} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise HTTPError(413, f"request body over {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = urlsplit(head.target.decode("ascii", "replace"))
                query = {k: v[-1] for k, v in parse_qs(target.query).items()}
                return Request(head.method.decode("ascii", "replace"), target.path or "/",
                               query, bytes(body), -1, -1, -1)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _dispatch(self, request: Request) -> Response:
        try:
            handler, params, write = self.router.match(request.method, request.path)
            if write and request.uid != 0:
                raise HTTPError(403, "this action needs root (uid 0)",
                                {"uid": request.uid})
            if not write and not self.may_read(request.uid, request.gid):
                raise HTTPError(403, "reading needs root or the socket group")
            return await handler(request, params)
        except HTTPError as exc:
            return error_response(exc.status, exc.error, exc.detail)
        except Exception as exc:
            log.exception("control handler failed", path=request.path)
            return error_response(500, "internal error", repr(exc))

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    response: Response) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # h11 allows an error response even before a request was understood
        headers = [("Content-Type", response.content_type), *response.headers]
        if response.stream is None:
            body = _encode(response)
            headers.append(("Content-Length", str(len(body))))
            writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
            writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        try:
            async for chunk in response.stream:
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
        finally:
            await response.stream.aclose()  # type: ignore[attr-defined]
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


def group_reader(group: str) -> Callable[[int, int], bool]:
    """Reads are for root and members of ``group``."""
    def may_read(uid: int, gid: int) -> bool:
        if uid == 0:
            return True
        try:
            entry = grp.getgrnam(group)
        except KeyError:
            return False
        if gid == entry.gr_gid:
            return True
        import pwd
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            return False
        return user in entry.gr_mem
    return may_read
