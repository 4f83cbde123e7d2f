"""One journal reader for every engine and the kernel.

One ``journalctl -f -o json`` whose matches are the engines' units and the kernel's match
joined by ``+`` (journalctl's OR), each entry routed by ``_SYSTEMD_UNIT`` (or the kernel
match) to its source's sink, resuming after ONE cursor that the daemon persists.

When the set of sources changes (a reload adds or removes an engine, the kernel match
changes) journalctl is restarted, between two entries, so no line is lost or repeated:
it resumes after the last cursor it delivered. A source added later is also read from a
little before it was added (its unit was started just before), and every source skips
what it was already given, by journal sequence number. The same skip carries the per-engine
cursors of older versions over to the one cursor without repeating a line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from llm_supervisor.systemd.systemctl import Systemd, journal_message

log = structlog.get_logger("llm-supervisor")

# (message, cursor, at, pid): ``at`` is when the entry was logged on the monotonic clock
# (CLOCK_MONOTONIC, which journald stamps and ``time.monotonic`` reads), -inf for an entry of
# an earlier boot, None when the entry does not say. A wall clock step changes neither.
# ``pid``: the process that wrote it (journald's _PID), None when the entry does not say.
Sink = Callable[[str, str, float | None, int | None], Awaitable[None] | None]
KERNEL = "kernel"
ADDED_MARGIN = 10.0  # a new source is read from this many seconds before it was added
DEBOUNCE = 0.2       # several changes in a row (one reload) restart journalctl once


@dataclass(frozen=True)
class Position:
    """Where an entry sits in the journal: sequence number (within one ``seqnum_id``)
    and wall time, both from its cursor."""

    seqnum_id: str
    seqnum: int
    realtime: int

    @classmethod
    def of(cls, cursor: str | None) -> Position | None:
        if not cursor:
            return None
        fields = dict(part.partition("=")[::2] for part in cursor.split(";"))
        try:
            return cls(fields.get("s", ""), int(fields.get("i", ""), 16),
                       int(fields.get("t", ""), 16))
        except ValueError:
            return None

    def after(self, other: Position) -> bool:
        if self.seqnum_id and self.seqnum_id == other.seqnum_id:
            return self.seqnum > other.seqnum
        return self.realtime > other.realtime


def unit_match(unit: str) -> str:
    return f"_SYSTEMD_UNIT={unit}"


def match_terms(match: str) -> list[list[str]]:
    """``A=1 B=2 + C=3`` → ``[["A=1", "B=2"], ["C=3"]]``: journalctl's disjunction groups."""
    groups: list[list[str]] = [[]]
    for word in match.split():
        if word == "+":
            groups.append([])
        else:
            groups[-1].append(word)
    return [g for g in groups if g]


def matches_entry(groups: list[list[str]], entry: Mapping[str, object]) -> bool:
    """Does a journal entry match, as journalctl reads the terms: within a group, the same
    field ORs, different fields AND; groups OR."""
    for group in groups:
        fields: dict[str, set[str]] = {}
        for term in group:
            key, _, value = term.partition("=")
            fields.setdefault(key, set()).add(value)
        if all(str(entry.get(key, "")) in values for key, values in fields.items()):
            return True
    return False


class JournalReader:
    """Follows the journal for a changing set of sources; ``run()`` forever."""

    def __init__(self, systemd: Systemd, *, cursor: str | None = None,
                 since: float | None = None, clock: Callable[[], float] = time.time,
                 boot_id: str | None = None) -> None:
        self.systemd = systemd
        # the kernel's boot (journald's _BOOT_ID, without dashes): entries of an earlier one
        # have monotonic stamps of another clock
        self.boot_id = (boot_id if boot_id is not None else kernel_boot_id()).replace("-", "")
        self.cursor = cursor          # the last entry delivered (or skipped) by this reader
        self.since = since            # where to start without a cursor
        self.clock = clock
        self.units: dict[str, Sink] = {}       # unit -> sink
        self.kernel: tuple[list[list[str]], Sink] | None = None
        self.skip: dict[str, Position] = {}    # source -> already given up to here
        self.rewind: float | None = None       # read from here on the next start
        self.changed = asyncio.Event()
        self.restarts = 0

    # ------------------------------------------------------------------ sources

    def add_unit(self, unit: str, sink: Sink, *, cursor: str | None = None) -> None:
        """Route the unit's lines to ``sink``; ``cursor``: it was already read up to there."""
        new = unit not in self.units
        self.units[unit] = sink
        if new:
            self._added(unit, cursor)

    def remove_unit(self, unit: str) -> None:
        if self.units.pop(unit, None) is not None:
            self.skip.pop(unit, None)
            self.changed.set()

    def set_kernel(self, match: str, sink: Sink, *, cursor: str | None = None) -> None:
        groups = match_terms(match)
        old = self.kernel
        self.kernel = (groups, sink)
        if old is None or old[0] != groups:
            self._added(KERNEL, cursor)

    def _added(self, source: str, cursor: str | None) -> None:
        position = Position.of(cursor)
        if position is not None:
            self.skip[source] = position
        if self.restarts and self.cursor is not None:  # running: read it from a bit back
            here = Position.of(self.cursor)
            for other in self._sources():
                if other != source and here is not None and other not in self.skip:
                    self.skip[other] = here
            back = self.clock() - ADDED_MARGIN
            self.rewind = back if self.rewind is None else min(self.rewind, back)
        self.changed.set()

    def _sources(self) -> list[str]:
        return [*self.units, *([KERNEL] if self.kernel else [])]

    def matches(self) -> list[str]:
        terms: list[str] = []
        for unit in sorted(self.units):
            terms += ["+", unit_match(unit)] if terms else [unit_match(unit)]
        if self.kernel is not None:
            for group in self.kernel[0]:
                terms += (["+"] if terms else []) + group
        return terms

    def fields(self) -> list[str]:
        """What routing and the sinks read of an entry (journalctl adds the cursor and the
        timestamps itself): asking for these alone spares formatting the rest of each entry."""
        keys = {"MESSAGE", "_SYSTEMD_UNIT", "_PID"}
        if self.kernel is not None:
            keys |= {term.partition("=")[0] for group in self.kernel[0] for term in group}
        return sorted(keys)

    # ------------------------------------------------------------------ reading

    async def run(self) -> None:
        """Follow until cancelled; restart journalctl when the sources change or it exits."""
        while True:
            await asyncio.sleep(DEBOUNCE)
            self.changed.clear()
            matches = self.matches()
            if not matches:
                await self.changed.wait()
                continue
            cursor, since = self.cursor, self.since
            if self.rewind is not None:
                cursor, since = None, self.rewind
            elif cursor is not None:
                since = None
            self.rewind = None
            self.restarts += 1
            follower = asyncio.ensure_future(self._follow(matches, cursor, since))
            changed = asyncio.ensure_future(self.changed.wait())
            try:
                await asyncio.wait({follower, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (follower, changed):
                    task.cancel()
                await asyncio.gather(follower, changed, return_exceptions=True)
            if follower.done() and not follower.cancelled():
                exc = follower.exception()
                if exc is not None:
                    log.warning("journal reader failed; restarting", error=repr(exc))
                await asyncio.sleep(1)  # journalctl ended by itself: do not spin

    async def _follow(self, matches: list[str], cursor: str | None, since: float | None
                      ) -> None:
        async for entry in self.systemd.follow(*matches, cursor=cursor, since=since,
                                               fields=self.fields()):
            result = self.deliver(entry)
            if result is not None:
                await result

    def deliver(self, entry: Mapping[str, object]) -> Awaitable[None] | None:
        """Route one entry to its source's sink (unless that source already had it)."""
        cursor = str(entry.get("__CURSOR", "") or "")
        if not cursor:
            return None
        self.cursor = cursor
        source, sink = self._route(entry)
        if sink is None:
            return None
        done = self.skip.get(source)
        if done is not None:
            here = Position.of(cursor)
            if here is None or not here.after(done):
                return None
            del self.skip[source]
        result = sink(journal_message(entry), cursor, logged_at(entry, self.boot_id),
                      written_by(entry))
        return result if asyncio.iscoroutine(result) else None

    def _route(self, entry: Mapping[str, object]) -> tuple[str, Sink | None]:
        unit = entry.get("_SYSTEMD_UNIT")
        if isinstance(unit, str) and unit in self.units:
            return unit, self.units[unit]
        if self.kernel is not None and matches_entry(self.kernel[0], entry):
            return KERNEL, self.kernel[1]
        return "", None


def kernel_boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str:
    """This boot's id as the kernel has it (what journald stamps), "" when unreadable."""
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def logged_at(entry: Mapping[str, object], boot_id: str) -> float | None:
    """When an entry was logged, in seconds of this boot's monotonic clock (-inf for an
    earlier boot; None when the entry has no such stamp)."""
    boot = str(entry.get("_BOOT_ID", "") or "")
    if boot and boot_id and boot != boot_id:
        return float("-inf")
    try:
        return int(str(entry.get("__MONOTONIC_TIMESTAMP", ""))) / 1e6
    except ValueError:
        return None


def written_by(entry: Mapping[str, object]) -> int | None:
    """The process that wrote an entry (journald's ``_PID``), None when it does not say."""
    pid = str(entry.get("_PID", "") or "")
    return int(pid) if pid.isdigit() else None


def oldest(cursors: list[str | None]) -> str | None:
    """The earliest of some cursors (where one reader resumes for all of them)."""
    known = [(p, c) for c in cursors if c and (p := Position.of(c)) is not None]
    if not known:
        return None
    first_pos, first = known[0]
    for position, cursor in known[1:]:
        if first_pos.after(position):
            first_pos, first = position, cursor
    return first
