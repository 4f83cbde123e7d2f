"""What survives a daemon restart: each engine's tier, pin, promotion backoff and history.

Kept in ``state.json`` under the state directory, written atomically on every change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from supervisor.atomic import atomic_write

VERSION = 1
HISTORY = 50  # transitions kept per engine in state.json (the event log keeps everything)


@dataclass
class EngineMemory:
    tier: str | None = None
    pinned: str | None = None             # the tier an operator pinned, or None
    reboot_required: bool = False
    reboot_evidence: str = ""
    promote_wait: float | None = None     # current wait before the next promotion try (s)
    next_promotion_at: float | None = None  # wall clock (time.time())
    reboot_boot_id: str | None = None     # the boot the failed reset was seen in
    state: str = "stopped"
    since: float | None = None
    reason: str = ""
    cause: str | None = None              # supervisor.causes.Cause of the current state
    fix: str = ""                         # one line for the operator, when blocked
    demoted_from: str | None = None       # the best tier it fell from, and when (wall clock)
    demoted_at: float | None = None
    promoted_from: str | None = None      # a promotion on probation: the tier to go back to
    probation_until: float | None = None  # wall clock
    retry_at: float | None = None         # failed or blocked: the next try (wall clock)
    retry_attempt: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # tier -> why, for this engine
    backend: str | None = None            # what the engine reports it computes on
    journal_cursor: str | None = None     # where the engine's journal was last read
    history: list[dict[str, Any]] = field(default_factory=list)

    def remember(self, record: dict[str, Any]) -> None:
        self.history = [*self.history, record][-HISTORY:]


@dataclass
class State:
    engines: dict[str, EngineMemory] = field(default_factory=dict)
    kernel_cursor: str | None = None   # before one reader: where the kernel's journal was read
    journal_cursor: str | None = None  # where the one journal reader (journal.py) last read

    def engine(self, name: str) -> EngineMemory:
        return self.engines.setdefault(name, EngineMemory())

    def tier_of(self, name: str) -> str | None:
        memory = self.engines.get(name)
        return memory.tier if memory else None

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "kernel_cursor": self.kernel_cursor,
                "journal_cursor": self.journal_cursor,
                "engines": {name: asdict(m) for name, m in sorted(self.engines.items())}}


class StateError(Exception):
    pass


def load_state(path: Path, *, missing_ok: bool = True) -> State:
    """Read ``state.json``; a missing file is an empty state, a corrupt one an error."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        if missing_ok:
            return State()
        raise StateError(f"{path}: missing") from None
    except PermissionError:
        return State()
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable: {exc}") from exc
    known = set(EngineMemory.__dataclass_fields__)
    engines = {}
    for name, data in (raw.get("engines") or {}).items():
        if isinstance(data, dict):
            engines[name] = EngineMemory(**{k: v for k, v in data.items() if k in known})
    cursor, journal = raw.get("kernel_cursor"), raw.get("journal_cursor")
    return State(engines, cursor if isinstance(cursor, str) else None,
                 journal if isinstance(journal, str) else None)


def dumps_state(state: State) -> str:
    """``state.json``'s text."""
    return json.dumps(state.to_dict(), indent=1, sort_keys=True) + "\n"


def save_state(path: Path, state: State) -> None:
    atomic_write(path, dumps_state(state), 0o640)
