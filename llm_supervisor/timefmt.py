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
    then = _when_of(iso)
    return then if isinstance(then, str) else f"{span(now - then)} ago"


def within(iso: str | None, now: float) -> str:
    """``"in 26m"`` (``"now"`` once due); ``"-"`` for no time; the text if it is not a time."""
    then = _when_of(iso)
    if isinstance(then, str):
        return then
    return f"in {span(then - now)}" if then > now else "now"


def _when_of(iso: str | None) -> float | str:
    """An event's time in seconds since the epoch, or what to show instead: ``"-"`` for no
    time, the text itself when it is not a time."""
    if not iso:
        return "-"
    try:
        return epoch(iso)
    except ValueError:
        return iso


def span(seconds: float) -> str:
    """``"4m"``: a length of time in its largest whole unit (d, h, m, s)."""
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


# systemd.time(7)'s units, as journalctl --since takes them
_UNITS = {**dict.fromkeys(("us", "usec"), 1e-6), **dict.fromkeys(("ms", "msec"), 1e-3),
          **dict.fromkeys(("s", "sec", "second", "seconds"), 1.0),
          **dict.fromkeys(("m", "min", "minute", "minutes"), 60.0),
          **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
          **dict.fromkeys(("d", "day", "days"), 86400.0),
          **dict.fromkeys(("w", "week", "weeks"), 7 * 86400.0),
          **dict.fromkeys(("M", "month", "months"), 30.44 * 86400.0),
          **dict.fromkeys(("y", "year", "years"), 365.25 * 86400.0)}
WHEN_HELP = ("a time as journalctl takes it: 'now', 'today', 'yesterday', 'tomorrow',"
             " '-1h', '+5min', '2 hours ago', '@1733500000', '2026-12-07 08:00[:00]' (local)"
             " or ISO-8601 with an offset")


def when(text: str, now: float) -> float:
    """A time as journalctl's ``--since`` takes it (systemd.time(7)), in seconds since the
    epoch: the words, relative times, ``@epoch``, a local date and time, or ISO-8601 (an
    offset-less one is local time). ``ValueError`` naming what was not understood."""
    import re
    from datetime import datetime, timedelta

    word = text.strip()
    midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    days = {"today": 0, "yesterday": -1, "tomorrow": 1}
    if word == "now":
        return now
    if word in days:
        return (midnight + timedelta(days=days[word])).timestamp()
    if word.startswith("@") and re.fullmatch(r"@\d+(\.\d+)?", word):
        return float(word[1:])
    relative = re.fullmatch(r"([+-])?\s*((?:\d+(?:\.\d+)?\s*[A-Za-z]+\s*)+?)\s*(ago)?", word)
    if relative and (relative.group(1) or relative.group(3)):
        seconds = 0.0
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)", relative.group(2)):
            if unit not in _UNITS:
                raise ValueError(f"{unit!r} is no unit of time (s, min, h, d, w, M, y)")
            seconds += float(number) * _UNITS[unit]
        future = relative.group(1) == "+" and not relative.group(3)
        return now + seconds if future else now - seconds
    try:
        parsed = datetime.fromisoformat(word)
    except ValueError:
        raise ValueError(f"{text!r} is not {WHEN_HELP}") from None
    return parsed.timestamp()  # naive: local time, as journalctl reads it


def local(iso: str) -> str:
    """An event's time (``utc``'s format) as the reader's local time, ``2026-12-07 09:00:00
    CET``; the text itself when it is no such time."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch(iso)))
    except (ValueError, IndexError):
        return iso
