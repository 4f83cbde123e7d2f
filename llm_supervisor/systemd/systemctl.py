"""The daemon's systemd adapter: ``Systemd`` runs systemctl and journalctl with timeouts;
``llm_supervisor.systemd.dbus.BusSystemd`` extends it with the D-Bus API (systemctl remains its
fallback). The engines reach it only through the daemon's actuator; tests of the decision
logic give the engine a fake actuator, system tests the real adapter in a booted container.
(``adopt``, a CLI command, runs systemctl itself for its one-off steps.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from llm_supervisor.errors import CommandError, SystemdError
from llm_supervisor.host.process import LINE_CAP, bounded_lines, kill_session, run

UNIT_PROPERTIES = ("ActiveState", "SubState", "NRestarts", "ExecMainStatus", "ExecMainCode",
                   "NeedDaemonReload",
                   "MainPID", "Result", "LoadState", "ActiveEnterTimestampMonotonic",
                   "ExecMainStartTimestampMonotonic", "Job")


@dataclass(frozen=True)
class UnitStatus:
    """What systemd says of a unit (``systemctl show``)."""

    name: str
    active_state: str = "unknown"    # active, activating, deactivating, inactive, failed
    sub_state: str = "unknown"       # running, auto-restart, dead, ...
    n_restarts: int = 0
    exec_main_status: int = 0
    main_pid: int = 0
    result: str = ""
    load_state: str = ""
    need_daemon_reload: bool = False  # unit files changed on disk since systemd read them
    main_started: float = 0.0  # its main process started (monotonic s; 0: unknown)
    job: int = 0  # the id of a job queued for it, not yet done (a start waiting its turn
    #               shows inactive/dead, Result=success, like a stop); 0: none
    raw: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_properties(cls, name: str, props: dict[str, str]) -> UnitStatus:
        def number(key: str) -> int:
            try:
                return int(props.get(key, "0") or 0)
            except ValueError:
                return 0
        return cls(name=name, active_state=props.get("ActiveState", "unknown"),
                   sub_state=props.get("SubState", "unknown"),
                   n_restarts=number("NRestarts"), exec_main_status=number("ExecMainStatus"),
                   main_pid=number("MainPID"), result=props.get("Result", ""),
                   load_state=props.get("LoadState", ""),
                   need_daemon_reload=props.get("NeedDaemonReload") == "yes",
                   main_started=number("ExecMainStartTimestampMonotonic") / 1e6,
                   job=number("Job"), raw=dict(props))

    @property
    def running(self) -> bool:
        return self.active_state == "active" and self.sub_state == "running"


class Systemd:
    """systemctl/journalctl with timeouts; failures raise SystemdError with systemd's words."""

    def __init__(self, *, systemctl: str = "systemctl", journalctl: str = "journalctl",
                 timeout: float = 60.0) -> None:
        self.systemctl = systemctl
        self.journalctl = journalctl
        self.timeout = timeout
        self.on_change: Callable[[str], None] | None = None  # pushed unit changes (dbus.py)

    async def connect(self) -> bool:
        """Nothing to connect: every call runs systemctl."""
        return True

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        """How systemd is reached, for status."""
        return "systemctl"

    async def _systemctl(self, *args: str, timeout: float | None = None) -> str:
        argv = [self.systemctl, *args]
        try:
            done = await run(argv, timeout=timeout or self.timeout)
        except CommandError as exc:
            raise SystemdError(argv, str(exc)) from exc
        if done.timed_out:
            raise SystemdError(argv, f"timed out after {timeout or self.timeout:g}s")
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            raise SystemdError(argv, message, returncode=done.returncode, output=done.stdout)
        return done.stdout

    async def daemon_reload(self) -> None:
        await self._systemctl("daemon-reload")

    async def start(self, unit: str) -> None:
        # --no-block: an engine that takes minutes to load must not stall the supervisor;
        # health checks watch it come up.
        await self._systemctl("start", "--no-block", unit)

    async def stop(self, unit: str) -> None:
        await self._systemctl("stop", unit)

    async def restart(self, unit: str) -> None:
        await self._systemctl("restart", "--no-block", unit)

    async def reset_failed(self, unit: str) -> None:
        await self._systemctl("reset-failed", unit)

    async def show(self, unit: str, properties: Sequence[str] = UNIT_PROPERTIES
                   ) -> dict[str, str]:
        out = await self._systemctl("show", unit, "-p", ",".join(properties))
        return parse_show(out)

    async def status(self, unit: str, *, fresh: bool = False) -> UnitStatus:
        """The unit's state (always read now: ``fresh`` is for adapters that cache)."""
        return UnitStatus.from_properties(unit, await self.show(unit))

    async def environment(self, unit: str) -> dict[str, str]:
        """The unit's effective ``Environment=`` as systemd parsed it."""
        out = await self._systemctl("show", unit, "-p", "Environment")
        return parse_environment(parse_show(out).get("Environment", ""))

    async def version(self) -> str:
        return await self._systemctl("--version", timeout=10)

    async def journal(self, *matches: str, lines: int = 200, timeout: float = 15.0) -> str:
        argv = [self.journalctl, "--no-pager", "-o", "short-iso", "-n", str(lines), *matches]
        try:
            done = await run(argv, timeout=timeout)
        except CommandError as exc:
            raise SystemdError(argv, str(exc)) from exc
        if done.timed_out:
            raise SystemdError(argv, f"timed out after {timeout:g}s")
        return done.stdout

    async def follow(self, *matches: str, cursor: str | None = None,
                     since: float | None = None,
                     fields: Sequence[str] = ()) -> AsyncIterator[dict[str, str]]:
        """Follow the journal as JSON entries, resuming after ``cursor``, else from ``since``
        (seconds since the epoch), else from now (never from the start); with ``fields``,
        only those (and journalctl's own ``__CURSOR`` and timestamps).

        Each entry carries ``__CURSOR``, so the caller can persist where it stopped. An entry
        longer than ``LINE_CAP`` (a giant log line) is skipped, never held in memory.
        """
        argv = [self.journalctl, "-f", "-o", "json", "--no-pager"]
        if fields:
            argv.append(f"--output-fields={','.join(fields)}")
        if cursor:
            argv.append(f"--after-cursor={cursor}")
        elif since is not None:
            argv += [f"--since=@{int(since)}", "--lines=all"]
        else:
            argv += ["-n", "0"]
        argv += list(matches)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True, limit=LINE_CAP)
        assert proc.stdout is not None
        try:
            async for line in bounded_lines(proc.stdout, LINE_CAP):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry
        finally:
            if proc.returncode is None:
                kill_session(proc.pid)
                await proc.wait()


def parse_show(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def parse_environment(value: str) -> dict[str, str]:
    """``systemctl show -p Environment`` prints ``A=1 "B=two words" "C=\\$x"``: undo it.

    systemd quotes a word holding special characters and backslash-escapes ``"``, ``\\``,
    `` ` `` and ``$`` inside (shell_maybe_quote); a backslash takes the next character as is.
    """
    words: list[str] = []
    word: list[str] | None = None
    quoted = False
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            word = (word or []) + [next(chars, "")]
        elif ch == '"':
            quoted = not quoted
            word = word or []
        elif ch == " " and not quoted:
            if word is not None:
                words.append("".join(word))
            word = None
        else:
            word = (word or []) + [ch]
    if word is not None:
        words.append("".join(word))
    return dict(w.partition("=")[::2] for w in words)


def journal_message(entry: Mapping[str, object]) -> str:
    """MESSAGE of a journal JSON entry; journald sends non-UTF-8 text as a list of bytes."""
    message = entry.get("MESSAGE", "")
    if isinstance(message, list):
        return bytes(int(b) for b in message).decode("utf-8", errors="replace")
    return str(message)
