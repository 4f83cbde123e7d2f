"""The event history: one JSON line per event in ``events/current.jsonl``, fsynced per event.

An event is ``{"ts", "engine", "type", "from", "to", "reason", "evidence"}``. Readers get
them back in order; live followers get each new event through a queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

CURRENT = "current.jsonl"


def utc(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


class EventLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.followers: set[asyncio.Queue[dict[str, Any]]] = set()

    @property
    def current(self) -> Path:
        return self.directory / CURRENT

    def append(self, type: str, *, engine: str | None = None, from_: str | None = None,
               to: str | None = None, reason: str = "", evidence: Any = None,
               **extra: Any) -> dict[str, Any]:
        event = {"ts": utc(), "engine": engine, "type": type, "from": from_, "to": to,
                 "reason": reason, "evidence": evidence, **extra}
        line = json.dumps(event, default=str, ensure_ascii=False) + "\n"
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.current.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        for queue in list(self.followers):
            queue.put_nowait(event)
        return event

    def read(self, *, since: str | None = None, limit: int | None = None,
             engine: str | None = None) -> list[dict[str, Any]]:
        events = []
        try:
            with self.current.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # a torn last line after a crash
                    if since and event.get("ts", "") < since:
                        continue
                    if engine and event.get("engine") != engine:
                        continue
                    events.append(event)
        except FileNotFoundError:
            pass
        return events[-limit:] if limit else events
