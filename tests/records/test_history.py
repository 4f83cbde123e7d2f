"""The event history: rotation into single-frame zstd segments, retention, reading across
segments, crash safety (real SIGKILLed writers), torn lines, and live following."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from llm_supervisor.records.history import EventLog
from llm_supervisor.timefmt import utc

REPO = Path(__file__).resolve().parents[2]


def ticking(start: float = 1_700_000_000.0) -> Iterator[float]:
    """A clock that advances one second per event, so every event has its own ts."""
    t = start
    while True:
        yield t
        t += 1


def make_log(directory: Path, **kwargs: Any) -> EventLog:
    clock = ticking()
    return EventLog(directory, clock=lambda: next(clock), **kwargs)


def fill(log: EventLog, n: int) -> None:
    for i in range(n):
        log.append("probe", engine=f"e{i % 3}", from_="healthy", to="degraded",
                   reason=f"check {i} failed", evidence={"latency_ms": i % 997})


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("events-*.jsonl.zst"))


def test_append_and_read(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    assert log.read() == []
    first = log.append("started", reason="pid 1")
    assert first["seq"] == 1 and first["from"] is None and first["ts"].endswith("Z")
    fill(log, 9)
    events = log.read()
    assert seqs(events) == list(range(1, 11))
    assert events[0] == first
    assert seqs(log.read(limit=3)) == [8, 9, 10]
    assert seqs(log.read(limit=0)) == seqs(events)  # 0 means all, as before
    assert {e["engine"] for e in log.read(engine="e1")} == {"e1"}
    assert seqs(log.read(since=events[6]["ts"])) == [7, 8, 9, 10]
    assert seqs(log.read(since=events[2]["ts"], engine="e0", limit=2)) == [5, 8]
    odd = log.append("state", engine='ñ "quoted"', evidence={"engine": "e1"})
    assert log.read(engine='ñ "quoted"') == [odd]
    assert log.read(engine="e1", limit=1)[0]["seq"] == 9  # not fooled by the evidence
    assert utc(0) == "1970-01-01T00:00:00Z"


def test_seq_survives_a_restart(tmp_path: Path) -> None:
    fill(make_log(tmp_path, segment_size=2048), 100)
    log = make_log(tmp_path, segment_size=2048)
    assert log.append("started")["seq"] == 101
    assert seqs(log.read()) == list(range(1, 102))


def test_read_is_the_same_before_and_after_rotation(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_size=4096)
    rotations = 0
    while rotations < 3:
        before = log.read()
        since = before[len(before) // 2]["ts"] if before else None
        filtered = log.read(since=since, engine="e1", limit=5)
        n = len(segment_files(tmp_path))
        fill(log, 1)
        if len(segment_files(tmp_path)) > n:
            rotations += 1
            after = log.read()
            assert after[:-1] == before
            new = [after[-1]] if after[-1]["engine"] == "e1" else []
            assert log.read(since=since, engine="e1", limit=5) == (filtered + new)[-5:]
    assert make_log(tmp_path).read() == log.read()


def test_twenty_thousand_events_rotate_into_single_frames(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_size=64 << 10, max_size=1 << 30)
    fill(log, 20_000)
    assert log.current.stat().st_size <= 64 << 10
    segments = segment_files(tmp_path)
    assert len(segments) > 10
    events = log.read()
    assert seqs(events) == list(range(1, 20_001))
    assert events[-1]["reason"] == "check 19999 failed"

    lines = []
    for path in segments:
        data = path.read_bytes()
        params = zstandard.get_frame_parameters(data)
        whole = zstandard.ZstdDecompressor().decompress(data)  # needs the content size
        assert params.content_size == len(whole)
        one = zstandard.ZstdDecompressor().decompressobj()
        assert one.decompress(data) == whole and one.eof and one.unused_data == b""
        cli = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True)
        assert cli.stdout == whole
        subprocess.run(["zstd", "-tq", str(path)], check=True)
        lines += whole.splitlines()
        # the name says where the segment starts and which seq it ends with
        own = whole.splitlines()
        first, last = json.loads(own[0]), json.loads(own[-1])
        stamp = first["ts"].replace("-", "").replace(":", "")
        assert path.name == f"events-{stamp}-{last['seq']:012d}.jsonl.zst"
    lines += log.current.read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == events


def test_retention_prunes_the_oldest_segments(tmp_path: Path) -> None:
    budget = 24 << 10
    log = make_log(tmp_path, segment_size=64 << 10, max_size=budget)
    fill(log, 20_000)
    segments = segment_files(tmp_path)
    assert len(segments) > 1
    assert sum(p.stat().st_size for p in segments) <= budget
    events = log.read()
    assert events[-1]["seq"] == 20_000 and events[0]["seq"] > 1
    assert seqs(events) == list(range(events[0]["seq"], 20_001))


def test_the_newest_segment_stays_even_over_budget(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_size=8 << 10, max_size=1)
    fill(log, 500)
    (segment,) = segment_files(tmp_path)
    anchor = int(segment.name.split("-")[2].split(".")[0])
    assert anchor > 1
    log.current.unlink()  # even with the live file gone, seq goes on from the segment
    assert make_log(tmp_path, max_size=1).append("started")["seq"] == anchor + 1


def test_a_limited_read_decompresses_only_the_newest_segments(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_size=16 << 10, max_size=1 << 30)
    fill(log, 5000)
    expected = log.read()
    segments = segment_files(tmp_path)
    assert len(segments) > 5
    for path in segments[:-2]:  # a directory in place of the old segments: opening one fails
        path.unlink()
        path.mkdir()
    assert log.read(limit=150) == expected[-150:]
    assert log.read(since=expected[-150]["ts"]) == expected[-150:]
    with pytest.raises(IsADirectoryError):
        log.read()


def test_a_torn_last_line_is_skipped_and_repaired(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    fill(log, 3)
    with log.current.open("ab") as fh:
        fh.write(b'{"seq": 4, "ts": "2023-11-14T22:1')
    assert seqs(log.read()) == [1, 2, 3]
    with log.current.open("ab") as fh:  # complete JSON, but no newline: never acknowledged
        fh.write(b'6:00Z"}')
    assert seqs(log.read()) == [1, 2, 3]
    again = make_log(tmp_path)
    assert again.append("started")["seq"] == 4
    assert seqs(again.read()) == [1, 2, 3, 4]
    assert all(json.loads(line) for line in again.current.read_bytes().splitlines())


WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from llm_supervisor.records.history import EventLog
    log = EventLog(Path(sys.argv[1]), segment_size=int(sys.argv[2]))
    if sys.argv[3] == "crash-in-rotation":  # die between writing a segment and emptying current
        EventLog._reset_current = lambda self: os.kill(os.getpid(), signal.SIGKILL)
    while True:
        event = log.append("probe", engine="e", to="present", reason="x" * 40,
                           evidence={"n": 1})
        print(event["seq"], flush=True)
""")


def run_writer(directory: Path, segment_size: int, mode: str, kill_after: int | None
               ) -> list[int]:
    """Run a real writer process; SIGKILL it after ``kill_after`` acknowledged events."""
    acknowledged = []
    with subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(segment_size),
                           mode], stdout=subprocess.PIPE, text=True, cwd=REPO) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == kill_after:
                proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return acknowledged


@pytest.mark.parametrize("kill_after", [1, 137, 600, 1501])
def test_sigkill_loses_no_acknowledged_event(tmp_path: Path, kill_after: int) -> None:
    acknowledged = run_writer(tmp_path, 8 << 10, "plain", kill_after)
    assert acknowledged == list(range(1, len(acknowledged) + 1))
    log = EventLog(tmp_path, segment_size=8 << 10)
    found = seqs(log.read())
    assert found == list(range(1, len(found) + 1))  # in order, no duplicate, no gap
    assert set(acknowledged) <= set(found)
    assert log.append("started")["seq"] == found[-1] + 1


def test_a_crash_inside_rotation_duplicates_nothing(tmp_path: Path) -> None:
    acknowledged = run_writer(tmp_path, 8 << 10, "crash-in-rotation", None)
    segments = segment_files(tmp_path)
    assert len(segments) == 1 and acknowledged
    # the crash left every event both in the new segment and in current.jsonl
    whole = zstandard.ZstdDecompressor().decompress(segments[0].read_bytes())
    assert whole == EventLog(tmp_path).current.read_bytes()

    log = EventLog(tmp_path, segment_size=8 << 10)
    assert seqs(log.read()) == acknowledged
    fill(log, 200)  # finishes the rotation, then rotates on as usual
    assert len(segment_files(tmp_path)) > 1
    assert seqs(log.read()) == list(range(1, len(acknowledged) + 201))
    assert seqs(EventLog(tmp_path).read()) == seqs(log.read())


async def test_follow_yields_backlog_then_live_events(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_size=2048)
    fill(log, 40)  # some already in segments
    stream = log.follow()
    got = [await anext(stream)]
    assert len(log.followers) == 1
    log.append("reload", to="applied")  # while the backlog is being yielded
    got += [await anext(stream) for _ in range(40)]
    fill(log, 30)  # rotates under the follower
    got += [await anext(stream) for _ in range(30)]
    assert seqs(got) == list(range(1, 72))
    assert got == log.read()
    await stream.aclose()
    assert not log.followers


async def test_follow_filters_dedupes_and_unregisters_on_cancel(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    fill(log, 9)
    got: list[dict[str, Any]] = []
    seen = asyncio.Event()

    async def consume() -> None:
        async for event in log.follow(engine="e2", limit=2):
            got.append(event)
            if event["seq"] == 12:
                seen.set()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    (follower,) = log.followers
    follower.queue.put_nowait(log.read()[-1])  # a repeat of a backlog event is dropped
    fill(log, 3)
    await asyncio.wait_for(seen.wait(), 5)
    assert seqs(got) == [6, 9, 12]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not log.followers
