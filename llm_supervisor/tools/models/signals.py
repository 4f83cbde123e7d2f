"""Ctrl-C, SIGTERM and SIGHUP during ``models export|import``: raised where the command is,
held while a rollback or a cleanup runs."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Interrupted(Exception):
    """A signal asked the command to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """Ctrl-C, SIGTERM and SIGHUP as ``Interrupted`` where the command is — except while a
    rollback or a cleanup runs (``held``): that finishes first, then the signal is raised,
    or dropped when the command is failing already. A flag, not a signal mask: Python runs
    its handlers on the main thread whichever thread the kernel picked (zstd's workers)."""

    CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.holding = 0
        self.pending: int | None = None

    def handler(self, signum: int, _frame: object) -> None:
        if self.holding:
            self.pending = self.pending or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def caught(self) -> Iterator[None]:
        """The handlers installed for the command's time (the CLI's main thread)."""
        previous = {sig: signal.signal(sig, self.handler) for sig in self.CAUGHT}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def held(self, drop: bool = True) -> Iterator[None]:
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
            if not self.holding and self.pending is not None:
                signum, self.pending = self.pending, None
                if not drop:
                    raise Interrupted(signum)
