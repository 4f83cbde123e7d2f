"""The event history: one JSON line per event in ``events/current.jsonl``, fsynced per event,
rotated by size into zstd segments and pruned oldest-first to a size budget.

An event is ``{"seq", "ts", "engine", "type", "from", "to", "reason", "evidence"}``; ``seq``
increases by one per event and survives restarts. Readers get events back in order across
segments and the live file; live followers get each new event through a queue.

Crash safety. An event is acknowledged once ``append`` returns: its line is fsynced. Rotation
writes the segment ``events-<first ts>-<last seq>.jsonl.zst`` atomically (one zstd frame; temp
file, fsync, rename, fsync the directory) *before* it atomically replaces ``current.jsonl`` with
an empty file, so an event always lives in at least one of them. If a crash falls between the
two, ``current.jsonl`` still holds events the newest segment has too: readers skip lines whose
seq is not above the newest segment's last seq, and the first ``append`` after start-up drops
them (and any torn last line) from the file. Pruning happens last and never removes the newest
segment, which anchors ``seq`` when ``current.jsonl`` is empty.

A failing disk. ``append`` never raises for an ``OSError`` (ENOSPC, EIO, EROFS, ...): the event
still gets its seq, reaches followers and readers, and waits in a bounded in-memory backlog
(``BACKLOG`` events; past that the oldest are dropped and counted in ``dropped``). The backlog
is written, in order, by the next ``append`` or ``flush`` that finds the disk writable again.
Meanwhile ``degraded`` holds the error, for the status document and the metrics. With a
``spill`` path (on another filesystem: the daemon uses its runtime directory in /run, which
survives its restarts), the backlog is mirrored there too, so a daemon restarted while the
disk is still full takes the waiting events back instead of losing them.

Followers. Each has a bounded queue (``FOLLOW_QUEUE``); one that falls that far behind is
dropped (its stream ends), never the daemon. ``MAX_FOLLOWERS`` in all and
``MAX_FOLLOWERS_PER_CLIENT`` per client (the control server passes the uid) are allowed,
and clients other than root share ``MAX_OTHER_FOLLOWERS``; ``follow`` raises
``TooManyFollowers`` past them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import zstandard

from llm_supervisor.records.atomic import atomic_write, fsync_dir

# an event's ``ts``: timefmt's, the one format. Named here too only for the modules that still
# import it from here (engine.machine, records.recorder); new code imports it from timefmt.
from llm_supervisor.timefmt import utc as utc

CURRENT = "current.jsonl"
EVENT_MODE = 0o644  # the event log's files, appended or replaced
LEVEL = 9  # ~30x on the daemon's events; 1 MiB compresses in ~15 ms, once per rotation
SEGMENT = re.compile(r"events-([0-9TZ]+)-(\d+)\.jsonl\.zst")
BACKLOG = 10_000              # events kept in memory while the disk refuses them
FOLLOW_QUEUE = 256            # events a follower may fall behind before it is dropped
MAX_FOLLOWERS = 128           # all together
MAX_OTHER_FOLLOWERS = 96      # all clients but root (0) together: the rest is root's reserve
MAX_FOLLOWERS_PER_CLIENT = 16  # one client other than root


class TooManyFollowers(Exception):
    pass


class Follower:
    """One live reader: a bounded queue, dropped (``lagging``) when it overflows."""

    def __init__(self, client: int | None) -> None:
        self.client = client
        self.queue: asyncio.Queue[dict[str, Any]] = _Inbox()  # filled from the disk thread
        self.lagging = False


class Segment(NamedTuple):
    last_seq: int
    path: Path


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a torn last line after a crash
    return event if isinstance(event, dict) else None


def _complete_lines(raw: bytes) -> list[bytes]:
    """A torn last line (a crash, or a write in progress) was never acknowledged: left out."""
    return raw[:raw.rfind(b"\n") + 1].splitlines(keepends=True)


def _fresh(event: dict[str, Any], floor: int | None) -> bool:
    """Not already in the newest segment, whose last seq is ``floor`` (a crash between writing
    a segment and emptying current.jsonl leaves both)."""
    return floor is None or event.get("seq", 0) > floor


class Backlog(Protocol):
    def __call__(self, *, since: str | None, limit: int | None, engine: str | None
                 ) -> Awaitable[list[dict[str, Any]]]: ...


class _Inbox(asyncio.Queue[dict[str, Any]]):
    """A follower's queue: ``append`` may run on another thread (the daemon's disk thread)."""

    def __init__(self) -> None:
        super().__init__()
        self._owner = asyncio.get_running_loop()

    def put_nowait(self, item: dict[str, Any]) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._owner:
            super().put_nowait(item)
        else:
            self._owner.call_soon_threadsafe(super().put_nowait, item)


class EventLog:
    def __init__(self, directory: Path, *, segment_size: int = 1 << 20,
                 max_size: int = 64 << 20, clock: Callable[[], float] = time.time,
                 spill: Path | None = None) -> None:
        self.directory = directory
        self.spill = spill
        self._spill_loaded = spill is None
        self.clock = clock
        self.segment_size = segment_size
        self.max_size = max_size
        self.followers: set[Follower] = set()
        self._seq: int | None = None  # None until the files have been looked at
        self._size = 0  # bytes in current.jsonl
        self._mem_seq = 0  # the last seq handed out while the files could not be read
        self.backlog: deque[dict[str, Any]] = deque()  # appended, not yet on disk
        self.degraded: str | None = None  # the last write error, None once all is on disk
        self.dropped = 0  # events lost because the backlog overflowed (since start)
        self.lagging_dropped = 0  # followers dropped for falling behind (since start)

    @property
    def current(self) -> Path:
        return self.directory / CURRENT

    def segments(self) -> list[Segment]:
        """The compressed segments, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = (SEGMENT.fullmatch(name) for name in names)
        return sorted(Segment(int(m[2]), self.directory / m[0]) for m in found if m)

    # -- writing --

    def append(self, type: str, *, engine: str | None = None, from_: str | None = None,
               to: str | None = None, reason: str = "", evidence: Any = None,
               **extra: Any) -> dict[str, Any]:
        """Record an event. Never raises for a disk error: see ``degraded`` and ``flush``."""
        self._load_spill()
        event = {"seq": 0, "ts": utc(self.clock()), "engine": engine, "type": type,
                 "from": from_, "to": to, "reason": reason, "evidence": evidence, **extra}
        try:
            on_disk = self._open()
        except OSError as exc:
            on_disk = 0  # renumbered by flush() once the files can be read
            self._failed(exc)
        last = max(self._mem_seq, on_disk, self.backlog[-1]["seq"] if self.backlog else 0)
        event["seq"] = self._mem_seq = last + 1
        self.backlog.append(event)
        if len(self.backlog) > BACKLOG:
            self.backlog.popleft()
            self.dropped += 1
        if not self.flush():
            self._spill_out(event, rewrite=self.dropped % 1000 == 1)
        for follower in list(self.followers):
            if follower.queue.qsize() >= FOLLOW_QUEUE:
                follower.lagging = True  # its stream ends; the daemon goes on
                self.followers.discard(follower)
                self.lagging_dropped += 1
            follower.queue.put_nowait(event)  # (also wakes a dropped one, which then ends)
        return event

    def flush(self) -> bool:
        """Write the backlog, oldest first; True when nothing is left in memory."""
        self._load_spill()
        while self.backlog:
            try:
                seq = self._open()
                event = self.backlog[0]
                if event["seq"] <= seq:  # numbered while the files could not be read
                    for offset, pending in enumerate(self.backlog, 1):
                        pending["seq"] = seq + offset
                    self._mem_seq = self.backlog[-1]["seq"]
                self._write(event)
            except OSError as exc:
                self._failed(exc)
                return False
            self.backlog.popleft()
        self.degraded = None
        if self.spill is not None:
            try:
                self.spill.unlink(missing_ok=True)
            except OSError:
                pass
        return True

    def _spill_out(self, event: dict[str, Any], *, rewrite: bool) -> None:
        """Mirror the backlog to ``spill``: one line per event, or all of it on ``rewrite``."""
        if self.spill is None:
            return
        events = list(self.backlog) if rewrite else [event]
        data = b"".join((json.dumps(e, default=str, ensure_ascii=False) + "\n").encode()
                        for e in events)
        try:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if rewrite else os.O_APPEND)
            fd = os.open(self.spill, flags, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError:
            pass  # the spill is a courtesy; memory still holds the events

    def _load_spill(self) -> None:
        """Once, first thing: take back the events a previous daemon could not write."""
        if self._spill_loaded or self.spill is None:
            return
        self._spill_loaded = True
        try:
            raw = self.spill.read_bytes()
        except OSError:
            return
        try:
            on_disk = self._open()
        except OSError:
            on_disk = 0
        waiting = sorted((e for line in _complete_lines(raw) if (e := _decode(line))
                          and isinstance(e.get("seq"), int) and e["seq"] > on_disk),
                         key=lambda e: e["seq"])
        self.backlog.extendleft(reversed(waiting[-BACKLOG:]))
        if waiting:
            self._mem_seq = max(self._mem_seq, waiting[-1]["seq"])

    def _failed(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, "error")
        self.degraded = f"cannot write the event history in {self.directory}: {name}:" \
            f" {exc.strerror or exc}"

    def _write(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, default=str, ensure_ascii=False) + "\n").encode()
        if self._size and self._size + len(data) > self.segment_size:
            self._rotate()
        created = self._size == 0 and not self.current.exists()
        fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, EVENT_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            try:
                os.ftruncate(fd, self._size)  # leave no half line behind (ENOSPC)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.directory)
        self._seq, self._size = event["seq"], self._size + len(data)

    def _open(self) -> int:
        """On the first append: restore seq, finish an interrupted rotation, drop a torn line."""
        if self._seq is not None:
            return self._seq
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink()
        segments = self.segments()
        floor = segments[-1].last_seq if segments else 0
        raw = self._current_bytes()
        kept = [(e, line) for line in _complete_lines(raw)
                if (e := _decode(line)) is not None and _fresh(e, floor if segments else None)]
        seq = max([floor, *(int(event.get("seq", 0)) for event, _ in kept)])
        data = b"".join(line for _, line in kept)
        if data != raw:
            atomic_write(self.current, data, EVENT_MODE)
        self._seq, self._size = seq, len(data)
        return seq

    def _rotate(self) -> None:
        data = self.current.read_bytes()
        first = _decode(data[:data.find(b"\n")]) or {}
        stamp = re.sub(r"[^0-9TZ]", "", str(first.get("ts", ""))) or "0"
        name = f"events-{stamp}-{self._seq:012d}.jsonl.zst"
        frame = zstandard.ZstdCompressor(level=LEVEL).compress(data)  # one frame, with size
        atomic_write(self.directory / name, frame, EVENT_MODE)
        self._reset_current()
        self._size = 0
        self._prune()

    def _reset_current(self) -> None:
        atomic_write(self.current, b"", EVENT_MODE)

    def _prune(self) -> None:
        segments = self.segments()
        total = sum(s.path.stat().st_size for s in segments)
        removed = False
        for segment in segments[:-1]:  # the newest one stays: it anchors seq
            if total <= self.max_size:
                break
            total -= segment.path.stat().st_size
            segment.path.unlink()
            removed = True
        if removed:
            fsync_dir(self.directory)

    # -- reading --

    def read(self, *, since: str | None = None, limit: int | None = None,
             engine: str | None = None) -> list[dict[str, Any]]:
        """Events in order, oldest first: ``ts >= since``, of ``engine``, the last ``limit``.

        Reads the live file and then segments newest-first, parsing lines newest-first, only as
        far back as needed; older segments are skipped once one starts before ``since`` (the
        clock is assumed not to step back across a rotation).
        """
        segments = self.segments()
        floor = segments[-1].last_seq if segments else None
        limit = limit or None  # 0 meant "all" before, and still does
        # a cheap test on the raw line before parsing it (json.dumps's default separators)
        needle = f'"engine": {json.dumps(engine, ensure_ascii=False)}'.encode() if engine else b""
        newest_first: list[dict[str, Any]] = []
        chunks = chain([(_complete_lines(self._current_bytes()), floor)],
                       ((self._segment_lines(s), None) for s in reversed(segments)))
        pending = [e for e in self.backlog
                   if not (since and str(e.get("ts", "")) < since)
                   and not (engine and e.get("engine") != engine)]
        newest_first.extend(reversed(pending[-limit:] if limit else pending))
        if limit and len(newest_first) >= limit:
            return newest_first[::-1]
        for lines, below in chunks:
            for line in reversed(lines):
                if needle not in line or (event := _decode(line)) is None:
                    continue
                if not _fresh(event, below) or since and str(event.get("ts", "")) < since:
                    continue
                if engine and event.get("engine") != engine:
                    continue
                newest_first.append(event)
                if len(newest_first) == limit:
                    return newest_first[::-1]
            if since:
                first = next((e for e in map(_decode, lines) if e and _fresh(e, below)), None)
                if first is not None and str(first.get("ts", "")) < since:
                    break
        return newest_first[::-1]

    def _current_bytes(self) -> bytes:
        try:
            return self.current.read_bytes()
        except FileNotFoundError:
            return b""

    @staticmethod
    def _segment_lines(segment: Segment) -> list[bytes]:
        try:
            with segment.path.open("rb") as fh, \
                    zstandard.ZstdDecompressor().stream_reader(fh) as reader:
                return bytes(reader.read()).splitlines(keepends=True)
        except (FileNotFoundError, zstandard.ZstdError):
            return []  # pruned meanwhile, or damaged: the rest of the history still reads

    def follow(self, *, since: str | None = None, engine: str | None = None,
               limit: int | None = None, client: int | None = None,
               backlog: Backlog | None = None) -> AsyncIterator[dict[str, Any]]:
        """The matching backlog (as ``read``), then each new event as appended, until cancelled
        or dropped for falling ``FOLLOW_QUEUE`` events behind. Raises ``TooManyFollowers``.
        ``backlog`` reads it where the appends run (the daemon's disk thread), so a read never
        interleaves with an append; without it, ``read`` runs here."""
        if len(self.followers) >= MAX_FOLLOWERS:
            raise TooManyFollowers(f"{MAX_FOLLOWERS} followers already")
        if client:  # not root
            if sum(f.client == client for f in self.followers) >= MAX_FOLLOWERS_PER_CLIENT:
                raise TooManyFollowers(f"{MAX_FOLLOWERS_PER_CLIENT} followers of uid {client}"
                                       " already")
            if sum(bool(f.client) for f in self.followers) >= MAX_OTHER_FOLLOWERS:
                raise TooManyFollowers(f"{MAX_OTHER_FOLLOWERS} followers of other users"
                                       " than root already")
        follower = Follower(client)
        self.followers.add(follower)  # before reading the backlog, so nothing falls in between
        return self._follow(follower, since=since, engine=engine, limit=limit, backlog=backlog)

    async def _follow(self, follower: Follower, *, since: str | None, engine: str | None,
                      limit: int | None, backlog: Backlog | None
                      ) -> AsyncIterator[dict[str, Any]]:
        try:
            last = 0
            earlier = (await backlog(since=since, limit=limit, engine=engine) if backlog
                       else self.read(since=since, limit=limit, engine=engine))
            for event in earlier:
                last = max(last, event.get("seq", 0))
                yield event
            while not follower.lagging:
                event = await follower.queue.get()
                if follower.lagging:
                    break
                if event["seq"] <= last:
                    continue
                last = event["seq"]
                if since and event["ts"] < since or engine and event.get("engine") != engine:
                    continue
                yield event
        finally:
            self.followers.discard(follower)
