"""Who else talks to an engine: its established TCP connections, as the kernel sees them.

An Ollama before 0.30 reports no token progress; the kernel's view of the engine's clients stands
in. Every ESTABLISHED TCP connection to the engine's listening port, other than the supervisor's
own, is a request in flight or queued, and the byte counters of the engine's end of it
(``tcpi_bytes_acked``: what the engine sent and the client acknowledged; ``tcpi_bytes_received``)
grow while a streamed answer flows -- what ``ss -ti`` shows. With nobody else connected, nothing
can be ahead of the supervisor's own generation check.

The sockets come from NETLINK_SOCK_DIAG (sock_diag(7)): per address family, one dump of the
established sockets whose local port is the engine's, each with its ``struct tcp_info``
(INET_DIAG_INFO). The kernel filters the dump by the port given in the request's socket id; the
rows are checked again here, for a kernel that would not. Only when the engine has connections
at all is a second dump made, of the sockets whose *remote* port is the engine's (the client
ends), to learn the endpoints of the supervisor's own client sockets, named by their inodes in
``/proc/PID/fd``.

Pure parts apart from I/O: ``request`` builds a dump request and ``parse`` reads one datagram of
the answer (bytes in, rows out); ``select`` is the rule of who counts; ``flowing`` compares two
snapshots. ``snapshot`` does the I/O and never raises: a host without netlink (a sandbox), or a
process whose sockets cannot be read, gives no connections and a one-line ``error``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

__all__ = ["Connection", "Clients", "Row", "DumpError", "snapshot", "flowing", "select",
           "request", "parse", "socket_inodes"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP = 0x1, 0x2, 0x300
TCP_ESTABLISHED = 1
INET_DIAG_INFO = 2
TIMEOUT = 1.0          # seconds the kernel gets to answer one dump (it answers in microseconds)
BUFSIZE = 1 << 16      # the kernel's dump datagrams are at most 32 KiB

NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
REQ_HEAD = struct.Struct("=BBBBI")      # family, protocol, ext, pad, states
SOCKID_PORTS = struct.Struct(">HH")     # sport, dport, network order
DIAG_MSG_HEAD = struct.Struct("=BB")    # family, state (then timer, retrans)
DIAG_MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode (at 52)
DIAG_MSG_SIZE = 72                      # struct inet_diag_msg
RTATTR = struct.Struct("=HH")           # len, type
U64 = struct.Struct("=Q")
TCPI_BYTES_ACKED = 120                  # offsetof(struct tcp_info, tcpi_bytes_acked), Linux 4.1
TCPI_BYTES_RECEIVED = 128               # offsetof(struct tcp_info, tcpi_bytes_received)
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


class DumpError(Exception):
    """The kernel refused a sock_diag dump, or answered with bytes that do not parse."""

    def __init__(self, reason: str, code: int = 0) -> None:
        super().__init__(reason)
        self.code = code  # the errno of an NLMSG_ERROR answer, else 0


@dataclass(frozen=True)
class Row:
    """One socket of a sock_diag dump; addresses as text, v4-mapped IPv6 ones as IPv4."""

    local: tuple[str, int]
    remote: tuple[str, int]
    inode: int
    bytes_acked: int | None     # None: the kernel's tcp_info is older than Linux 4.1
    bytes_received: int | None
    state: int = TCP_ESTABLISHED


@dataclass(frozen=True)
class Connection:
    """One client of the engine, seen from the engine's end of the connection."""

    peer: str                   # the client's endpoint, ``127.0.0.1:51234`` or ``[::1]:51234``
    bytes_sent: int | None      # tcpi_bytes_acked of the engine's socket: sent and acknowledged
    bytes_received: int | None  # tcpi_bytes_received of the engine's socket
    inode: int

    def to_dict(self) -> dict[str, object]:
        return {"peer": self.peer, "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received, "inode": self.inode}


@dataclass(frozen=True)
class Clients:
    """The engine's clients at one moment; ``error`` says in one line why none could be seen."""

    connections: tuple[Connection, ...] = ()
    error: str | None = None

    @property
    def count(self) -> int:
        return len(self.connections)

    def to_dict(self) -> dict[str, object]:
        return {"count": self.count, "error": self.error,
                "connections": [c.to_dict() for c in self.connections]}


def flowing(before: Clients, after: Clients) -> int:
    """Bytes the engine sent to its clients between two snapshots.

    A connection is the same one when its peer endpoint and its socket inode both match; it
    counts what its ``bytes_sent`` grew by. A connection new in ``after`` counts its whole
    ``bytes_sent``; one gone from ``after`` counts nothing; an unknown counter counts nothing.
    """
    sent = {(c.peer, c.inode): c.bytes_sent for c in before.connections}
    total = 0
    for c in after.connections:
        if c.bytes_sent is None:
            continue
        earlier = sent.get((c.peer, c.inode))
        total += max(c.bytes_sent - (earlier or 0), 0)
    return total


def select(servers: Iterable[Row], clients: Iterable[Row], own: Collection[int], port: int,
           host: str | None = None) -> tuple[Connection, ...]:
    """The engine's clients: the established sockets whose local port is ``port`` (and whose
    local address is ``host``, when it names one address), less the supervisor's own.

    A server-side socket is the supervisor's own when its two endpoints are, swapped, those of
    a client socket (remote port ``port``) whose inode is in ``own``: only that connection, by
    both full endpoints, never by address or port alone. ``host``: None, a wildcard
    (``0.0.0.0``, ``::``) or a name other than ``localhost`` keeps every local address (no name
    is looked up); ``localhost`` keeps the loopback addresses; an IP address keeps that one.
    """
    at = _address_filter(host)
    mine = {(c.remote, c.local) for c in clients
            if c.inode in own and c.remote[1] == port and c.state == TCP_ESTABLISHED}
    kept = [Connection(_endpoint(*s.remote), s.bytes_acked, s.bytes_received, s.inode)
            for s in servers
            if s.local[1] == port and s.state == TCP_ESTABLISHED and at(s.local[0])
            and (s.local, s.remote) not in mine]
    return tuple(sorted(kept, key=lambda c: (c.peer, c.inode)))


def request(family: int, seq: int, *, sport: int = 0, dport: int = 0) -> bytes:
    """A sock_diag dump request for the ESTABLISHED TCP sockets of ``family``, with tcp_info;
    a non-zero ``sport`` / ``dport`` asks the kernel for that local / remote port only."""
    body = (REQ_HEAD.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0,
                          1 << TCP_ESTABLISHED)
            + SOCKID_PORTS.pack(sport, dport) + bytes(32 + 4 + 8))  # addresses, if, cookie
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse(datagram: bytes, seq: int) -> tuple[list[Row], bool]:
    """The sockets in one datagram of the answer to request ``seq``, and whether it ends it.

    A dump is a run of messages flagged NLM_F_MULTI ended by NLMSG_DONE; a message without the
    flag is an answer of its own. Messages of another sequence are skipped. NLMSG_ERROR (other
    than an acknowledgement), an error in NLMSG_DONE, NLMSG_OVERRUN and bytes that do not
    parse raise DumpError. A tcp_info too short for a counter gives None for it.
    """
    rows: list[Row] = []
    offset = 0
    while offset < len(datagram):
        if len(datagram) - offset < NLMSGHDR.size:
            raise DumpError(f"a truncated netlink header ({len(datagram) - offset} bytes)")
        length, kind, flags, got, _ = NLMSGHDR.unpack_from(datagram, offset)
        if length < NLMSGHDR.size or offset + length > len(datagram):
            raise DumpError(f"a netlink message of {length} bytes in "
                            f"{len(datagram) - offset} left")
        start, end = offset + NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3
        if got != seq or kind == NLMSG_NOOP:
            continue
        if kind in (NLMSG_ERROR, NLMSG_DONE):
            code = -_int(datagram, start) if end - start >= 4 else 0
            if code > 0:
                raise DumpError(f"sock_diag answered {errno.errorcode.get(code, code)}: "
                                f"{os.strerror(code)}", code)
            if kind == NLMSG_DONE or not flags & NLM_F_MULTI:
                return rows, True
            continue
        if kind == NLMSG_OVERRUN:
            raise DumpError("sock_diag overran (data lost)")
        if kind == SOCK_DIAG_BY_FAMILY:
            rows.append(_row(datagram, start, end))
            if not flags & NLM_F_MULTI:
                return rows, True
    return rows, False


def socket_inodes(pid: int) -> frozenset[int]:
    """The inodes of the sockets process ``pid`` holds (its ``/proc/PID/fd`` links
    ``socket:[N]``); none for a process that is gone. PermissionError when they cannot be read.
    """
    try:
        fd_dir = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return frozenset()
    inodes = set()
    try:
        for name in os.listdir(fd_dir):
            try:
                link = os.readlink(name, dir_fd=fd_dir)
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    finally:
        os.close(fd_dir)
    return frozenset(inodes)


def snapshot(port: int, *, own_pid: int | None = None, host: str | None = None) -> Clients:
    """The established connections to the engine listening on ``port`` (at ``host``), but
    those of process ``own_pid`` (default: this one), as ``select`` rules. Synchronous, a few
    system calls and two netlink dumps (four when the engine has connections); never raises.
    """
    if not 0 < port < 65536:
        return Clients((), error=f"port {port} is not a TCP port")
    pid = os.getpid() if own_pid is None else own_pid
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(TIMEOUT)
            servers = _dump_both(nl, sport=port)
            if not servers:
                return Clients(())
            clients = _dump_both(nl, dport=port)
        own = socket_inodes(pid) if clients else frozenset()
    except DumpError as exc:
        return Clients((), error=str(exc))
    except TimeoutError:
        return Clients((), error=f"sock_diag did not answer within {TIMEOUT:g} s")
    except PermissionError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return Clients((), error=f"not permitted to read sockets{where}: run as root")
    except OSError as exc:
        return Clients((), error=f"no sock_diag netlink here: {exc.strerror or exc}")
    return Clients(select(servers, clients, own, port, host))


def _dump_both(nl: socket.socket, *, sport: int = 0, dport: int = 0) -> list[Row]:
    rows = _dump(nl, socket.AF_INET, sport=sport, dport=dport)
    try:
        rows += _dump(nl, socket.AF_INET6, sport=sport, dport=dport)
    except DumpError as exc:
        if exc.code not in (errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
            raise  # a kernel without IPv6 has no IPv6 sockets; anything else is an error
    return rows


def _dump(nl: socket.socket, family: int, *, sport: int, dport: int) -> list[Row]:
    seq = family << 1 | bool(dport)  # each dump its own sequence on a socket of its own
    nl.send(request(family, seq, sport=sport, dport=dport))
    rows: list[Row] = []
    while True:
        datagram, _, flags, _ = nl.recvmsg(BUFSIZE)
        if flags & socket.MSG_TRUNC:
            raise DumpError(f"a sock_diag datagram longer than {BUFSIZE} bytes")
        if not datagram:
            raise DumpError("sock_diag closed the dump before its end")
        part, done = parse(datagram, seq)
        rows += part
        if done:
            return rows


def _row(data: bytes, start: int, end: int) -> Row:
    if end - start < DIAG_MSG_SIZE:
        raise DumpError(f"an inet_diag_msg of {end - start} bytes (needs {DIAG_MSG_SIZE})")
    family, state = DIAG_MSG_HEAD.unpack_from(data, start)
    sport, dport = SOCKID_PORTS.unpack_from(data, start + 4)
    src = _address(family, data[start + 8:start + 24])
    dst = _address(family, data[start + 24:start + 40])
    inode = DIAG_MSG_TAIL.unpack_from(data, start + 52)[4]
    acked = received = None
    at = start + DIAG_MSG_SIZE
    while at + RTATTR.size <= end:
        size, kind = RTATTR.unpack_from(data, at)
        if size < RTATTR.size or at + size > end:
            raise DumpError(f"an attribute of {size} bytes in {end - at} left")
        if kind == INET_DIAG_INFO:
            info = data[at + RTATTR.size:at + size]
            acked = _u64(info, TCPI_BYTES_ACKED)
            received = _u64(info, TCPI_BYTES_RECEIVED)
        at += (size + 3) & ~3
    return Row((src, sport), (dst, dport), inode, acked, received, state)


def _address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        if raw[:12] == _V4_MAPPED:
            return socket.inet_ntop(socket.AF_INET, raw[12:16])
        return socket.inet_ntop(socket.AF_INET6, raw)
    raise DumpError(f"a socket of address family {family}")


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _address_filter(host: str | None) -> Callable[[str], bool]:
    if host is None:
        return lambda _: True
    if host == "localhost":
        return lambda a: ipaddress.ip_address(a).is_loopback
    try:
        wanted = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return lambda _: True
    if isinstance(wanted, ipaddress.IPv6Address) and wanted.ipv4_mapped:
        wanted = wanted.ipv4_mapped
    if wanted.is_unspecified:
        return lambda _: True
    return lambda a: ipaddress.ip_address(a) == wanted


def _u64(info: bytes, offset: int) -> int | None:
    return U64.unpack_from(info, offset)[0] if len(info) >= offset + U64.size else None


def _int(data: bytes, start: int) -> int:
    value: int = struct.unpack_from("=i", data, start)[0]
    return value
