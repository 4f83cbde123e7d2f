"""External tools, bounded: output capped (head and tail kept), the event loop never starved
by a spewing tool, nothing left running after a timeout, giant journal lines skipped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from llm_supervisor.host.process import Capped, run, tree_pids
from llm_supervisor.systemd.systemctl import Systemd


def alive_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


async def test_a_spewing_probe_tool_is_capped_and_does_not_starve_the_loop() -> None:
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        done = await run(["yes", "spew spew spew"], timeout=2, cap=64 << 10)
    finally:
        ticking.cancel()
    assert done.timed_out and done.cut > 10 << 20  # it printed far more than was kept
    assert len(done.stdout) < (64 << 10) + 100 and "bytes cut" in done.stdout
    assert done.stdout.startswith("spew spew spew\n")
    assert max(gaps) < 0.5


async def test_output_of_a_finished_tool_keeps_head_and_tail() -> None:
    script = "import sys; sys.stdout.write('START' + 'x' * 5_000_000 + 'END')"
    done = await run([sys.executable, "-c", script], timeout=30, cap=1000)
    assert done.ok and done.stdout.startswith("START") and done.stdout.endswith("END")
    assert done.cut == 5_000_008 - 1000
    capped = Capped(10)
    for part in (b"abc", b"defgh", b"ijklmnop"):
        capped.add(part)
    assert capped.text() == "abcde\n[... 6 bytes cut ...]\nlmnop"


async def test_a_timed_out_tool_leaves_no_orphan() -> None:
    marker = f"orphan-{uuid.uuid4().hex}"
    script = f"""
import os, subprocess, time
subprocess.Popen(["sleep", "300", "{marker}"])                       # same group
subprocess.Popen(["sleep", "301", "{marker}"], process_group=0)      # a group of its own
if os.fork() == 0:                                                   # a double fork
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "302", "{marker}"])
    os._exit(0)
time.sleep(300)
"""
    started = time.monotonic()
    done = await run([sys.executable, "-c", script, marker], timeout=1.5)
    assert done.timed_out and time.monotonic() - started < 6
    deadline = time.monotonic() + 3
    while alive_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []


async def test_journal_follow_skips_a_giant_line(tmp_path: Path) -> None:
    fake = tmp_path / "journalctl"
    fake.write_text(f"""#!{sys.executable}
import json, sys, time
sys.stdout.write(json.dumps({{"MESSAGE": "x" * 5_000_000, "__CURSOR": "c1"}}) + "\\n")
sys.stdout.write(json.dumps({{"MESSAGE": "after", "__CURSOR": "c2"}}) + "\\n")
sys.stdout.flush()
time.sleep(30)
""")
    fake.chmod(0o755)
    entries = Systemd(journalctl=str(fake)).follow("_SYSTEMD_UNIT=x.service")
    try:
        first = await asyncio.wait_for(anext(entries), 10)
    finally:
        await entries.aclose()  # type: ignore[attr-defined]
    assert first["MESSAGE"] == "after" and first["__CURSOR"] == "c2"


def test_a_process_tree_is_the_process_and_its_descendants():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        family = tree_pids(os.getpid())
        assert os.getpid() in family and child.pid in family
        assert tree_pids(child.pid) == frozenset({child.pid})
    finally:
        child.kill()
        child.wait()
    assert tree_pids(child.pid) == frozenset() and tree_pids(0) == frozenset()
