"""The control socket: HTTP/1.1 + JSON over a Unix socket, parsed by h11 (never by hand).

One request per connection is enough for ``llm-supervisorctl`` and ``curl --unix-socket``;
keep-alive works too. Malformed requests get 400, oversized ones 413, slow ones 408; none of
them disturbs the daemon. Writes need uid 0, checked with ``SO_PEERCRED``.

One shortcut, for the requests every status poll makes: a *plain GET* (``plain_get`` says
which: a whole ``GET <target> HTTP/1.1`` with a few common headers, no body, nothing behind
it) is routed, checked and handled like any other, but neither parsed by h11 nor encoded per
request: its answer is the bytes h11 would send (``wire``), encoded once per ``Response`` and
kept on it, so a handler that returns a kept response (the status cache) is answered with
bytes ready made. Everything else, and a plain GET answered with a stream, is h11's.

Root is never locked out. Admission looks at the peer's credentials before any cap: uid 0 is
only bounded by ``MAX_CONNECTIONS`` (and the file-descriptor limit, raised at start), while
every other uid shares ``MAX_OTHER_CONNECTIONS`` at most ``MAX_PER_UID`` at a time. Every
connection has a read timeout for a request (408 when part of one came) and an idle timeout
between requests; a response that the client does not read within ``WRITE_TIMEOUT`` drops the
connection. A follower (``events?follow=1``) is dropped the moment its client hangs up (the
server watches for EOF), when it stops reading, or when its bounded queue overflows
(history.py); followers are bounded per uid and overall. The listen backlog (``BACKLOG``)
lets a burst of connections queue rather than be reset.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import h11
import structlog

from llm_supervisor.errors import HTTPError

log = structlog.get_logger("llm-supervisor")

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0          # to receive one whole request, once its first byte came
IDLE_TIMEOUT = 10.0          # between requests on a kept-alive connection (and before the first)
WRITE_TIMEOUT = 10.0         # for the client to take a response (or the next streamed chunk)
MAX_CONNECTIONS = 2048       # all clients together, root included
MAX_OTHER_CONNECTIONS = 512  # every uid but 0 together: the rest is root's reserve
MAX_PER_UID = 128            # one non-root uid
BACKLOG = 1024               # a burst queues in the kernel instead of being reset
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13

# A plain GET (``plain_get``): the request line, then header lines of visible ASCII.
_PLAIN = re.compile(rb"GET (/[\w.~!$&'()*+,;=:@/?%-]*) HTTP/1\.1\r\n"
                    rb"((?:[A-Za-z-]+: *[\x21-\x7e][\x20-\x7e]*\r\n)*)\r\n")
PLAIN_FIELDS = frozenset({b"host", b"connection", b"accept", b"user-agent", b"content-length"})


class Plain(NamedTuple):
    """A plain GET, read without h11: its target, its bytes (h11 reads them after all when
    the answer is a stream) and whether it asked to close the connection after the answer."""

    target: str
    raw: bytes
    close: bool


def plain_get(data: bytes) -> Plain | None:
    """``data`` (the first read of a request) as a plain GET, or None: h11 reads it. Plain:
    ``GET <target> HTTP/1.1``, the target in plain URL characters; the whole request and
    nothing behind it (no second request, no body); ``Host`` once; besides it at most one
    each of ``Connection`` (``close`` or ``keep-alive``), ``Accept``, ``User-Agent`` and
    ``Content-Length: 0``. Every plain GET is one h11 reads the same way (the rule is the
    narrower)."""
    found = _PLAIN.fullmatch(data)
    if found is None:
        return None
    fields: dict[bytes, bytes] = {}
    for line in found[2].split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name not in PLAIN_FIELDS or name in fields:
            return None
        fields[name] = value.strip().lower()
    connection = fields.get(b"connection", b"keep-alive")
    if b"host" not in fields or fields.get(b"content-length", b"0") != b"0" or \
            connection not in (b"close", b"keep-alive"):
        return None
    return Plain(found[1].decode("ascii"), data, connection == b"close")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    uid: int
    gid: int
    pid: int
    groups: tuple[int, ...] = ()
    plain: Plain | None = None  # read without h11 (``plain_get``)

    @classmethod
    def of(cls, method: str, target: str, body: bytes = b"",
           plain: Plain | None = None) -> Request:
        """A request as it came (its peer unknown yet): the target split into path and
        query (the last value of a repeated key)."""
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return cls(method, parts.path or "/", query, body, -1, -1, -1, plain=plain)

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
    # its bytes as h11 sends them to a plain GET, by whether that asked to close: encoded at
    # the first such request (``wire``), reused while the handler returns this same object
    encoded: dict[bool, bytes] = field(default_factory=dict, repr=False, compare=False)


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


def peer_groups(sock: socket.socket, pid: int) -> tuple[int, ...]:
    """The peer's supplementary groups: ``SO_PEERGROUPS`` (as at connect time), else the
    ``Groups:`` line of ``/proc/PID/status``."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
        return tuple(struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4]))
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def raise_fd_limit(want: int = 65536) -> None:
    """Room for MAX_CONNECTIONS sockets (systemd's default soft limit is 1024)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _encode(response: Response) -> bytes:
    if response.body is not None:
        return response.body
    return (json.dumps(response.document, indent=1, default=str) + "\n").encode()


def error_response(status: int, error: str, detail: Any = None) -> Response:
    return Response(status, {"error": error, "detail": detail})


def _whole(conn: h11.Connection, response: Response) -> bytes:
    """A response that is no stream, as ``conn`` sends it: head, body, end."""
    body = _encode(response)
    headers = [("Content-Type", response.content_type), *response.headers,
               ("Content-Length", str(len(body)))]
    return b"".join(conn.send(event) or b"" for event in (
        h11.Response(status_code=response.status, headers=headers), h11.Data(data=body),
        h11.EndOfMessage()))


# what a plain GET says that shapes h11's answer: whether it asked to close
_PRIMERS = {close: b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"")
            + b"\r\n" for close in (False, True)}


def wire(response: Response, close: bool) -> bytes:
    """``response`` (no stream) as h11 answers a plain GET with or without ``Connection:
    close``: encoded by h11 at the first call, then kept on the response."""
    encoded = response.encoded.get(close)
    if encoded is None:
        conn = h11.Connection(h11.SERVER)
        _take(conn, _PRIMERS[close])
        encoded = response.encoded[close] = _whole(conn, response)
    return encoded


def _take(conn: h11.Connection, plain: bytes) -> None:
    """h11 reads a plain GET (one it reads as a request and its end: no body)."""
    conn.receive_data(plain)
    events = conn.next_event(), conn.next_event()
    if not isinstance(events[1], h11.EndOfMessage):
        raise h11.LocalProtocolError(f"not a plain GET: {events}")


MayRead = Callable[[int, int, tuple[int, ...]], bool]


class ControlServer:
    def __init__(self, router: Router, path: Path, *, group: str | None = None,
                 may_read: MayRead | None = None) -> None:
        self.router = router
        self.path = path
        self.group = group
        self.may_read = may_read or (lambda uid, gid, groups: True)
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[asyncio.Task[None]] = set()
        self.per_uid: dict[int, int] = {}
        self.refused = 0  # connections turned away by a cap, since start

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket() or self.path.exists():
            self.path.unlink()  # a leftover from a daemon that was killed
        raise_fd_limit()
        self.server = await asyncio.start_unix_server(self._accept, path=str(self.path),
                                                      limit=MAX_HEAD, backlog=BACKLOG)
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
        try:
            pid, uid, gid = peer_credentials(writer.get_extra_info("socket"))
        except OSError:
            writer.close()
            return
        if not self._admit(uid):
            self.refused += 1
            writer.close()
            return
        self.connections.add(task)
        self.per_uid[uid] = self.per_uid.get(uid, 0) + 1
        try:
            await self._serve(reader, writer, pid, uid, gid)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception as exc:  # a broken connection must never reach the daemon
            log.warning("control connection failed", error=repr(exc))
        finally:
            self.connections.discard(task)
            left = self.per_uid.get(uid, 1) - 1
            if left:
                self.per_uid[uid] = left
            else:
                self.per_uid.pop(uid, None)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that does not read gets nothing more
            else:
                writer.close()

    def _admit(self, uid: int) -> bool:
        """Peer credentials first, caps second: root only meets the overall cap."""
        if len(self.connections) >= MAX_CONNECTIONS:
            return False
        if uid == 0:
            return True
        others = len(self.connections) - self.per_uid.get(0, 0)
        return others < MAX_OTHER_CONNECTIONS and self.per_uid.get(uid, 0) < MAX_PER_UID

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     pid: int, uid: int, gid: int) -> None:
        groups = peer_groups(writer.get_extra_info("socket"), pid) if uid != 0 else ()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            reading = _Reading()
            try:
                request = await self._read_timed(conn, reader, reading)
            except HTTPError as exc:
                await self._send(conn, writer, error_response(exc.status, exc.error, exc.detail))
                return
            except TimeoutError:
                if reading.started and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, writer, error_response(
                        408, f"request not received within {READ_TIMEOUT:g}s"))
                return
            if request is None:
                return
            request.uid, request.gid, request.pid, request.groups = uid, gid, pid, groups
            response = await self._dispatch(request)
            if not await self._respond(conn, reader, writer, request, response):
                return

    async def _respond(self, conn: h11.Connection, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, request: Request,
                       response: Response) -> bool:
        """Send the response; whether the connection stays open for another request."""
        plain = request.plain
        if plain is not None and response.stream is None:
            writer.write(wire(response, plain.close))  # h11's bytes, ready made
            await _drain(writer)
            return not plain.close
        if plain is not None:  # h11 frames a stream: it reads the request after all
            _take(conn, plain.raw)
        await self._send(conn, writer, response, reader)
        if response.stream is not None:
            return False  # a stream ends its connection
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return False
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

    async def _read_timed(self, conn: h11.Connection, reader: asyncio.StreamReader,
                          reading: _Reading) -> Request | None:
        """A request within IDLE_TIMEOUT of the last one and READ_TIMEOUT of its first byte
        (one timeout, moved when the first byte comes: no task of its own per request).
        The first read of a request is a plain GET (``plain_get``), or h11's to read."""
        async with asyncio.timeout(IDLE_TIMEOUT) as reading.timeout:
            if not conn.trailing_data[0]:  # nothing of this request came with the last
                data = await reader.read(4096)
                if not data:
                    return None
                plain = plain_get(data)
                if plain is not None:  # whole: nothing more to wait for
                    return Request.of("GET", plain.target, plain=plain)
                reading.start()
                conn.receive_data(data)
            return await self._read_request(conn, reader, reading)

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            reading: _Reading) -> Request | None:
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
                if data and not reading.started:
                    reading.start()
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
                return Request.of(head.method.decode("ascii", "replace"),
                                  head.target.decode("ascii", "replace"), bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _dispatch(self, request: Request) -> Response:
        try:
            handler, params, write = self.router.match(request.method, request.path)
            if write and request.uid != 0:
                raise HTTPError(403, "this action needs root (uid 0)",
                                {"uid": request.uid})
            if not write and not self.may_read(request.uid, request.gid, request.groups):
                raise HTTPError(403, "reading needs root or the socket group")
            return await handler(request, params)
        except HTTPError as exc:
            return error_response(exc.status, exc.error, exc.detail)
        except Exception as exc:
            log.exception("control handler failed", path=request.path)
            return error_response(500, "internal error", repr(exc))

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    response: Response, reader: asyncio.StreamReader | None = None) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # h11 allows an error response even before a request was understood
        if response.stream is None:
            writer.write(_whole(conn, response))
            await _drain(writer)
            return
        headers = [("Content-Type", response.content_type), *response.headers]
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        # A follower's client has nothing more to say: EOF (or anything) from it ends the stream
        # at once, rather than at the next event.
        hangup = asyncio.ensure_future(reader.read(1)) if reader is not None else None
        streaming = asyncio.ensure_future(self._stream(conn, writer, response.stream))
        try:
            waiting = {streaming} | ({hangup} if hangup else set())
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if streaming in done:
                streaming.result()
                writer.write(conn.send(h11.EndOfMessage()))
                await _drain(writer)
        finally:
            for task in (streaming, hangup):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in (streaming, hangup) if t is not None),
                                 return_exceptions=True)
            await response.stream.aclose()  # type: ignore[attr-defined]

    @staticmethod
    async def _stream(conn: h11.Connection, writer: asyncio.StreamWriter,
                      stream: AsyncIterator[bytes]) -> None:
        async for chunk in stream:
            writer.write(conn.send(h11.Data(data=chunk)))
            await _drain(writer)  # a stalled reader is dropped


class _Reading:
    """One request being read: whether its first byte came, and the timeout that moves from
    IDLE_TIMEOUT to READ_TIMEOUT when it does."""

    def __init__(self) -> None:
        self.started = False
        self.timeout: asyncio.Timeout | None = None

    def start(self) -> None:
        self.started = True
        if self.timeout is not None:
            self.timeout.reschedule(asyncio.get_running_loop().time() + READ_TIMEOUT)


async def _drain(writer: asyncio.StreamWriter) -> None:
    """The client takes what was written within WRITE_TIMEOUT (a timeout, not ``wait_for``:
    no task of its own per write). Nothing to wait for when the socket took it all and the
    connection is not going (a lost one raises from ``drain``)."""
    transport = writer.transport
    if not transport.get_write_buffer_size() and not transport.is_closing():
        return
    async with asyncio.timeout(WRITE_TIMEOUT):
        await writer.drain()


def group_reader(group: str) -> MayRead:
    """Reads are for root and members of ``group``: primary or supplementary, as the peer
    process has them (``groups``), else as the group database says of its user."""
    def may_read(uid: int, gid: int, groups: tuple[int, ...] = ()) -> bool:
        if uid == 0:
            return True
        try:
            entry = grp.getgrnam(group)
        except KeyError:
            return False
        if gid == entry.gr_gid or entry.gr_gid in groups:
            return True
        import pwd
        try:
            user = pwd.getpwuid(uid)
        except KeyError:
            return False
        if user.pw_name in entry.gr_mem:
            return True
        try:
            return entry.gr_gid in os.getgrouplist(user.pw_name, user.pw_gid)
        except OSError:
            return False
    return may_read
