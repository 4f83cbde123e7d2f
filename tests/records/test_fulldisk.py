"""A full or failing state disk on a real filesystem (a tiny tmpfs mounted for the test, as
root): the event log keeps events in memory and flushes them in order once space returns;
state.json writes report the error instead of raising; a corrupt state.json is moved aside."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_supervisor.records import history
from llm_supervisor.records.disk import Disk
from llm_supervisor.records.history import EventLog
from llm_supervisor.records.memory import State, dumps_state, load_state


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: small enough to fill in a moment."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last block; the file is returned so it can be removed."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def append_until_degraded(log: EventLog, start: int) -> int:
    """The current file's last page may still have room: append until the disk refuses."""
    for i in range(start, start + 500):
        log.append("probe", engine="main", reason=f"check {i} " + "x" * 200)
        if log.degraded:
            return i + 1
    raise AssertionError("the full disk never refused an event")


def test_event_log_survives_a_full_disk_and_flushes_in_order(disk: Path) -> None:
    log = EventLog(disk / "events")
    for i in range(3):
        log.append("probe", engine="main", reason=f"check {i}")
    filler = fill(disk)
    n = append_until_degraded(log, 3)
    assert "ENOSPC" in log.degraded
    for i in range(n, n + 20):  # never raises, keeps counting
        log.append("probe", engine="main", reason=f"check {i}")
    total = n + 20
    assert [e["seq"] for e in log.read()] == list(range(1, total + 1))
    assert log.backlog and log.dropped == 0
    assert log.flush() is False  # still full

    filler.unlink()
    log.append("probe", engine="main", reason="space is back")
    assert log.degraded is None and not log.backlog
    on_disk = EventLog(disk / "events").read()
    assert [e["seq"] for e in on_disk] == list(range(1, total + 2))
    assert on_disk[-1]["reason"] == "space is back"
    assert [e["reason"] for e in on_disk[:total]] == [
        f"check {i}" + (" " + "x" * 200 if 3 <= i < n else "") for i in range(total)]


def test_start_up_on_a_full_disk_and_a_bounded_backlog(disk: Path, monkeypatch) -> None:
    first = EventLog(disk / "events")
    first.append("started")
    filler = fill(disk)
    monkeypatch.setattr(history, "BACKLOG", 50)
    log = EventLog(disk / "events")  # a restarted daemon, the disk still full
    for i in range(400):
        log.append("probe", engine="main", reason=f"{i} " + "y" * 300)
    assert log.degraded and len(log.backlog) == 50 and log.dropped > 0
    assert log.read()[-1]["reason"].startswith("399 ")
    filler.unlink()
    assert log.flush() and log.degraded is None
    seqs = [e["seq"] for e in EventLog(disk / "events").read()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[-1] == 401


async def test_followers_get_events_while_the_disk_is_full(disk: Path) -> None:
    log = EventLog(disk / "events")
    log.append("started")
    stream = log.follow()
    assert (await anext(stream))["type"] == "started"
    fill(disk)
    append_until_degraded(log, 0)
    got = await asyncio.wait_for(anext(stream), 5)
    assert got["type"] == "probe"
    await stream.aclose()


async def test_state_writes_report_a_full_disk_instead_of_raising(disk: Path) -> None:
    path = disk / "state.json"
    state = State()
    state.engine("main").tier = "vulkan"
    writer = Disk()
    try:
        writer.write_state(path, dumps_state(state))
        await writer.drain()
        assert writer.state_error is None
        filler = fill(disk)
        state.engine("main").reason = "r" * 100_000
        writer.write_state(path, dumps_state(state))
        await writer.drain()
        assert writer.state_error and "No space left" in writer.state_error
        assert load_state(path).engines["main"].tier == "vulkan"  # the old file is intact
        assert [p.name for p in disk.iterdir() if p.name.startswith(".")] == []  # no temp
        filler.unlink()
        writer.write_state(path, dumps_state(state))
        await writer.drain()
        assert writer.state_error is None
    finally:
        writer.close()


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000,
                                     b'{"engines": {"main": {"promote_wait": "NaN"}}}'])
def test_a_corrupt_state_file_is_moved_aside_not_fatal(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    state = load_state(path)
    assert state.note and str(path) in state.note
    if content.startswith(b'{"engines"'):
        assert state.engines["main"].promote_wait is None and "promote_wait" in state.note
        return
    assert state.engines == {} and "moved aside" in state.note
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert aside.read_bytes() == content and not path.exists()


def test_non_finite_numbers_never_reach_the_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"engines": {"main": {"next_promotion_at": float("inf"),
                                                     "tier": "rocm"}}}))
    state = load_state(path)
    assert state.engines["main"].next_promotion_at is None
    assert state.engines["main"].tier == "rocm"
    state.engines["main"].promote_wait = float("nan")
    with pytest.raises(ValueError):  # the daemon logs it and keeps the file it has
        dumps_state(state)
    assert os.path.exists(path)


def test_a_restart_on_a_full_disk_keeps_the_backlog_through_the_spill(disk: Path,
                                                                     tmp_path: Path) -> None:
    spill = tmp_path / "run" / "events-backlog.jsonl"
    spill.parent.mkdir()
    log = EventLog(disk / "events", spill=spill)
    log.append("started")
    filler = fill(disk)
    n = append_until_degraded(log, 0)
    assert spill.exists()
    waiting = [e["seq"] for e in log.backlog]
    del log  # the daemon restarts, the disk still full
    log = EventLog(disk / "events", spill=spill)
    log.append("started", reason="again")
    assert log.degraded and [e["seq"] for e in log.backlog][:len(waiting)] == waiting
    filler.unlink()
    assert log.flush() and not spill.exists()
    on_disk = EventLog(disk / "events").read()
    assert [e["seq"] for e in on_disk] == list(range(1, n + 3))
    assert on_disk[-1]["reason"] == "again"
