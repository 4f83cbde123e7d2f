"""llm_supervisor.host.clients: an engine's clients from the kernel (sock_diag), less our own.

Real sockets on 127.0.0.1 and ::1, clients in child processes; the netlink parser fed bytes laid
out as the kernel lays them; the rule (``select``) and ``flowing`` over plain data.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llm_supervisor.host import clients
from llm_supervisor.host.clients import Clients, Connection, DumpError, Row, flowing, parse, select

REPO = Path(__file__).resolve().parents[2]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


V6 = pytest.param(socket.AF_INET6, "::1", marks=pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="no IPv6 loopback on this host"), id="ipv6")
FAMILIES = [pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"), V6]

# A client in a process of its own: connects, prints its local port, sends argv[4] bytes, then
# for each "read N" on stdin reads N bytes and prints "ok"; exits at the end of stdin.
CLIENT = r"""
import socket, sys
family, host, port, send = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(family)
s.connect((host, port))
print(s.getsockname()[1], flush=True)
s.sendall(b"q" * send)
for line in sys.stdin:
    want = int(line.split()[1])
    while want:
        want -= len(s.recv(want))
    print("ok", flush=True)
"""


class Child:
    """A client connected from another process."""

    def __init__(self, family: int, host: str, port: int, send: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(int(family)), host, str(port), str(send)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.peer = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def read(self, n: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"read {n}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.close()


def listener(family: int, host: str, *, dual: bool = False) -> socket.socket:
    s = socket.socket(family)
    if dual:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, 0))
    s.listen(64)
    return s


def until(take: Callable[[], Clients], done: Callable[[Clients], bool],
          timeout: float = 5.0) -> Clients:
    """Snapshots until ``done`` holds (the last one either way, for the assertion to show)."""
    deadline = time.monotonic() + timeout
    while True:
        got = take()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


# --- real sockets ---------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_our_own_connection_is_left_out_and_only_ours(family: int, host: str,
                                                      children: list[Child]) -> None:
    with listener(family, host) as server:
        port = server.getsockname()[1]
        ours = socket.create_connection((host, port))
        accepted, _ = server.accept()
        with ours, accepted:
            mine = clients.snapshot(port)
            assert mine == Clients((), None)
            # seen from another process, our connection is a client like any other
            other = Child(family, host, port)
            children.append(other)
            seen = clients.snapshot(port, own_pid=other.proc.pid)
            ours_peer = ours.getsockname()
            peer = f"[{host}]:{ours_peer[1]}" if ":" in host else f"{host}:{ours_peer[1]}"
            assert [c.peer for c in seen.connections] == [peer]
            # and the child's connection, not ours, counts from here
            assert [c.peer for c in clients.snapshot(port).connections] == [other.peer]


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_a_client_of_another_process_counts_and_its_answer_flows(
        family: int, host: str, children: list[Child]) -> None:
    with listener(family, host) as server:
        port = server.getsockname()[1]
        child = Child(family, host, port, send=300)  # its request: 300 bytes
        children.append(child)
        conn, _ = server.accept()
        with conn:
            assert conn.recv(300, socket.MSG_WAITALL) == b"q" * 300
            before = until(lambda: clients.snapshot(port),
                           lambda c: c.count == 1 and c.connections[0].bytes_received == 300)
            assert before.error is None
            assert [c.peer for c in before.connections] == [child.peer]
            (seen,) = before.connections
            assert seen.bytes_received == 300 and seen.bytes_sent == 0
            assert seen.inode == os.fstat(conn.fileno()).st_ino  # the engine's end
            conn.sendall(b"a" * 4096)  # the streamed answer
            child.read(4096)
            after = until(lambda: clients.snapshot(port),
                          lambda c: c.count == 1 and c.connections[0].bytes_sent == 4096)
            assert after.connections[0].bytes_sent == 4096
            assert flowing(before, after) == 4096
            assert flowing(after, after) == 0  # nothing more flowed
            child.close()
            gone = until(lambda: clients.snapshot(port), lambda c: c.count == 0)
            assert gone == Clients((), None)


@pytest.mark.parametrize(("family", "host"), FAMILIES)
def test_own_pid_leaves_out_that_process_s_connections(family: int, host: str,
                                                        children: list[Child]) -> None:
    with listener(family, host) as server:
        port = server.getsockname()[1]
        first, second = Child(family, host, port), Child(family, host, port)
        children += [first, second]
        accepted = [server.accept()[0], server.accept()[0]]
        try:
            everyone = clients.snapshot(port)
            assert sorted(c.peer for c in everyone.connections) == sorted(
                [first.peer, second.peer])
            assert [c.peer for c in clients.snapshot(port, own_pid=first.proc.pid)
                    .connections] == [second.peer]
            assert [c.peer for c in clients.snapshot(port, own_pid=second.proc.pid)
                    .connections] == [first.peer]
        finally:
            for s in accepted:
                s.close()


def test_v4_clients_of_a_dual_stack_engine_read_as_ipv4(children: list[Child]) -> None:
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 on this host")
    with listener(socket.AF_INET6, "::", dual=True) as server:
        port = server.getsockname()[1]
        ours = socket.create_connection(("127.0.0.1", port))  # AF_INET; the engine's end v4-mapped
        child = Child(socket.AF_INET, "127.0.0.1", port)
        children.append(child)
        accepted = [server.accept()[0], server.accept()[0]]
        try:
            assert [c.peer for c in clients.snapshot(port).connections] == [child.peer]
            seen = clients.snapshot(port, own_pid=child.proc.pid)
            assert [c.peer for c in seen.connections] == [f"127.0.0.1:{ours.getsockname()[1]}"]
            assert clients.snapshot(port, host="127.0.0.1").count == 1
            assert clients.snapshot(port, host="::1").count == 0
        finally:
            ours.close()
            for s in accepted:
                s.close()


def test_dump_gives_both_ends_on_the_port_and_nothing_else(children: list[Child]) -> None:
    with listener(socket.AF_INET, "127.0.0.1") as server, \
            listener(socket.AF_INET, "127.0.0.1") as elsewhere:
        port, other = server.getsockname()[1], elsewhere.getsockname()[1]
        child, stranger = Child(socket.AF_INET, "127.0.0.1", port), Child(
            socket.AF_INET, "127.0.0.1", other)
        children += [child, stranger]
        with server.accept()[0] as engine_end, elsewhere.accept()[0]:
            rows = clients.dump(port)
            assert sorted((r.local, r.remote) for r in rows) == sorted([
                (("127.0.0.1", port), ("127.0.0.1", child.port)),
                (("127.0.0.1", child.port), ("127.0.0.1", port))])
            assert os.fstat(engine_end.fileno()).st_ino in {r.inode for r in rows}
            assert set(clients.dump(port, by_family=True)) == set(rows)  # the kernel's newer way
            assert {(r.local[1], r.remote[1]) for r in clients.dump()} >= {
                (port, child.port), (other, stranger.port)}  # unfiltered: both


def test_a_port_nobody_listens_on_has_no_clients() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert clients.snapshot(port) == Clients((), None)
    assert clients.snapshot(port, host="127.0.0.1") == Clients((), None)


def test_errors_are_answers_not_exceptions() -> None:
    for port in (0, -1, 65536):
        got = clients.snapshot(port)
        assert got.connections == () and got.error == f"port {port} is not a TCP port"


def test_sockets_of_a_process_that_cannot_be_read_give_an_error(children: list[Child]) -> None:
    """Not root: another user's /proc/PID/fd is closed, and the answer says so. The module
    (standard library only) runs from a copy anyone can read, wherever the checkout is."""
    where = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        shutil.copy(REPO / "llm_supervisor/host/clients.py", where / "clients.py")
        where.chmod(0o755)
        (where / "clients.py").chmod(0o644)
        with listener(socket.AF_INET, "127.0.0.1") as server:
            port = server.getsockname()[1]
            child = Child(socket.AF_INET, "127.0.0.1", port)
            children.append(child)
            with server.accept()[0]:
                probe = (f"import sys; sys.path.insert(0, {str(where)!r}); import clients; "
                         f"print(clients.snapshot({port}, own_pid=1).error)")
                as_root = os.geteuid() == 0
                done = subprocess.run(
                    [sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                    cwd="/", timeout=30,
                    user=65534 if as_root else None, group=65534 if as_root else None)
    finally:
        shutil.rmtree(where)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "not permitted to read sockets (/proc/1/fd): run as root\n"


def test_socket_inodes_are_those_the_process_holds() -> None:
    with socket.socket() as a, socket.socket() as b:
        held = clients.socket_inodes(os.getpid())
        assert {os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino} <= held
    assert clients.socket_inodes(2**22 + 1) == frozenset()  # above pid_max's default: gone


# --- the parser, on bytes laid out as the kernel lays them ----------------------------------

NLMSG_ERROR, NLMSG_DONE, SOCK_DIAG_BY_FAMILY = 2, 3, 20
NLM_F_MULTI = 0x2


def message(kind: int, body: bytes, *, seq: int = 7, flags: int = NLM_F_MULTI) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 4242) + body
    return raw + bytes(-len(raw) % 4)


def diag_msg(family: int, src: str, sport: int, dst: str, dport: int, inode: int,
             info: bytes | None = None, state: int = 1) -> bytes:
    def addr(a: str) -> bytes:
        packed = socket.inet_pton(family, a)
        return packed + bytes(16 - len(packed))
    body = (struct.pack("=BBBB", family, state, 0, 0) + struct.pack(">HH", sport, dport)
            + addr(src) + addr(dst) + struct.pack("=I", 0) + struct.pack("=II", 0xFFFF, 0)
            + struct.pack("=IIIII", 0, 0, 0, 1000, inode))
    assert len(body) == 72  # sizeof(struct inet_diag_msg)
    if info is not None:
        attr = struct.pack("=HH", 4 + len(info), 2) + info  # INET_DIAG_INFO
        body += attr + bytes(-len(attr) % 4)
        body += struct.pack("=HH", 8, 4) + b"cubi"  # INET_DIAG_CONG, skipped
    return body


def tcp_info(size: int, acked: int, received: int) -> bytes:
    info = bytearray(size)
    info[0] = 1  # tcpi_state
    if size >= 128:
        struct.pack_into("=Q", info, 120, acked)
    if size >= 136:
        struct.pack_into("=Q", info, 128, received)
    return bytes(info)


def test_a_dump_in_two_datagrams_ends_at_done() -> None:
    first = message(SOCK_DIAG_BY_FAMILY, diag_msg(
        socket.AF_INET, "127.0.0.1", 11434, "127.0.0.1", 50000, 91, tcp_info(232, 12345, 678)))
    mapped = diag_msg(socket.AF_INET6, "::ffff:127.0.0.1", 11434, "::ffff:10.0.0.9", 50001, 92,
                      tcp_info(104, 1, 2))  # a kernel before 4.1: no byte counters
    second = (message(SOCK_DIAG_BY_FAMILY, mapped)
              + message(SOCK_DIAG_BY_FAMILY, diag_msg(socket.AF_INET6, "::1", 11434, "::1", 9, 93),
                        seq=6)  # another request's: skipped
              + message(NLMSG_DONE, struct.pack("=i", 0)))
    rows, done = parse(first, 7)
    assert not done
    assert rows == [Row(("127.0.0.1", 11434), ("127.0.0.1", 50000), 91, 12345, 678)]
    rows, done = parse(second, 7)
    assert done
    assert rows == [Row(("127.0.0.1", 11434), ("10.0.0.9", 50001), 92, None, None)]
    # tcp_info of Linux 4.1-4.x: bytes_acked in, bytes_received not yet whole
    (row,), _ = parse(message(SOCK_DIAG_BY_FAMILY, diag_msg(
        socket.AF_INET6, "::1", 1, "fe80::1", 2, 3, tcp_info(128, 5, 6))), 7)
    assert (row.remote, row.bytes_acked, row.bytes_received) == (("fe80::1", 2), 5, None)


def test_an_error_answer_raises_dump_error_with_the_reason() -> None:
    refused = message(NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + bytes(16), flags=0)
    with pytest.raises(DumpError, match="EPERM: Operation not permitted") as caught:
        parse(refused, 7)
    assert caught.value.code == errno.EPERM
    assert parse(message(NLMSG_ERROR, struct.pack("=i", 0) + bytes(16), flags=0), 7) == ([], True)
    with pytest.raises(DumpError, match="EINTR"):
        parse(message(NLMSG_DONE, struct.pack("=i", -errno.EINTR)), 7)
    with pytest.raises(DumpError, match="overran"):
        parse(message(4, b""), 7)


@pytest.mark.parametrize("bad", [
    pytest.param(lambda good: good[:-5], id="cut-message"),
    pytest.param(lambda good: good + b"\x10\0\0", id="trailing-bytes"),
    pytest.param(lambda good: struct.pack("=I", 8) + good[4:], id="length-below-header"),
    pytest.param(lambda good: message(SOCK_DIAG_BY_FAMILY, bytes(40)), id="short-diag-msg"),
    pytest.param(lambda good: message(SOCK_DIAG_BY_FAMILY, good[16:88] + struct.pack(
        "=HH", 400, 2) + bytes(8)), id="attribute-past-the-end"),
    pytest.param(lambda good: message(SOCK_DIAG_BY_FAMILY, b"\x07" + good[17:88]),
                 id="unknown-family"),
])
def test_bytes_that_do_not_parse_raise_dump_error(bad: Callable[[bytes], bytes]) -> None:
    good = message(SOCK_DIAG_BY_FAMILY, diag_msg(
        socket.AF_INET, "127.0.0.1", 1, "127.0.0.1", 2, 3, tcp_info(232, 1, 1)))
    assert len(parse(good, 7)[0]) == 1
    with pytest.raises(DumpError):
        parse(bad(good), 7)


def test_the_request_is_laid_out_as_inet_diag_req_v2_and_its_bytecode() -> None:
    raw = clients.request(socket.AF_INET6, 9, 11434)
    program = clients.bytecode(11434)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", raw)
    assert (length, kind, flags, seq) == (len(raw), 20, 0x301, 9)
    assert length == 16 + 56 + 4 + len(program)
    family, protocol, ext, _, states = struct.unpack_from("=BBBBI", raw, 16)
    assert (family, protocol, ext, states) == (socket.AF_INET6, 6, 1 << 1, 1 << 1)
    assert raw[24:72] == bytes(48)  # the socket id: any
    assert struct.unpack_from("=HH", raw, 72) == (4 + len(program), 1)  # INET_DIAG_REQ_BYTECODE
    assert raw[76:] == program
    assert len(clients.request(socket.AF_INET, 1)) == 16 + 56  # no port: no filter
    first = clients.request(None, 3, 80)  # TCPDIAG_GETSOCK, struct inet_diag_req: both families
    assert struct.unpack_from("=IHHI", first) == (len(first), 18, 0x301, 3)
    assert struct.unpack_from("=BBBB", first, 16)[3] == 1 << 1 and first[20:68] == bytes(48)
    assert struct.unpack_from("=IIHH", first, 68) == (1 << 1, 0, 4 + len(program), 1)
    assert len(first) == 16 + 60 + 4 + len(program) and first[80:] == clients.bytecode(80)


def run_bytecode(program: bytes, sport: int, dport: int) -> bool:
    """The kernel's inet_diag_bc_audit (jumps) and inet_diag_bc_run, for port tests."""
    def op(at: int) -> tuple[int, int, int, int]:
        code, yes, no = struct.unpack_from("=BBH", program, at)
        return code, yes, no, (struct.unpack_from("=BBH", program, at + 4)[2]
                               if code in (2, 3, 4, 5) else 0)
    starts, at = [], 0
    while at < len(program):  # the audit: ops are what the "yes" chain meets ...
        starts.append(at)
        at += op(at)[1]
    assert at == len(program)
    for at in starts:  # ... and every jump lands on one of them, at the end, or 4 past it
        code, yes, no, _ = op(at)
        assert yes >= (8 if code in (2, 3, 4, 5) else 4) and yes % 4 == 0
        assert at + no in (*starts, len(program), len(program) + 4)
    at = 0
    while at < len(program):
        code, yes, no, arg = op(at)
        ok = {1: False, 2: sport >= arg, 3: sport <= arg, 4: dport >= arg, 5: dport <= arg}[code]
        at += yes if ok else no
    return at == len(program)


def test_the_bytecode_keeps_the_port_at_either_end() -> None:
    program = clients.bytecode(11434)
    assert run_bytecode(program, 11434, 50000)        # the engine's end
    assert run_bytecode(program, 50000, 11434)        # a client end on this host
    assert not run_bytecode(program, 11433, 50000)
    assert not run_bytecode(program, 11435, 11433)
    assert not run_bytecode(program, 22, 50000)
    assert not run_bytecode(clients.bytecode(22), 11434, 50000)


# --- the rule and the flow, over plain data -------------------------------------------------


def row(local: tuple[str, int], remote: tuple[str, int], inode: int, sent: int | None = 0,
        state: int = 1) -> Row:
    return Row(local, remote, inode, sent, 0, state)


def test_select_leaves_out_own_connections_by_both_endpoints() -> None:
    engine_ends = [row(("127.0.0.1", 80), ("127.0.0.1", 5000), 1),
                   row(("127.0.0.1", 80), ("127.0.0.1", 5001), 2),
                   row(("127.0.0.2", 80), ("127.0.0.1", 5000), 3),  # same client end, other address
                   row(("::1", 80), ("::1", 5000), 4),
                   row(("127.0.0.1", 8080), ("127.0.0.1", 5002), 5),  # another port
                   row(("127.0.0.1", 80), ("127.0.0.1", 5003), 6, state=8)]  # closing
    client_ends = [row(("127.0.0.1", 5000), ("127.0.0.1", 80), 10),
                   row(("127.0.0.1", 5001), ("127.0.0.1", 80), 11)]  # not ours: 11 is not held
    kept = select(engine_ends + client_ends, {10, 99, 2}, 80)  # 2: an engine end, not a client
    assert [(c.peer, c.inode) for c in kept] == [
        ("127.0.0.1:5000", 3), ("127.0.0.1:5001", 2), ("[::1]:5000", 4)]
    assert [c.inode for c in select(engine_ends + client_ends, set(), 80)] == [1, 3, 2, 4]


@pytest.mark.parametrize(("host", "inodes"), [
    (None, [1, 2, 3]), ("0.0.0.0", [1, 2, 3]), ("::", [1, 2, 3]), ("ollama.lan", [1, 2, 3]),
    ("localhost", [1, 3]), ("127.0.0.1", [1]), ("::ffff:127.0.0.1", [1]), ("[::1]", [3]),
    ("10.0.0.5", [2]), ("10.9.9.9", []),
])
def test_select_keeps_the_connections_to_host(host: str | None, inodes: list[int]) -> None:
    servers = [row(("127.0.0.1", 80), ("127.0.0.1", 5000), 1),
               row(("10.0.0.5", 80), ("10.0.0.7", 5000), 2),
               row(("::1", 80), ("::1", 5001), 3)]
    assert sorted(c.inode for c in select(servers, set(), 80, host)) == inodes


def test_flowing_counts_what_the_engine_sent_between_two_snapshots() -> None:
    before = Clients((Connection("127.0.0.1:1", 100, 5, 11), Connection("127.0.0.1:2", 50, 5, 12),
                      Connection("127.0.0.1:3", 70, 5, 13)))
    after = Clients((Connection("127.0.0.1:1", 160, 5, 11),   # grew by 60
                     Connection("127.0.0.1:2", 30, 5, 99),    # same peer, a new socket: 30
                     Connection("127.0.0.1:4", 25, 5, 14),    # new: 25
                     Connection("127.0.0.1:5", None, 5, 15)))  # no counter: 0 ("3" is gone)
    assert flowing(before, after) == 60 + 30 + 25
    assert flowing(after, after) == 0
    assert flowing(before, Clients((), "no netlink")) == 0
    assert after.count == 4 and Clients().count == 0
    assert after.to_dict()["count"] == 4
