"""``llm-supervisorctl events`` as journalctl's users expect: ``--since``/``--until`` with
relative times and journalctl's words, local time by default and ``--utc``, ``--type``, and
every argument checked in the client (exit 2, one line naming it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from llm_supervisor.control.cli import _times_joined, cli
from llm_supervisor.records.history import EventLog
from llm_supervisor.timefmt import local, utc, when

NOW = 1_765_000_000.0  # 2025-12-06T05:46:40Z


def test_when_takes_what_journalctl_takes() -> None:
    midnight = datetime.fromtimestamp(NOW).replace(hour=0, minute=0, second=0, microsecond=0)
    assert when("now", NOW) == NOW
    assert when("today", NOW) == midnight.timestamp()
    assert when("yesterday", NOW) == midnight.timestamp() - 86400 or \
        abs(when("yesterday", NOW) - (midnight.timestamp() - 86400)) <= 3600  # a DST day
    assert when("-1h", NOW) == NOW - 3600 and when("+5min", NOW) == NOW + 300
    assert when("2 hours ago", NOW) == NOW - 7200 and when("1h 30min ago", NOW) == NOW - 5400
    assert when("-1d2h", NOW) == NOW - 93600 and when("@1700000000", NOW) == 1_700_000_000
    assert when("2025-12-06T05:46:40Z", NOW) == NOW
    assert when("2025-12-06 06:46:40+01:00", NOW) == NOW
    naive = datetime(2025, 12, 6, 8, 0).timestamp()  # a local time, as journalctl reads it
    assert when("2025-12-06 08:00", NOW) == naive
    for bad in ("blah", "5", "1 fortnight ago", "", "-h", "2025-13-01"):
        with pytest.raises(ValueError):
            when(bad, NOW)


def test_times_are_local_unless_asked_for_utc() -> None:
    iso = utc(NOW)
    assert local(iso) == time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(NOW))
    assert local("not a time") == "not a time"


def test_a_time_option_takes_a_value_that_starts_with_a_dash() -> None:
    assert _times_joined(["events", "--since", "-1h", "-U", "-5min", "-n", "3"]) == \
        ["events", "--since=-1h", "-U-5min", "-n", "3"]


@pytest.mark.parametrize("argv, names", [
    (["events", "-n", "abc"], "-n/--lines"),
    (["events", "-n", "-3"], "-n/--lines"),
    (["events", "--since", "blah"], "-S/--since"),
    (["events", "--until", "5"], "-U/--until"),
    (["events", "--type", "State!"], "-t/--type"),
    (["advise", "--params", "abc"], "--params"),
    (["advise", "--params", "7B", "--layers", "-3"], "--layers"),
    (["status", "-o", "tall"], "-o/--output"),
])
def test_a_bad_argument_is_one_line_naming_it_and_exit_2(argv, names, capsys) -> None:
    assert cli(["--socket", "/nonexistent.sock", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument {names}" in err[0], err


class Inline:
    async def run(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        return fn(*args, **kwargs)


def test_events_since_until_type_and_time_zone(tmp_path: Path) -> None:
    """Through the real /v1/events over a socket: the client's filters on the daemon's
    answer, the last N of what matches; local time unless --utc."""
    log = EventLog(tmp_path / "events")
    now = time.time()
    for minutes, kind in ((180, "state"), (125, "tier"), (90, "state"), (30, "reload"),
                          (10, "state")):
        log.clock = lambda minutes=minutes: now - minutes * 60  # type: ignore[method-assign]
        log.append(kind, engine="main", to="x", reason=f"{minutes}m before")
    sock = tmp_path / "c.sock"
    script = f"""
import asyncio, sys
from pathlib import Path
sys.path[:0] = {sys.path!r}
from llm_supervisor.control import handlers
from llm_supervisor.control.server import ControlServer, Router
from llm_supervisor.records.history import EventLog
from types import SimpleNamespace
class Inline:
    async def run(self, fn, *a, **k):
        return fn(*a, **k)
async def main():
    router = Router()
    real = handlers.routes(SimpleNamespace(events=EventLog(Path({str(tmp_path / "events")!r})),
                                           disk=Inline()))
    router.routes += [r for r in real.routes if "/".join(r[1]) == "v1/events"]
    server = ControlServer(router, Path({str(sock)!r}))
    await server.start()
    await asyncio.sleep(60)
asyncio.run(main())
"""
    daemon = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.05)

        def run(*argv: str) -> list[str]:
            done = subprocess.run([sys.executable, "-m", "llm_supervisor.control.cli",
                                   "--socket", str(sock), "events", *argv],
                                  capture_output=True, text=True,
                                  env={**os.environ, "TZ": "Europe/Berlin"})
            assert done.returncode == 0, done.stderr
            return done.stdout.splitlines()

        assert [line.split("  ")[-1] for line in run("--since", "-2h", "--utc")] == [
            "90m before", "30m before", "10m before"]
        assert [x.split("  ")[-1] for x in run("-S", "-2h", "-U", "-20min", "--utc")] == [
            "90m before", "30m before"]
        assert [x.split("  ")[-1] for x in run("--type", "state", "-n", "2", "--utc")] == [
            "90m before", "10m before"]
        assert [x.split("  ")[-1] for x in run("-t", "tier,reload", "--utc")] == [
            "125m before", "30m before"]
        berlin = run("-n", "1")[0]
        assert berlin.startswith(datetime.fromtimestamp(now - 600).strftime("%Y-%m-%d")) \
            and (" CET " in berlin or " CEST " in berlin), berlin
        assert "Z " in run("-n", "1", "--utc")[0]
        assert json.loads(run("-n", "1", "--json")[0])["reason"] == "10m before"
    finally:
        daemon.kill()
        daemon.wait()
