"""Running external commands with hard timeouts: the one process runner everything shares.

Probe tools (rocminfo, vulkaninfo, clinfo) can hang or crash, and systemctl can block on a
stuck job, so every command gets a timeout after which its whole process group is killed.

Bounded. Each command runs in a session of its own; on a timeout (or cancellation) every
process of that session is killed, including children that moved to a process group of their
own, and the command is reaped, so nothing is left behind. What a command prints is kept up to
``OUTPUT_CAP`` bytes per stream (the first and the last half, with a note of how much was cut
between), so a tool that spews output costs the daemon no more memory than that. Reading
yields to the event loop after every chunk, so a spewing tool cannot starve it either.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

from llm_supervisor.errors import CommandError

OUTPUT_CAP = 1 << 20   # bytes kept per stream of a command
LINE_CAP = 1 << 20     # bytes of one line read by bounded_lines
CHUNK = 1 << 16


@dataclass(frozen=True)
class Completed:
    """What a finished (or timed-out) command left behind."""

    argv: tuple[str, ...]
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    cut: int = 0  # bytes of output left out (between the head and the tail kept)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class Capped:
    """The first and last ``cap // 2`` bytes of a stream, and how many were cut between."""

    def __init__(self, cap: int = OUTPUT_CAP) -> None:
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.cut = 0

    def add(self, data: bytes) -> None:
        if len(self.head) < self.half:
            take = self.half - len(self.head)
            self.head += data[:take]
            data = data[take:]
        if data:
            self.tail += data
            if len(self.tail) > self.half:
                excess = len(self.tail) - self.half
                del self.tail[:excess]
                self.cut += excess

    def text(self) -> str:
        middle = f"\n[... {self.cut} bytes cut ...]\n".encode() if self.cut else b""
        return _text(bytes(self.head) + middle + bytes(self.tail))


async def _drain(stream: asyncio.StreamReader, into: Capped) -> None:
    while chunk := await stream.read(CHUNK):
        into.add(chunk)
        await asyncio.sleep(0)  # a spewing tool must not starve the event loop


async def run(argv: list[str] | tuple[str, ...], *, timeout: float,
              env: dict[str, str] | None = None, input: bytes | None = None,
              cap: int = OUTPUT_CAP) -> Completed:
    """Run ``argv``; never raise for a non-zero exit or a timeout, only when it cannot start.

    On timeout the command's whole session is killed and ``timed_out`` is set, with what was
    printed so far (each stream capped at ``cap`` bytes, see ``Capped``).
    """
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # own session and group, so a timeout kills its children too
            limit=CHUNK,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise CommandError(list(argv), f"cannot run: {exc.strerror or exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    if input is not None and proc.stdin is not None:
        proc.stdin.write(input)
        proc.stdin.close()
    out, err = Capped(cap), Capped(cap)
    # Read both pipes in the background, so that on a timeout what was printed so far is kept.
    reading = asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err))
    try:
        await asyncio.wait_for(asyncio.shield(reading), timeout)
        await asyncio.wait_for(proc.wait(), max(timeout - (time.monotonic() - started), 0.1))
    except BaseException as exc:
        kill_session(proc.pid)
        try:
            await asyncio.wait_for(reading, 2)
        except (TimeoutError, asyncio.CancelledError):
            reading.cancel()
        except Exception:
            pass
        await proc.wait()
        if not isinstance(exc, TimeoutError):
            raise
        return Completed(tuple(argv), None, out.text(), err.text(),
                         time.monotonic() - started, timed_out=True, cut=out.cut + err.cut)
    return Completed(tuple(argv), proc.returncode, out.text(), err.text(),
                     time.monotonic() - started, cut=out.cut + err.cut)


def kill_session(sid: int) -> None:
    """SIGKILL the process group ``sid`` and every process of the session ``sid`` (children
    that moved to a group of their own stay in the session)."""
    _kill_group(sid)
    for pid in _session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _session_members(sid: int) -> list[int]:
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 3 and fields[3] == str(sid).encode():  # state ppid pgrp session
            members.append(int(entry))
    return members


async def bounded_lines(stream: asyncio.StreamReader, limit: int = LINE_CAP
                        ) -> AsyncIterator[bytes]:
    """Lines of ``stream`` until EOF; a line longer than ``limit`` is skipped whole, never
    held in memory (the reader's own limit must be at most ``limit``)."""
    skipping = False
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            await stream.readexactly(exc.consumed)  # drop what is buffered of the long line
            skipping = True
            continue
        except asyncio.IncompleteReadError as exc:
            if exc.partial and not skipping and len(exc.partial) <= limit:
                yield exc.partial
            return
        if skipping:
            skipping = False  # the end of the long line
            continue
        if len(line) <= limit:
            yield line


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _family(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (psutil's), empty when it is gone or unreadable."""
    import psutil

    if pid <= 0:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except (psutil.Error, OSError):
        return []


def tree_pids(pid: int) -> frozenset[int]:
    """A process and all its descendants (an engine and its runners); empty when it is gone
    or unreadable."""
    return frozenset(member.pid for member in _family(pid))


def tree_rss(pid: int) -> int | None:
    """Resident memory of a process and all its descendants (an engine and its runners), in
    bytes; None when the process is gone or unreadable. A model being loaded grows it (its
    weights are read through the page cache into the process: mmap or copies)."""
    import psutil

    members = _family(pid)
    if not members:
        return None
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.Error, OSError):
            continue
    return total
