"""The events of the check (or action) under way: kept, then handed on together, in order —
one state save, one STATUS= and one metrics update per check, however many events it made."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

Event = tuple[str, dict[str, Any]]


class Outbox:
    """``put`` an event; outside a ``batch`` it goes at once, inside one when the outermost
    batch ends. ``commit`` receives each batch's events, in order (the actuator records them
    and persists the engine's memory)."""

    def __init__(self, commit: Callable[[list[Event]], None]) -> None:
        self.commit = commit
        self.events: list[Event] = []
        self.depth = 0

    def put(self, type: str, fields: dict[str, Any]) -> None:
        self.events.append((type, fields))
        if not self.depth:
            self.flush()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth:
                self.flush()

    def flush(self) -> None:
        """Hand on what is kept now (an operator's intent is recorded before its asker
        hears it is done, even inside a check)."""
        if self.events:
            events, self.events = self.events, []
            self.commit(events)
