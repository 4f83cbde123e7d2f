"""How documents read for people: the status table, the tiers, an event line. Pure functions
of the control API's documents, shared by the CLI and the daemon (which renders the status
table itself, so ``llm-supervisorctl status`` needs neither argparse nor json)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_supervisor.tiers import GPU_TIERS, TIERS
from llm_supervisor.timefmt import ago, local, within

NO_ENGINES = ("no engines configured: add an [[engine]] in /etc/llm-supervisor/conf.d/ and"
              " `systemctl reload llm-supervisor`, or `llm-supervisorctl adopt ollama.service`")


# a state's colour on a terminal (SGR): serving green, on its way yellow, down red, held blue
COLOURS = {"healthy": "32", "starting": "33", "degraded": "33", "failed": "31",
           "blocked": "31", "stopped": "34"}
NARROW = ("ENGINE", "STATE", "TIER", "SINCE", "NEXT", "SPEED", "REASON")
WIDE = ("ENGINE", "STATE", "TIER", "BACKEND", "SPEED", "SINCE", "NEXT", "USABLE", "REASON")
MIN_REASON = 12  # the last column keeps at least this much when the table is cut to fit


@dataclass(frozen=True)
class Look:
    """How the status table is drawn: cut to the terminal's ``width`` (its last column, the
    reason, shortened with an ellipsis), its states in colour, or ``wide``: every column,
    nothing cut."""

    width: int | None = None
    colour: bool = False
    wide: bool = False


PLAIN = Look()  # as piped: every row whole, no colour


def _table(rows: list[list[str]], width: int | None = None,
           colour: Callable[[int, int, str], str | None] | None = None) -> str:
    """Columns two spaces apart; with ``width``, the last column shortened first (to no less
    than ``MIN_REASON``), then every line cut to fit. ``colour(row, column, cell)``: an SGR
    code for a cell, added once the line is laid out (colour adds no width)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if width is not None:
        room = width - sum(widths[:-1]) - 2 * (len(widths) - 1)
        widths[-1] = min(widths[-1], max(MIN_REASON, room))
    lines = []
    for r, row in enumerate(rows):
        cells = [_cut(cell, w) for cell, w in zip(row, widths, strict=True)]
        line = "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()
        if width is not None:
            line = _cut(line, width)
        for c in reversed(range(len(cells))):  # from the right: offsets stay true
            code = colour(r, c, cells[c]) if colour is not None else None
            at = sum(widths[:c]) + 2 * c
            if code and at + len(cells[c]) <= len(line):
                line = (f"{line[:at]}\033[{code}m{cells[c]}\033[0m"
                        f"{line[at + len(cells[c]):]}")
        lines.append(line)
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


def _cells(engine: dict[str, Any], now: float) -> dict[str, str]:
    """One engine's row, every column (the look picks which)."""
    state = engine["state"] + (" (pinned)" if engine.get("pinned") else "") + (
        " (draining)" if engine.get("draining") else "")
    if engine.get("reboot_required"):
        state += " REBOOT REQUIRED" + (f" (card {engine['reboot_card']})"
                                       if engine.get("reboot_card") else "")
    backend = engine.get("backend") or "-"
    if engine.get("offload"):
        backend += f" ({engine['offload']} layers)"
    tier = engine.get("tier") or "-"
    demoted_from = engine.get("demoted_from")
    if demoted_from and demoted_from != engine.get("tier"):
        tier += f" (from {demoted_from} {ago(engine.get('demoted_at'), now)})"
    return {"ENGINE": engine["name"], "STATE": state, "TIER": tier, "BACKEND": backend,
            "CARDS": format_cards(engine.get("cards")),
            "SPEED": format_speed(engine.get("speed")), "SINCE": ago(engine.get("since"), now),
            "NEXT": _next(engine, now), "USABLE": ",".join(engine.get("usable_tiers", [])),
            "REASON": engine.get("reason") or ""}


def format_cards(own: dict[str, Any] | None) -> str:
    """``43:00.0,83:00.0``: the engine's cards (the domain when it is not 0000); ``-`` when
    it names none; what it named but this host lacks, with a ``?``."""
    if not own:
        return "-"
    found = [str(c["pci"]).removeprefix("0000:") for c in own.get("cards", [])]
    return ",".join(found + (["?"] if own.get("unresolved") else [])) or "?"


def _next(engine: dict[str, Any], now: float) -> str:
    """What the engine does next on its own: a retry, the end of a probation, a promotion."""
    if engine.get("next_retry_at"):
        return f"retry {within(engine['next_retry_at'], now)}"
    if engine.get("probation_until"):
        return f"probation ends {within(engine['probation_until'], now)}"
    if engine.get("promoting_from"):
        return "promoting"
    if engine.get("next_promotion_at"):
        return f"promote {within(engine['next_promotion_at'], now)}"
    return "-"


def format_status(document: dict[str, Any], look: Look = PLAIN) -> str:
    now = time.time()
    head = list(WIDE if look.wide else NARROW)
    if any(engine.get("cards") for engine in document.get("engines", [])):
        head.insert(head.index("TIER") + 1, "CARDS")  # only where an engine names its cards
    rows = [list(head)]
    notes = []
    for engine in document.get("engines", []):
        cells = _cells(engine, now)
        rows.append([cells[column] for column in head])
        notes += _notes(engine)
    state = head.index("STATE")

    def colour(r: int, c: int, cell: str) -> str | None:
        return COLOURS.get(cell.split(" ", 1)[0]) if r and c == state else None

    out = _table(rows, None if look.wide else look.width, colour if look.colour else None) \
        if len(rows) > 1 else NO_ENGINES
    if notes:
        out += "\n" + "\n".join(notes)
    error = document.get("supervisor", {}).get("config_error")
    if error:
        out += "\nconfig error (the running config stays in force):\n  " + \
            "\n  ".join(error if isinstance(error, list) else [str(error)])
    return out


def _notes(engine: dict[str, Any]) -> list[str]:
    """The lines under the table: a fix, a canary overdue, a pull under way."""
    notes = []
    if engine.get("fix"):
        notes.append(f"{engine['name']}: fix: {engine['fix']}")
    if engine.get("busy"):  # a canary overdue: busy (working) or waiting for evidence
        notes.append(f"{engine['name']}: {engine['busy']}")
    drain = engine.get("draining")
    if drain:
        notes.append(f"{engine['name']}: draining for {drain['for_s']:g}s before going to"
                     f" {drain['to']} ({drain['cause']}): the balancer sends it nothing new;"
                     f" at most {drain['at_most_s']:g}s")
    pull = engine.get("pull")
    if pull and pull.get("status") != "success":
        total, done = pull.get("total") or 0, pull.get("completed") or 0
        share = f" {done * 100 // total}%" if total else ""
        notes.append(f"{engine['name']}: pulling {pull.get('model')}: {pull.get('status')}"
                     f"{share}")
    return notes


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
    if document.get("cards"):
        lines += ["", format_card_table(document["cards"])]
    for engine in document.get("engines", []):
        skipped = [f"{c['tier']} ({c['reason']})" for c in engine["choices"] if not c["usable"]]
        if skipped:
            lines.append(f"{engine['name']}: skips " + "; ".join(skipped))
    return "\n".join(lines)


def format_card_table(found: list[dict[str, Any]]) -> str:
    """The host's cards: number, address, name, each tier's number for it, its engines."""
    gpu_tiers = [t for t in TIERS if t in GPU_TIERS]
    rows = [["CARD", "PCI", "NAME", "GFX", "VRAM", *(t.upper() for t in gpu_tiers), "ENGINES"]]
    for card in found:
        vram = f"{card['vram'] / 2**30:.1f} GiB" if card.get("vram") else "-"
        rows.append([str(card["number"]), card["pci"], card.get("name") or "-",
                     card.get("gfx") or "-", vram,
                     *(str(card[t]) if card.get(t) is not None else "-" for t in gpu_tiers),
                     ",".join(card.get("engines", [])) or "-"])
    return _table(rows)


def format_event(event: dict[str, Any], *, utc: bool = True) -> str:
    """One event on a line, its time in UTC as recorded (``utc``) or the reader's local."""
    move = ""
    if event.get("from") or event.get("to"):
        move = f" {event.get('from') or '-'} -> {event.get('to') or '-'}"
    who = event.get("engine") or "-"
    cause = f"[{event['cause']}] " if event.get("cause") else ""
    ts = str(event.get("ts", ""))
    return f"{ts if utc else local(ts)} {who:<12} {event.get('type', ''):<8}{move}  " \
        f"{cause}{event.get('reason') or ''}"
