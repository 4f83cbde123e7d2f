"""How documents read for people: the status table, the tiers, an event line. Pure functions
of the control API's documents, shared by the CLI and the daemon (which renders the status
table itself, so ``llm-supervisorctl status`` needs neither argparse nor json)."""

from __future__ import annotations

import time
from typing import Any

from llm_supervisor.timefmt import ago

NO_ENGINES = ("no engines configured: add an [[engine]] in /etc/llm-supervisor/conf.d/ and"
              " `systemctl reload llm-supervisor`, or `llm-supervisorctl adopt ollama.service`")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def format_status(document: dict[str, Any]) -> str:
    now = time.time()
    rows = [["ENGINE", "STATE", "TIER", "BACKEND", "SPEED", "SINCE", "USABLE", "REASON"]]
    notes = []
    for engine in document.get("engines", []):
        state = engine["state"] + (" (pinned)" if engine.get("pinned") else "")
        if engine.get("reboot_required"):
            state += " REBOOT REQUIRED"
        backend = engine.get("backend") or "-"
        if engine.get("offload"):
            backend += f" ({engine['offload']} layers)"
        rows.append([engine["name"], state, engine.get("tier") or "-", backend,
                     format_speed(engine.get("speed")), ago(engine.get("since"), now),
                     ",".join(engine.get("usable_tiers", [])), engine.get("reason") or ""])
        if engine.get("fix"):
            notes.append(f"{engine['name']}: fix: {engine['fix']}")
        if engine.get("busy"):  # a canary overdue: busy (working) or waiting for evidence
            notes.append(f"{engine['name']}: {engine['busy']}")
        pull = engine.get("pull")
        if pull and pull.get("status") != "success":
            total, done = pull.get("total") or 0, pull.get("completed") or 0
            share = f" {done * 100 // total}%" if total else ""
            notes.append(f"{engine['name']}: pulling {pull.get('model')}: {pull.get('status')}"
                         f"{share}")
    out = _table(rows) if len(rows) > 1 else NO_ENGINES
    if notes:
        out += "\n" + "\n".join(notes)
    error = document.get("supervisor", {}).get("config_error")
    if error:
        out += "\nconfig error (the running config stays in force):\n  " + \
            "\n  ".join(error if isinstance(error, list) else [str(error)])
    return out


def format_speed(speed: dict[str, Any] | None) -> str:
    """``41.8/45.0 t/s``: the last canary's rate against the one learned on this tier (or how
    far the learning got)."""
    if not speed:
        return "-"
    last = speed.get("last") or []
    shown = f"{last[-1]:.1f}" if last else "-"
    if speed.get("reference"):
        return f"{shown}/{speed['reference']:.1f} t/s"
    return f"{shown} t/s (learning {speed.get('learned', 0)}/{speed.get('of', 0)})"


def format_tiers(document: dict[str, Any]) -> str:
    rows = [["TIER", "PRESENT", "REASON"]]
    for tier in document.get("tiers", []):
        rows.append([tier["tier"], "yes" if tier["present"] else "no", tier["reason"]])
    lines = [_table(rows)]
    for engine in document.get("engines", []):
        skipped = [f"{c['tier']} ({c['reason']})" for c in engine["choices"] if not c["usable"]]
        if skipped:
            lines.append(f"{engine['name']}: skips " + "; ".join(skipped))
    return "\n".join(lines)


def format_event(event: dict[str, Any]) -> str:
    move = ""
    if event.get("from") or event.get("to"):
        move = f" {event.get('from') or '-'} -> {event.get('to') or '-'}"
    who = event.get("engine") or "-"
    cause = f"[{event['cause']}] " if event.get("cause") else ""
    return f"{event.get('ts', '')} {who:<12} {event.get('type', ''):<8}{move}  " \
        f"{cause}{event.get('reason') or ''}"
