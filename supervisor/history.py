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
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import zstandard

CURRENT = "current.jsonl"
LEVEL = 9  # ~30x on the daemon's events; 1 MiB compresses in ~15 ms, once per rotation
SEGMENT = re.compile(r"events-([0-9TZ]+)-(\d+)\.jsonl\.zst")


def utc(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
                 max_size: int = 64 << 20, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self.segment_size = segment_size
        self.max_size = max_size
        self.followers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._seq: int | None = None  # None until the files have been looked at
        self._size = 0  # bytes in current.jsonl

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
        seq = self._open() + 1
        event = {"seq": seq, "ts": utc(self.clock()), "engine": engine, "type": type, "from": from_,
                 "to": to, "reason": reason, "evidence": evidence, **extra}
        event["seq"] = seq
        data = (json.dumps(event, default=str, ensure_ascii=False) + "\n").encode()
        if self._size and self._size + len(data) > self.segment_size:
            self._rotate()
        created = self._size == 0 and not self.current.exists()
        fd = os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, self._size)  # leave no half line behind (ENOSPC)
            raise
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.directory)
        self._seq, self._size = seq, self._size + len(data)
        for queue in list(self.followers):
            queue.put_nowait(event)
        return event

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
        seq = max([floor, *(event.get("seq", 0) for event, _ in kept)])
        data = b"".join(line for _, line in kept)
        if data != raw:
            _atomic_write_bytes(self.current, data)
        self._seq, self._size = seq, len(data)
        return seq

    def _rotate(self) -> None:
        data = self.current.read_bytes()
        first = _decode(data[:data.find(b"\n")]) or {}
        stamp = re.sub(r"[^0-9TZ]", "", str(first.get("ts", ""))) or "0"
        name = f"events-{stamp}-{self._seq:012d}.jsonl.zst"
        frame = zstandard.ZstdCompressor(level=LEVEL).compress(data)  # one frame, with size
        _atomic_write_bytes(self.directory / name, frame)
        self._reset_current()
        self._size = 0
        self._prune()

    def _reset_current(self) -> None:
        _atomic_write_bytes(self.current, b"")

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
            _fsync_dir(self.directory)

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

    async def follow(self, *, since: str | None = None, engine: str | None = None,
                     limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The matching backlog (as ``read``), then each new event as appended, until cancelled."""
        queue: asyncio.Queue[dict[str, Any]] = _Inbox()
        self.followers.add(queue)  # before reading the backlog, so nothing falls in between
        try:
            last = 0
            for event in self.read(since=since, limit=limit, engine=engine):
                last = max(last, event.get("seq", 0))
                yield event
            while True:
                event = await queue.get()
                if event["seq"] <= last:
                    continue
                last = event["seq"]
                if since and event["ts"] < since or engine and event.get("engine") != engine:
                    continue
                yield event
        finally:
            self.followers.discard(queue)
