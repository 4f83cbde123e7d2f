"""What survives a daemon restart: each engine's tier, pin, promotion backoff and history.

Kept in ``state.json`` under the state directory, written atomically on every change.

Neither reading nor writing it can stop supervision. ``dumps_state`` gives the text and
``llm_supervisor.records.disk.Disk.write_state`` writes it (atomically, off the event loop);
a full or
failing disk shows as ``Disk.state_error`` while the state stays in memory and is written
again at the next change. ``load_state`` never
raises for a bad file: a corrupt or unreadable ``state.json`` is moved aside to
``state.json.corrupt-<UTC stamp>`` and an empty state is returned, with ``State.note`` saying
what happened (for the log and the status document). Values of the wrong type, and
non-finite numbers, are dropped field by field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llm_supervisor.errors import StateError
from llm_supervisor.timefmt import compact

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
    reboot_card: str | None = None        # the card whose reset failed (its PCI address)
    state: str = "stopped"
    since: float | None = None
    reason: str = ""
    cause: str | None = None              # llm_supervisor.causes.Cause of the current state
    fix: str = ""                         # one line for the operator, when blocked
    demoted_from: str | None = None       # the best tier it fell from, and when (wall clock)
    demoted_at: float | None = None
    promoted_from: str | None = None      # a promotion on probation: the tier to go back to
    probation_until: float | None = None  # wall clock
    retry_at: float | None = None         # failed or blocked: the next try (wall clock)
    retry_attempt: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # tier -> why, for this engine
    backend: str | None = None            # what the engine reports it computes on
    runner_port: int | None = None        # Ollama >= 0.30: its llama-server's port (/slots)
    offload: str | None = None            # "29/29": layers the engine put on its GPU (its log)
    speed: dict[str, Any] = field(default_factory=dict)  # checks.speed.SpeedBook's data
    tuning: dict[str, Any] = field(default_factory=dict)  # host.tuning.Tuning the unit runs with
    stopped_by: str | None = None         # who stopped it (outside the daemon, or asked):
    #                                       held stopped until they start it
    journal_cursor: str | None = None     # where the engine's journal was last read
    history: list[dict[str, Any]] = field(default_factory=list)

    def remember(self, record: dict[str, Any]) -> None:
        self.history = [*self.history, record][-HISTORY:]


@dataclass
class State:
    engines: dict[str, EngineMemory] = field(default_factory=dict)
    kernel_cursor: str | None = None   # before one reader: where the kernel's journal was read
    journal_cursor: str | None = None  # where the one journal reader (journal.py) last read
    note: str | None = None  # what load_state had to do (a corrupt file moved aside); not saved

    def engine(self, name: str) -> EngineMemory:
        return self.engines.setdefault(name, EngineMemory())

    def tier_of(self, name: str) -> str | None:
        memory = self.engines.get(name)
        return memory.tier if memory else None

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "kernel_cursor": self.kernel_cursor,
                "journal_cursor": self.journal_cursor,
                "engines": {name: asdict(m) for name, m in sorted(self.engines.items())}}


_TYPES: dict[str, tuple[type, ...]] = {
    "tier": (str,), "pinned": (str,), "reboot_required": (bool,), "reboot_evidence": (str,),
    "promote_wait": (int, float), "next_promotion_at": (int, float), "state": (str,),
    "since": (int, float), "reason": (str,), "journal_cursor": (str,), "history": (list,),
    "offload": (str,), "speed": (dict,), "tuning": (dict,), "stopped_by": (str,),
    "reboot_card": (str,),
}


def _memory(name: str, data: dict[str, Any], dropped: list[str]) -> EngineMemory:
    kept: dict[str, Any] = {}
    for f in fields(EngineMemory):
        if f.name not in data:
            continue
        value = data[f.name]
        types = _TYPES.get(f.name, (object,))
        ok = value is None and f.name not in ("reboot_required", "state", "reason",
                                               "reboot_evidence", "history", "speed",
                                               "tuning")
        ok = ok or (isinstance(value, types)
                    and not (isinstance(value, bool) and bool not in types))
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if ok and f.name == "history":
            value = [r for r in value if isinstance(r, dict)]
        if ok:
            kept[f.name] = value
        else:
            dropped.append(f"{name}.{f.name}")
    return EngineMemory(**kept)


def _move_aside(path: Path) -> str:
    aside = path.with_name(f"{path.name}.corrupt-{compact()}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        return f"could not move it aside ({exc.strerror or exc})"
    return f"moved aside to {aside.name}"


def load_state(path: Path, *, missing_ok: bool = True, move_aside: bool = True) -> State:
    """Read ``state.json``; a missing file is an empty state, and so is a corrupt one (moved
    aside when ``move_aside``), with ``note`` saying so. Raises StateError only for a missing
    file when not ``missing_ok``."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        if missing_ok:
            return State()
        raise StateError(f"{path}: missing") from None
    except PermissionError as exc:
        return State(note=f"{path}: unreadable ({exc.strerror}); starting from an empty state")
    except (OSError, ValueError, RecursionError) as exc:
        aside = _move_aside(path) if move_aside and not isinstance(exc, OSError) else "left"
        return State(note=f"{path}: unreadable ({exc}); {aside}; starting from an empty state")
    if not isinstance(raw, dict):
        aside = _move_aside(path) if move_aside else "left"
        return State(note=f"{path}: not a JSON object; {aside}; starting from an empty state")
    dropped: list[str] = []
    engines = {}
    found = raw.get("engines")
    for name, data in (found.items() if isinstance(found, dict) else ()):
        if isinstance(data, dict):
            engines[str(name)] = _memory(str(name), data, dropped)
        else:
            dropped.append(str(name))
    cursor, journal = raw.get("kernel_cursor"), raw.get("journal_cursor")
    note = f"{path}: dropped values of the wrong type: {', '.join(dropped)}" if dropped else None
    return State(engines, kernel_cursor=cursor if isinstance(cursor, str) else None,
                 journal_cursor=journal if isinstance(journal, str) else None, note=note)


def dumps_state(state: State) -> str:
    """``state.json``'s text (raises ValueError for a value JSON cannot hold)."""
    return json.dumps(state.to_dict(), indent=1, sort_keys=True, allow_nan=False,
                      default=str) + "\n"
