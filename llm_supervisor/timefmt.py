"""How long ago an ISO-8601 UTC time was. Standard library only, and no ``_strptime``:
``llm-supervisorctl status`` imports it on its fast path."""

from __future__ import annotations


def epoch(iso: str) -> float:
    """``2026-11-22T16:00:00Z`` -> seconds since the epoch (days_from_civil, H. Hinnant)."""
    y, mo, d = int(iso[0:4]), int(iso[5:7]), int(iso[8:10])
    h, mi, s = int(iso[11:13]), int(iso[14:16]), int(iso[17:19])
    y -= mo <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + h * 3600 + mi * 60 + s


def ago(iso: str | None, now: float) -> str:
    """``"4m ago"``; ``"-"`` for no time; the text itself if it is not a time."""
    if not iso:
        return "-"
    try:
        then = epoch(iso)
    except ValueError:
        return iso
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
