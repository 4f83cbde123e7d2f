"""Who holds a TCP port: the process listening on an engine's ``listen`` address, and its unit.

Sockets and their processes come from psutil (``/proc/net/tcp*`` matched to ``/proc/*/fd``);
the unit from the process's cgroup (``/proc/PID/cgroup``), as systemd places every service in
a cgroup named after its unit.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import psutil

from llm_supervisor.config import split_listen

__all__ = ["Holder", "holder", "unit_of"]


@dataclass(frozen=True)
class Holder:
    pid: int | None      # None when the socket's owner is not visible (another user, not root)
    process: str
    unit: str | None     # the systemd unit the process runs in, if any

    def describe(self) -> str:
        """e.g. ``pid 812 (ollama) of ollama.service``."""
        if not self.pid:
            return "a process this user cannot see (run as root to name it)"
        who = f"pid {self.pid} ({self.process})"
        return f"{who} of {self.unit}" if self.unit else who

    def to_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "process": self.process, "unit": self.unit}


def unit_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The systemd unit (service or scope) whose cgroup holds ``pid``."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return None


def _covers(bound: str, wanted: str) -> bool:
    """A socket bound to ``bound`` takes connections meant for ``wanted``."""
    if bound == wanted:
        return True
    try:
        address = ipaddress.ip_address(bound.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_unspecified  # 0.0.0.0 or :: listen on every address


def holder(listen: str) -> Holder | None:
    """The process listening on ``listen`` (``HOST:PORT``), or None when the port is free."""
    host, port = split_listen(listen)
    try:
        wanted = str(ipaddress.ip_address(host))
    except ValueError:
        wanted = "127.0.0.1" if host == "localhost" else host
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if not _covers(conn.laddr.ip, wanted) and not _covers(wanted, conn.laddr.ip):
            continue
        if conn.pid is None:
            return Holder(None, "?", None)
        try:
            name = psutil.Process(conn.pid).name()
        except psutil.Error:
            name = "?"
        return Holder(conn.pid, name, unit_of(conn.pid))
    return None
