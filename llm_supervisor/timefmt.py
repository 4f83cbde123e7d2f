"""UTC times as text, the one place their format is written: ``2026-11-22T16:00:00Z`` (the
events' ``ts``, the status document's times, a probe's ``checked_at``), its compact form
``20261122T160000Z`` for file names, reading them back, and how long ago one was. Standard
library only, and no ``_strptime`` (nor ``datetime`` until an ISO-8601 text from outside is
read): ``llm-supervisorctl status`` imports it on its fast path."""

from __future__ import annotations

import time

FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # ISO-8601, UTC, to the second
COMPACT = "%Y%m%dT%H%M%SZ"     # the same in ISO-8601's basic format: for file names


def utc(ts: float | None = None) -> str:
    """Seconds since the epoch (default: now) -> ``2026-11-22T16:00:00Z``."""
    return time.strftime(FORMAT, time.gmtime(time.time() if ts is None else ts))


def compact(ts: float | None = None) -> str:
    """Seconds since the epoch (default: now) -> ``20261122T160000Z``, for a file's name."""
    return time.strftime(COMPACT, time.gmtime(time.time() if ts is None else ts))


def normalise(text: str) -> str:
    """Any ISO-8601 date or time (``2026-11-22``, ``2026-11-22T17:00:00+01:00``) as
    ``utc`` writes it, so it compares with the events' own times; a time without an offset
    is UTC. ``ValueError`` when it is no ISO-8601 date or time."""
    from datetime import UTC, datetime

    when = datetime.fromisoformat(text)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime(FORMAT)


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
    return f"{span(now - then)} ago"


def within(iso: str | None, now: float) -> str:
    """``"in 26m"`` (``"now"`` once due); ``"-"`` for no time; the text if it is not a time."""
    if not iso:
        return "-"
    try:
        then = epoch(iso)
    except ValueError:
        return iso
    return f"in {span(then - now)}" if then > now else "now"


def span(seconds: float) -> str:
    """``"4m"``: a length of time in its largest whole unit (d, h, m, s)."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"
