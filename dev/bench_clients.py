"""Benchmark: ``llm_supervisor.host.clients.snapshot`` against ``ss -ti``, the named reference.

An "engine" (a process that listens on a loopback port and accepts) and a "clients" process that
opens N established connections to it (0, 10, 100, 1000), and one connection of this process's
own, which ``snapshot`` must leave out; optionally as many connections again to another port
on the host, which neither must show. Then, per call, the median and p95 of the wall time and
of the CPU time (user + system, this process's for ``snapshot``, the child's for ``ss``) of:

- ``snapshot(port)`` -- one sock_diag dump of both families (TCPDIAG_GETSOCK), filtered by
  port in the kernel, and /proc/self/fd;
- ``by family`` -- ``clients.dump(port, by_family=True)``: SOCK_DIAG_BY_FAMILY, one dump per
  family, what a kernel that refused the first gets;
- ``full dump`` -- what filtering in userspace would cost instead: ``clients.dump()``, every
  established TCP socket of the host, both families, parsed;
- ``ss -tinH state established '( sport = :PORT )'`` (iproute2), run as a command.

    "$(dev/venv)/bin/python" dev/bench_clients.py [CALLS] [--elsewhere]
"""

from __future__ import annotations

import functools
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from llm_supervisor.host import clients  # noqa: E402

SIZES = (0, 10, 100, 1000)
CALLS = int(next((a for a in sys.argv[1:] if a.isdigit()), "300"))
ELSEWHERE = "--elsewhere" in sys.argv
SS_EVERY = 5  # ss runs every 5th round: a command costs far more to start than to run

# argv: port count; opens `count` connections, prints "ready", holds them until stdin ends
HOLDER = r"""
import resource, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
print("ready", flush=True)
sys.stdin.read()
"""
# argv: none; listens, prints its port, accepts forever (the engine's end of each connection)
ENGINE = r"""
import resource, socket, sys, threading
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
server = socket.create_server(("127.0.0.1", 0), backlog=4096)
print(server.getsockname()[1], flush=True)
accepted = []
def accept():
    while True:
        accepted.append(server.accept()[0])
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
"""


def spawn(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    proc.wait(30)
    proc.stdout.close()


def once(call: Callable[[], object], children: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one call (CPU of the reaped children when ``children``)."""
    cpu = _children_cpu() if children else time.process_time()
    started = time.perf_counter()
    call()
    wall = time.perf_counter() - started
    return wall, (_children_cpu() if children else time.process_time()) - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def ss(port: int) -> str:
    return subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                          capture_output=True, text=True, check=True).stdout


def full_dump() -> int:
    return len(clients.dump())


def main() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for size in SIZES:
        engine = spawn(ENGINE)
        assert engine.stdout is not None
        port = int(engine.stdout.readline())
        holder = spawn(HOLDER, port, size)
        ours = socket.create_connection(("127.0.0.1", port))
        others: list[subprocess.Popen[str]] = []
        if ELSEWHERE:
            other_engine = spawn(ENGINE)
            assert other_engine.stdout is not None
            others = [other_engine, spawn(HOLDER, int(other_engine.stdout.readline()), size)]
        for proc in (holder, *others[1:]):
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 10
        while (seen := clients.snapshot(port)).count < size and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [line for line in ss(port).splitlines() if line and not line[0].isspace()]
        assert seen.error is None and seen.count == size, (seen.count, seen.error)
        assert len(lines) == size + 1, len(lines)  # ss shows ours too
        total = full_dump()
        ways = (("snapshot()", functools.partial(clients.snapshot, port), 1, False),
                ("by family", functools.partial(clients.dump, port, by_family=True), 1, False),
                ("full dump", full_dump, 1, False),
                ("ss -ti", functools.partial(ss, port), SS_EVERY, True))
        took: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in ways}
        for i in range(CALLS):  # interleaved, so that the host's load weighs on each alike
            for name, call, every, kids in ways:
                if i % every == 0:
                    took[name].append(once(call, kids))
        for name, *_ in ways:
            walls, cpus = [w for w, _ in took[name]], [c for _, c in took[name]]
            rows.append((size, name, total, statistics.median(walls), p95(walls),
                         statistics.median(cpus), p95(cpus), len(walls)))
        ours.close()
        for proc in (holder, engine, *others):
            end(proc)
    print(f"{'conns':>5}  {'what':<11} {'host socks':>10}  {'wall med':>9} {'wall p95':>9}  "
          f"{'cpu med':>8} {'cpu p95':>8}  calls")
    for size, name, total, wmed, wp95, cmed, cp95, n in rows:
        print(f"{size:>5}  {name:<11} {total:>10}  {wmed * 1e3:>7.3f}ms {wp95 * 1e3:>7.3f}ms  "
              f"{cmed * 1e3:>6.2f}ms {cp95 * 1e3:>6.2f}ms  {n}")
    print(f"(CPU: user + system, CLOCK_PROCESS_CPUTIME_ID for this process, getrusage of the "
          f"reaped child for ss; kernel {os.uname().release}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
