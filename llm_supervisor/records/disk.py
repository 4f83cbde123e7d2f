"""The daemon's disk work, off the event loop: one thread, in order.

Event appends (each fsynced; a rotation compresses a segment), ``state.json`` writes and
history reads run on one worker thread, so a slow or stalled disk never delays a health
check or a status answer, and appends, rotations and reads never interleave. Work is
queued in order: an event appended before another is written before it. ``state.json``
writes coalesce: a burst of changes is one write of the latest state.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from llm_supervisor.records.atomic import atomic_write

log = structlog.get_logger("llm-supervisor")

T = TypeVar("T")


class Disk:
    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-supervisor-disk")
        self._lock = threading.Lock()
        self._state: tuple[Path, str] | None = None  # the newest state.json not yet written
        self._last: Future[Any] | None = None
        self.state_error: str | None = None  # why the last state.json write failed

    def submit(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn``; a failure is logged (``what`` names it), never raised."""
        def work() -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                log.error(f"cannot {what}", error=str(exc))
        self._last = self.pool.submit(work)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` after everything queued before it; its result or exception."""
        future = self.pool.submit(lambda: fn(*args, **kwargs))
        self._last = future
        return await asyncio.wrap_future(future)

    def write_state(self, path: Path, text: str) -> None:
        """Write ``state.json`` (atomically) soon; a newer text replaces one not yet written."""
        with self._lock:
            pending = self._state is not None
            self._state = (path, text)
        if not pending:
            self.submit("write state", self._write_state)

    def _write_state(self) -> None:
        with self._lock:
            job, self._state = self._state, None
        if job is not None:
            path, text = job
            try:
                atomic_write(path, text, 0o640)
            except OSError as exc:
                error = f"cannot write {path}: {exc.strerror or exc}"
                if error != self.state_error:
                    log.error("cannot write state", path=str(path), error=error)
                self.state_error = error
            else:
                self.state_error = None

    async def drain(self) -> None:
        """Wait until everything queued so far is done."""
        await self.run(lambda: None)

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self.pool.shutdown(wait=True)
