"""The events of the check (or action) under way: kept, then handed on together, in order —
one state save, one STATUS= and one metrics update per check, however many events it made."""

from __future__ import annotations

from typing import Any

Event = tuple[str, dict[str, Any]]


class Outbox:
    """``put`` an event; outside a batch (``open``/``close``, nested) it is due at once,
    inside one when the outermost batch closes. The engine ``take``s what is due and commits
    it with its view: the outbox keeps, it never calls anyone."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.depth = 0

    def put(self, type: str, fields: dict[str, Any]) -> bool:
        """Keep an event; True when it is due now (no batch open)."""
        self.events.append((type, fields))
        return not self.depth

    def open(self) -> None:
        self.depth += 1

    def close(self) -> bool:
        """End a batch; True when it was the outermost (what it kept is due now)."""
        self.depth -= 1
        return not self.depth

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events
