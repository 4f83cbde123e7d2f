"""A minimal, strict HTTP/1.1 client for the control socket: standard library only.

``llm-supervisorctl status`` must start about as fast as Python itself, and ``http.client``
or ``h11`` alone cost 30-40 ms of imports (docs/field-notes.md). So this path speaks just enough
HTTP/1.1: one request with ``Connection: close``, the status line and ``Content-Length``
checked, anything unexpected an error. The server side always uses a real HTTP library.
Even ``json`` (which imports ``re``) is imported only when a body is parsed: the status table
comes rendered from the daemon (``?format=text``). And the socket is the interpreter's own
``_socket``: the ``socket`` module imports ``enum`` and ``selectors`` (about half of this
path's cost, measured with ``-X importtime``), and nothing here needs them.
"""

from __future__ import annotations

import _socket

from llm_supervisor.errors import ProtocolError

TYPE_CHECKING = False  # typing is not imported on the status path; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DEFAULT_SOCKET = "/run/llm-supervisor/control.sock"
MAX_RESPONSE = 64 * 1024 * 1024


class Unreachable(Exception):
    """The daemon's socket is absent, refused, or not answering."""


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:  # a JSON document
        import json  # json pulls in re: not on the path that prints a status table
        return json.loads(self.body)


def _connect(path: str, timeout: float) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise Unreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


def request(path: str, method: str, target: str, body: object = None, *,
            timeout: float = 30.0) -> Response:
    """One request over the Unix socket at ``path``; returns the whole response."""
    if body is None:
        payload = b""
    else:
        import json
        payload = json.dumps(body).encode()
    head = (f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"Accept: application/json\r\nContent-Length: {len(payload)}\r\n")
    if body is not None:
        head += "Content-Type: application/json\r\n"
    sock = _connect(path, timeout)
    try:
        sock.sendall(head.encode("ascii") + b"\r\n" + payload)
        chunks = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE:
                raise ProtocolError("response too large")
    except TimeoutError:
        raise Unreachable(f"{path}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise Unreachable(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    return parse_response(b"".join(chunks))


def parse_response(data: bytes) -> Response:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ProtocolError("incomplete response (no end of headers)")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "HTTP/1.1" or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line!r}")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise ProtocolError("unexpected Transfer-Encoding")
    length = headers.get("content-length")
    if length is None or not length.isdigit():
        raise ProtocolError("missing or bad Content-Length")
    if len(body) != int(length):
        raise ProtocolError(f"body is {len(body)} bytes, Content-Length says {length}")
    return Response(int(parts[1]), headers, body)


def stream_lines(path: str, target: str, *, timeout: float | None = None
                 ) -> Iterator[Any]:
    """GET a streaming NDJSON resource, yielding one decoded line at a time until EOF.

    Asks with HTTP/1.0, so the server frames the body by closing the connection: no
    chunked decoding is needed here.
    """
    import socket  # a stream reads lines: the full module's makefile (not the status path)

    raw = _connect(path, 30.0)
    sock = socket.socket(fileno=raw.detach())
    sock.settimeout(timeout)
    try:
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode("ascii"))
        reader = sock.makefile("rb")
        status = reader.readline().decode("latin-1").split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/1.") or not status[1].isdigit():
            raise ProtocolError(f"bad status line {' '.join(status)!r}")
        while reader.readline() not in (b"\r\n", b"\n", b""):
            pass
        if status[1] != "200":
            body = reader.read(65536).decode("utf-8", "replace")
            raise ProtocolError(f"HTTP {status[1]}: {body.strip()}")
        import json
        for line in reader:
            if line.strip():
                yield json.loads(line)
    except OSError as exc:
        raise Unreachable(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
