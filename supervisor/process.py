"""Running external commands with hard timeouts: the one process runner everything shares.

Probe tools (rocminfo, vulkaninfo, clinfo) can hang or crash, and systemctl can block on a
stuck job, so every command gets a timeout after which its whole process group is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

from supervisor.errors import CommandError


@dataclass(frozen=True)
class Completed:
    """What a finished (or timed-out) command left behind."""

    argv: tuple[str, ...]
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


async def run(argv: list[str] | tuple[str, ...], *, timeout: float,
              env: dict[str, str] | None = None, input: bytes | None = None) -> Completed:
    """Run ``argv``; never raise for a non-zero exit or a timeout, only when it cannot start.

    On timeout the process group is killed and ``timed_out`` is set, with what was
    printed so far.
    """
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # own process group, so a timeout kills its children too
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise CommandError(list(argv), f"cannot run: {exc.strerror or exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    if input is not None and proc.stdin is not None:
        proc.stdin.write(input)
        proc.stdin.close()
    # Read both pipes in the background, so that on a timeout what was printed so far is kept.
    reading = asyncio.gather(proc.stdout.read(), proc.stderr.read())
    try:
        out, err = await asyncio.wait_for(asyncio.shield(reading), timeout)
        await proc.wait()
    except BaseException as exc:
        _kill_group(proc.pid)
        try:
            out, err = await asyncio.wait_for(reading, 2)
        except (TimeoutError, asyncio.CancelledError):
            reading.cancel()
            out, err = b"", b""
        await proc.wait()
        if not isinstance(exc, TimeoutError):
            raise
        return Completed(tuple(argv), None, _text(out), _text(err),
                         time.monotonic() - started, timed_out=True)
    return Completed(tuple(argv), proc.returncode, _text(out), _text(err),
                     time.monotonic() - started)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
