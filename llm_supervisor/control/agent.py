"""The balancer's port: HAProxy's agent-check and an HTTP readiness endpoint on one optional TCP
listener (``[agent]``, off by default). Read-only: it answers from the engines' views the
record keeps (plain data), never calls an engine, and nothing a client does reaches
supervision.

HAProxy's agent (``agent-check agent-port 9777 agent-send "main\\n"``) connects, sends its
string — here an engine's name and a newline — and reads one line: ``up 35% maxconn:4``, or
``down #reason``. The words (docs/internals.md, "The balancer's port"):
- ``N%``: the server's weight relative to its configured one. An engine weighs its speed: its
  learned tokens/s on the tier it is on against ``[agent] full_speed`` (one figure for the
  whole fleet), else against the speed it learned on the best tier of its chain, else the
  tier's usual share (``TIER_SHARE``), so a host fallen to the CPU gets its speed's share;
- ``maxconn:N``: its slots (what it serves at once), so the balancer queues the rest;
- ``up``/``down``: serving or not (``down`` while starting, switching, restarting, failed,
  blocked, stopped, degraded, or unknown); ``up 0%`` while draining (a planned switch waits
  for the requests in flight: nothing new comes, those go on).
Never ``ready``, ``drain`` or ``maint``: those are administrative, and an agent's ``ready``
cancels an operator's drain.

``GET /readyz/<engine>`` on the same port (a request line starting ``GET `` cannot be an
engine's name): 200 ``ready`` while the engine is healthy, 503 with the reason otherwise, 404
for an unknown engine, 503 while draining — for Kubernetes, Consul, Traefik, Envoy.

Only the ``allow`` addresses are answered (others are closed unread); one request per
connection, read within ``READ_TIMEOUT``, at most ``MAX_REQUEST`` bytes, answered and closed
within a second; at most ``MAX_CONNECTIONS`` at once (more are closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus

import h11
import structlog

from llm_supervisor.records.metrics import EngineView
from llm_supervisor.tiers import CPU_TIER

log = structlog.get_logger("llm-supervisor")

READ_TIMEOUT = 1.0      # for the whole request to come
WRITE_TIMEOUT = 1.0     # for the client to take the answer
MAX_REQUEST = 4096      # an agent line, or an HTTP request's head
MAX_CONNECTIONS = 64
MAX_WEIGHT = 256        # HAProxy's cap for a relative weight
# a tier's usual speed against ROCm's on the same card, when nothing learned says better:
# Vulkan on an MI50 is about 20x slower than ROCm, the CPU 10-20x (docs/field-notes.md)
TIER_SHARE = {"rocm": 100, "vulkan": 5, "opencl": 5, CPU_TIER: 5}
_UNSAFE = re.compile(r"[^\x20-\x7e]")


def weight(view: EngineView, full_speed: float | None) -> int:
    """The engine's share, in percent of its configured weight (``up`` engines only)."""
    speed = view.speed_reference or view.tokens_per_second
    if full_speed and speed:
        share = 100 * speed / full_speed
    elif speed and view.best_reference:
        share = 100 * speed / view.best_reference
    else:
        share = TIER_SHARE.get(view.tier or CPU_TIER, 100)
    return max(1, min(MAX_WEIGHT, round(share)))


def why_not(view: EngineView | None) -> str | None:
    """Why the engine should get no new request (None: it may)."""
    if view is None:
        return "no such engine"
    if view.state != "healthy":
        reason = f"{view.state}" + (f": {view.trouble}" if view.trouble else "")
        return reason + (f" ({view.tier})" if view.tier else "")
    return None


def agent_line(view: EngineView | None, full_speed: float | None) -> str:
    """The agent's answer for one engine (None: unknown). Draining: up, weight 0 — nothing
    new, the requests in flight go on."""
    reason = why_not(view)
    if reason is not None or view is None:
        return f"down #{_safe(reason or 'no such engine')}\n"
    words = ["up", f"{0 if view.draining else weight(view, full_speed)}%"]
    if view.slots:
        words.append(f"maxconn:{view.slots}")
    return " ".join(words) + "\n"


def _safe(text: str) -> str:
    """A reason on the agent's one line: printable ASCII, bounded."""
    return _UNSAFE.sub("?", text)[:200]


def readyz(view: EngineView | None) -> tuple[int, str]:
    if view is None:
        return 404, "no such engine\n"
    reason = why_not(view) or ("draining: a planned switch waits for the requests in flight"
                               if view.draining else None)
    return (200, "ready\n") if reason is None else (503, _safe(reason) + "\n")


def allowed_networks(allow: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(a, strict=False) for a in allow]


class AgentServer:
    """The listener. ``engines()`` gives the engines' views as the record holds them now."""

    def __init__(self, listen: tuple[str, int], allow: Iterable[str],
                 engines: Callable[[], Mapping[str, EngineView]],
                 full_speed: Callable[[], float | None]) -> None:
        self.listen = listen
        self.allow = allowed_networks(allow)
        self.engines = engines
        self.full_speed = full_speed
        self.server: asyncio.Server | None = None
        self.active = 0
        self.refused = 0  # connections closed unanswered: not allowed, too many, bad

    async def start(self) -> None:
        host, port = self.listen
        self.server = await asyncio.start_server(self._client, host, port, limit=MAX_REQUEST,
                                                 reuse_address=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    def _allowed(self, peer: object) -> bool:
        try:
            address = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else "")
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._allowed(writer.get_extra_info("peername")) or \
                self.active >= MAX_CONNECTIONS:
            self.refused += 1
            writer.transport.abort()
            return
        self.active += 1
        try:
            answer = await asyncio.wait_for(self._answer(reader), READ_TIMEOUT)
            if answer is None:
                self.refused += 1
                return
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError):
            self.refused += 1
        finally:
            self.active -= 1
            writer.transport.abort() if writer.transport.get_write_buffer_size() else \
                writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request read and answered: an agent's line, or an HTTP GET (its head)."""
        line = await reader.readuntil(b"\n")
        if not line.startswith(b"GET "):
            name = line.strip().decode("ascii", "replace")
            return agent_line(self.engines().get(name), self.full_speed()).encode()
        head = line
        while not head.endswith((b"\r\n\r\n", b"\n\n")):
            head += await reader.readuntil(b"\n")
            if len(head) > MAX_REQUEST:
                return None
        return self._http(head)

    def _http(self, head: bytes) -> bytes | None:
        """A GET, parsed and answered by h11; None for anything h11 does not take."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            conn.receive_data(head)
            request = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if not isinstance(request, h11.Request) or request.method != b"GET":
            return None
        target = request.target.decode("ascii", "replace")
        if target.startswith("/readyz/"):
            status, body = readyz(self.engines().get(target.removeprefix("/readyz/")))
        else:
            status, body = 404, "not found: ask /readyz/<engine>\n"
        data = body.encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(data))), ("Cache-Control", "no-store"),
                   ("Connection", "close")]
        return b"".join(conn.send(event) or b"" for event in (
            h11.Response(status_code=status, headers=headers,
                         reason=HTTPStatus(status).phrase), h11.Data(data=data),
            h11.EndOfMessage()))
