"""Who holds a TCP listen address: the process and the systemd unit it runs in.

``holder("127.0.0.1:11434")`` answers with the listening process (psutil's view of the
sockets) and its unit (from ``/proc/PID/cgroup``), or None when nothing listens there. A
listener on the wildcard address (0.0.0.0, ::) holds every address of its port.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["Holder", "holder", "unit_of"]

WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Holder:
    pid: int  # 0 when the kernel would not say (another user's socket, seen without root)
    process: str
    unit: str | None

    def describe(self) -> str:
        """e.g. ``pid 812 (ollama) of ollama.service``."""
        if not self.pid:
            return "a process this user cannot see (run as root to name it)"
        text = f"pid {self.pid} ({self.process})"
        return text + (f" of {self.unit}" if self.unit else "")


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _covers(bound: str, wanted: str) -> bool:
    return bound == wanted or bound in WILDCARDS or wanted in WILDCARDS or (
        {bound, wanted} <= {"127.0.0.1", "localhost"})


def unit_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The systemd unit (service or scope) a process runs in, from its cgroup path."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers not in ("", "name=systemd"):
            continue
        units = [part for part in path.split("/") if part.endswith((".service", ".scope"))]
        if units:
            return units[-1]
    return None


def holder(listen: str) -> Holder | None:
    """The process listening on ``listen`` ("host:port"), or None when the address is free."""
    host, port = _split(listen)
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        connections = []
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if not _covers(conn.laddr.ip, host):
            continue
        if conn.pid is None:
            return Holder(0, "?", None)
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "?"
        return Holder(conn.pid, name, unit_of(conn.pid))
    return None
