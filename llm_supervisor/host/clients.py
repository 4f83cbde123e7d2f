"""Who else talks to an engine: its established TCP connections, as the kernel sees them.

An Ollama before 0.30 reports no token progress; the kernel's view of the engine's clients stands
in. Every ESTABLISHED TCP connection to the engine's listening port, other than the supervisor's
own, is a request in flight or queued, and the byte counters of the engine's end of it
(``tcpi_bytes_acked``: what the engine sent and the client acknowledged; ``tcpi_bytes_received``)
grow while a streamed answer flows -- what ``ss -ti`` shows. With nobody else connected, nothing
can be ahead of the supervisor's own generation check.

The sockets come from NETLINK_SOCK_DIAG (sock_diag(7)): one dump of the ESTABLISHED TCP sockets
of both families (IPv6 holds the v4-mapped ends of a dual-stack listener), each with its
``struct tcp_info`` (INET_DIAG_INFO). A bytecode filter in the request has the kernel keep only
the sockets whose local port is the engine's (its ends of the connections) or whose remote port
is (the client ends on this host, the supervisor's among them), so the cost does not grow with
the host's other connections; the rows are checked again here. The kernel still walks its whole
established-socket hash table for a dump: that walk, not the engine's connection count, sets the
cost of an idle snapshot (dev/bench_clients.py), hence the first interface's request
(TCPDIAG_GETSOCK), which covers both families in one walk where SOCK_DIAG_BY_FAMILY takes one
per family; a kernel that refused it would get those two. The supervisor's own client ends are
named by the socket inodes in ``/proc/PID/fd``, read only when the engine has a connection from
this host.

Pure parts apart from I/O: ``request`` builds a dump request and ``parse`` reads one datagram of
the answer (bytes in, rows out); ``select`` is the rule of who counts; ``flowing`` compares two
snapshots. ``dump`` and ``socket_inodes`` read the kernel; ``snapshot`` puts it together and never
raises: a host without netlink (a sandbox), or a process whose sockets cannot be read, gives no
connections and a one-line ``error``.
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
           "request", "bytecode", "parse", "dump", "socket_inodes"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCPDIAG_GETSOCK = 18  # the first interface (Linux 2.6), answered for both families at once
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP = 0x1, 0x2, 0x300
TCP_ESTABLISHED = 1
INET_DIAG_INFO = 2
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE, INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE = (
    1, 2, 3, 4, 5)
TIMEOUT = 1.0          # seconds the kernel gets to answer a dump (it takes a few milliseconds)
BUFSIZE = 1 << 16      # the kernel's dump datagrams are at most 32 KiB

NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
REQ_HEAD = struct.Struct("=BBBBI")      # inet_diag_req_v2: family, protocol, ext, pad, states
REQ_V1_HEAD = struct.Struct("=BBBB")    # inet_diag_req: family, src_len, dst_len, ext; id; ...
REQ_V1_TAIL = struct.Struct("=II")      # ... states, dbs
SOCKID_PORTS = struct.Struct(">HH")     # sport, dport, network order
# struct inet_diag_msg (72 bytes): family, state, timer, retrans; at 4 the socket id (sport,
# dport, src[16], dst[16], if, cookie); expires, rqueue, wqueue, uid; at 68 the inode
DIAG_MSG_ID = struct.Struct(">HH16s16s")
DIAG_MSG_INODE = 68
DIAG_MSG_SIZE = 72
U32 = struct.Struct("=I")
RTATTR = struct.Struct("=HH")           # len, type (also struct nlattr)
BC_OP = struct.Struct("=BBH")           # struct inet_diag_bc_op: code, yes, no
U64 = struct.Struct("=Q")
COUNTERS = struct.Struct("=QQ")         # tcpi_bytes_acked, tcpi_bytes_received
TCPI_BYTES_ACKED = 120                  # offsetof(struct tcp_info, tcpi_bytes_acked), Linux 4.1
TCPI_BYTES_RECEIVED = 128               # offsetof(struct tcp_info, tcpi_bytes_received)
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_UNSUPPORTED = (errno.EINVAL, errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP)


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


def select(rows: Iterable[Row], own: Collection[int], port: int, host: str | None = None
           ) -> tuple[Connection, ...]:
    """The engine's clients: of the established sockets ``rows``, those whose local port is
    ``port`` (the engine's ends; and whose local address is ``host``, when it names one
    address), less the supervisor's own.

    A connection is the supervisor's own when a socket of ``own`` (inodes) is its client end:
    a row whose remote port is ``port`` and whose two endpoints are, swapped, those of the
    engine's end. Only that connection, by both full endpoints, never by address or port
    alone. ``host``: None, a wildcard (``0.0.0.0``, ``::``) or a name other than ``localhost``
    keeps every local address (no name is looked up); ``localhost`` keeps the loopback
    addresses; an IP address keeps that one.
    """
    at = _address_filter(host)
    established = [r for r in rows if r.state == TCP_ESTABLISHED]
    mine = {(r.remote, r.local) for r in established if r.remote[1] == port and r.inode in own}
    kept = [Connection(_endpoint(*s.remote), s.bytes_acked, s.bytes_received, s.inode)
            for s in established
            if s.local[1] == port and at(s.local[0]) and (s.local, s.remote) not in mine]
    return tuple(sorted(kept, key=lambda c: (c.peer, c.inode)))


def request(family: int | None, seq: int, port: int | None = None) -> bytes:
    """A dump request for the ESTABLISHED TCP sockets, with their tcp_info; with ``port``,
    only those whose local or remote port it is (``bytecode``).

    ``family`` None: the first interface's request (TCPDIAG_GETSOCK, ``struct inet_diag_req``),
    which the kernel answers for IPv4 and IPv6 in one walk of its table; a family:
    SOCK_DIAG_BY_FAMILY's ``struct inet_diag_req_v2``, for that family only.
    """
    ext, states = 1 << (INET_DIAG_INFO - 1), 1 << TCP_ESTABLISHED
    any_socket = bytes(SOCKID_PORTS.size + 32 + 4 + 8)  # ports, addresses, if, cookie: any
    if family is None:
        kind = TCPDIAG_GETSOCK
        body = REQ_V1_HEAD.pack(socket.AF_INET, 0, 0, ext) + any_socket + REQ_V1_TAIL.pack(
            states, 0)  # the family is not read: the kernel dumps both
    else:
        kind = SOCK_DIAG_BY_FAMILY
        body = REQ_HEAD.pack(family, socket.IPPROTO_TCP, ext, 0, states) + any_socket
    if port is not None:
        program = bytecode(port)
        body += RTATTR.pack(RTATTR.size + len(program), INET_DIAG_REQ_BYTECODE) + program
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq,
                         0) + body


def bytecode(port: int) -> bytes:
    """inet_diag's filter ``sport == port || dport == port``, as ss(8) compiles it.

    The kernel runs it as jumps: each op moves ``yes`` or ``no`` bytes on; landing exactly at
    the end keeps the socket, past it drops it. A port test is an op and, in the ``no`` of a
    second op, the port. ``a || b`` is ``a``, a JMP over ``b`` (to the end), then ``b``; ``a``
    failing jumps past its own end plus the 4-byte JMP, onto ``b``.
    """
    def equal(low: int, high: int) -> bytes:   # 16 bytes: >= port, then <= port
        return (BC_OP.pack(low, 8, 20) + BC_OP.pack(0, 0, port)
                + BC_OP.pack(high, 8, 12) + BC_OP.pack(0, 0, port))
    dport = equal(INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE)
    return (equal(INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE)
            + BC_OP.pack(INET_DIAG_BC_JMP, 4, len(dport) + 4) + dport)


def parse(datagram: bytes, seq: int) -> tuple[list[Row], bool]:
    """The sockets in one datagram of the answer to request ``seq``, and whether it ends it.

    A dump is a run of messages flagged NLM_F_MULTI ended by NLMSG_DONE; a message without the
    flag is an answer of its own. Messages of another sequence are skipped. NLMSG_ERROR (other
    than an acknowledgement), an error in NLMSG_DONE, NLMSG_OVERRUN and bytes that do not
    parse raise DumpError. A tcp_info too short for a counter gives None for it.
    """
    rows: list[Row] = []
    names: dict[tuple[int, bytes], str] = {}  # addresses as text, each converted once
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
        if kind in (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK):
            rows.append(_row(datagram, start, end, names))
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
    those of process ``own_pid`` (default: this one), as ``select`` rules. Synchronous: one
    netlink dump, and ``/proc/PID/fd`` when the engine has a client on this host. Never raises.
    """
    if not 0 < port < 65536:
        return Clients((), error=f"port {port} is not a TCP port")
    pid = os.getpid() if own_pid is None else own_pid
    try:
        rows = dump(port)
        engine_ends = any(r.local[1] == port for r in rows)
        local_clients = any(r.remote[1] == port for r in rows)
        own = socket_inodes(pid) if engine_ends and local_clients else frozenset()
    except DumpError as exc:
        return Clients((), error=str(exc))
    except TimeoutError:
        return Clients((), error=f"sock_diag did not answer within {TIMEOUT:g} s")
    except PermissionError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return Clients((), error=f"not permitted to read sockets{where}: run as root")
    except OSError as exc:
        return Clients((), error=f"no sock_diag netlink here: {exc.strerror or exc}")
    return Clients(select(rows, own, port, host))


def dump(port: int | None = None, *, by_family: bool = False) -> list[Row]:
    """The established TCP sockets of this network namespace whose local or remote port is
    ``port`` (all of them without it). Raises DumpError or OSError.

    One dump of both families (``request(None, ...)``), the cost of one walk of the kernel's
    table; a kernel that refuses it, or ``by_family``, gets one dump per family (two walks).
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(TIMEOUT)
        rows = None
        if not by_family:
            try:
                rows = _dump(nl, None, port)
            except DumpError as exc:
                if exc.code not in _UNSUPPORTED:
                    raise
        if rows is None:
            rows = _dump(nl, socket.AF_INET, port)
            try:
                rows += _dump(nl, socket.AF_INET6, port)
            except DumpError as exc:
                if exc.code not in _UNSUPPORTED:
                    raise  # a kernel without IPv6 has no IPv6 sockets; else it is an error
    if port is None:
        return rows
    return [r for r in rows if port in (r.local[1], r.remote[1])]


def _dump(nl: socket.socket, family: int | None, port: int | None) -> list[Row]:
    seq = family or 1  # one dump at a time, each its own sequence, on a socket of its own
    nl.send(request(family, seq, port))
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


def _row(data: bytes, start: int, end: int, names: dict[tuple[int, bytes], str]) -> Row:
    if end - start < DIAG_MSG_SIZE:
        raise DumpError(f"an inet_diag_msg of {end - start} bytes (needs {DIAG_MSG_SIZE})")
    family, state = data[start], data[start + 1]
    sport, dport, raw_src, raw_dst = DIAG_MSG_ID.unpack_from(data, start + 4)
    src = names.get((family, raw_src)) or names.setdefault(
        (family, raw_src), _address(family, raw_src))
    dst = names.get((family, raw_dst)) or names.setdefault(
        (family, raw_dst), _address(family, raw_dst))
    (inode,) = U32.unpack_from(data, start + DIAG_MSG_INODE)
    acked = received = None
    at = start + DIAG_MSG_SIZE
    while at + RTATTR.size <= end:
        size, kind = RTATTR.unpack_from(data, at)
        if size < RTATTR.size or at + size > end:
            raise DumpError(f"an attribute of {size} bytes in {end - at} left")
        if kind == INET_DIAG_INFO:
            info = at + RTATTR.size
            if size - RTATTR.size >= TCPI_BYTES_RECEIVED + U64.size:
                acked, received = COUNTERS.unpack_from(data, info + TCPI_BYTES_ACKED)
            elif size - RTATTR.size >= TCPI_BYTES_ACKED + U64.size:
                (acked,) = U64.unpack_from(data, info + TCPI_BYTES_ACKED)
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


def _int(data: bytes, start: int) -> int:
    value: int = struct.unpack_from("=i", data, start)[0]
    return value
