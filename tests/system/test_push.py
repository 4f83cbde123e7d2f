"""Unit state pushed over D-Bus and the one journal reader, against a real systemd (252)."""

from __future__ import annotations

import json
import sys
import time

from sandbox import (
    FAST,
    configure,
    engine_toml,
    events,
    free_port,
    install,
    main_pid,
    start_daemon,
    wait_engine,
)

PYTHON = sys.executable  # the project's venv; the container sees the host's /opt

ADAPTER = r'''
import asyncio, json, subprocess, sys, time
from llm_supervisor.systemd.dbus import BusSystemd
from llm_supervisor.errors import SystemdError

UNIT = sys.argv[1]

def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()

async def main():
    out = {}
    sd = BusSystemd(call_timeout=5, job_timeout=30)
    out["connected"] = await sd.connect()
    out["describe"] = sd.describe()
    changes = []
    sd.on_change = lambda unit: changes.append((unit, time.monotonic()))
    await sd.daemon_reload()
    await sd.start(UNIT)
    for _ in range(50):
        st = await sd.status(UNIT)
        if st.running:
            break
        await asyncio.sleep(0.1)
    out["running"] = [st.active_state, st.sub_state, st.main_pid > 0, st.n_restarts,
                      type(st.main_pid).__name__, st.raw.get("NeedDaemonReload")]
    out["same_as_systemctl"] = st.main_pid == int(sh("systemctl", "show", "-p", "MainPID",
                                                     "--value", UNIT))
    changes.clear()
    killed = time.monotonic()
    sh("systemctl", "kill", "-s", "KILL", UNIT)
    for _ in range(100):
        if changes:
            break
        await asyncio.sleep(0.02)
    out["pushed_after"] = changes[0][1] - killed if changes else None
    out["pushed_unit"] = changes[0][0] if changes else None
    crashed = await sd.status(UNIT)
    out["crashed"] = [crashed.active_state, crashed.sub_state, crashed.exec_main_status,
                      crashed.result]
    for _ in range(100):  # RestartSec=1
        st = await sd.status(UNIT)
        if st.running and st.n_restarts >= 1:
            break
        await asyncio.sleep(0.1)
    out["restarted"] = [st.running, st.n_restarts]
    await sd.restart(UNIT)
    await sd.stop(UNIT)  # waits for the job (JobRemoved)
    stopped = await sd.status(UNIT)
    out["stopped"] = [stopped.active_state, stopped.sub_state]
    await sd.reset_failed(UNIT)
    missing = await sd.status("llm-no-such-engine.service")
    out["missing"] = [missing.load_state, missing.active_state]
    try:
        await sd.stop("llm-no-such-engine.service")
        out["stop_missing"] = "no error"
    except SystemdError as exc:
        out["stop_missing"] = str(exc)
    await sd.close()

    # no bus: every method falls back to systemctl, and says so
    away = BusSystemd(bus_address="unix:path=/run/no-such-bus", retry=3600)
    out["away_connected"] = await away.connect()
    out["away_describe"] = away.describe()
    await away.start(UNIT)
    st = await away.status(UNIT)
    out["away_status"] = [st.name, st.active_state in ("active", "activating")]
    await away.stop(UNIT)
    await away.close()
    print(json.dumps(out))

asyncio.run(main())
'''


def test_dbus_adapter_reads_pushes_and_acts(container):
    c = container
    unit = "llm-push-probe.service"
    c.write(f"/etc/systemd/system/{unit}", "[Service]\nExecStart=/bin/sleep infinity\n"
            "Restart=on-failure\nRestartSec=1\n")
    try:
        done = c.run([PYTHON, "-c", ADAPTER, unit], timeout=120)
        out = json.loads(done.stdout.splitlines()[-1])
    finally:
        c.run(["systemctl", "stop", unit], check=False)
        c.run(["rm", "-f", f"/etc/systemd/system/{unit}"])
        c.run(["systemctl", "daemon-reload"])
    assert out["connected"] is True and out["describe"] == "dbus"
    assert out["running"] == ["active", "running", True, 0, "int", "no"]
    assert out["same_as_systemctl"] is True
    # the crash is pushed, not found at the next interval
    assert out["pushed_unit"] == unit
    assert out["pushed_after"] is not None and out["pushed_after"] < 1.0, out
    assert out["crashed"][0] in ("activating", "failed") and out["crashed"][3] == "signal"
    assert out["restarted"] == [True, 1]
    assert out["stopped"] == ["inactive", "dead"]
    assert out["missing"] == ["not-found", "inactive"]
    assert "NoSuchUnit" in out["stop_missing"] or "not loaded" in out["stop_missing"]
    assert out["away_connected"] is False
    assert out["away_describe"].startswith("systemctl (cannot connect to the system bus")
    assert out["away_status"] == [unit, True]


READER = r'''
import asyncio, json, sys
from llm_supervisor.systemd.journal import JournalReader
from llm_supervisor.systemd.systemctl import Systemd

async def collect(units, cursor, since, seconds, add_later=None):
    got, pids = {}, {}
    reader = JournalReader(Systemd(), cursor=cursor, since=since)
    for unit in units:
        reader.add_unit(unit, lambda m, c, r, p, u=unit: (got.setdefault(u, []).append(m),
                                                          pids.setdefault(u, set()).add(p)))
    reader.set_kernel("_TRANSPORT=kernel", lambda m, c, r, p: None)
    task = asyncio.create_task(reader.run())
    await asyncio.sleep(seconds)
    if add_later:
        reader.add_unit(add_later, lambda m, c, r, p: got.setdefault(add_later, []).append(m))
        await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return got, {u: sorted(p, key=str) for u, p in pids.items()}, reader.cursor, reader.restarts

mode, cursor, since, seconds, *units = sys.argv[1:]
add_later = None
if mode == "add":
    add_later = units.pop()
got, pids, cursor, restarts = asyncio.run(collect(units, cursor or None, float(since),
                                                  float(seconds), add_later))
print(json.dumps({"got": got, "pids": pids, "cursor": cursor, "restarts": restarts}))
'''


def _emitter(c, unit: str, count: int, delay: float) -> None:
    c.run(["systemd-run", f"--unit={unit}", "--service-type=exec", "/bin/sh", "-c",
           f"for i in $(seq 1 {count}); do echo {unit}:$i; sleep {delay}; done"])


def _read(c, mode: str, cursor: str, since: float, seconds: float, *units: str) -> dict:
    done = c.run([PYTHON, "-c", READER, mode, cursor, str(since), str(seconds), *units],
                 timeout=120)
    return json.loads(done.stdout.splitlines()[-1])


def test_one_journal_reader_routes_and_resumes_without_loss_or_repeat(container):
    c = container
    since = float(c.run(["date", "+%s"]).stdout.strip()) - 1
    a, b, late = (f"llm-jr-{x}-{time.monotonic_ns()}.service" for x in ("a", "b", "late"))
    _emitter(c, a, 60, 0.05)
    _emitter(c, b, 60, 0.05)
    # first reader: stopped part-way through both units' output
    first = _read(c, "plain", "", since, 1.2, a, b)
    # the second resumes from the one cursor; a third unit is added while it runs
    _emitter(c, late, 20, 0.02)
    second = _read(c, "add", first["cursor"], since, 3, a, b, late)
    assert second["restarts"] == 2  # started, then restarted for the added unit
    for unit in (a, b):
        lines = first["got"].get(unit, []) + second["got"].get(unit, [])
        assert 0 < len(first["got"].get(unit, [])) < 60, first  # the cut was mid-stream
        assert lines == [f"{unit}:{i}" for i in range(1, 61)], lines
    assert second["got"][late] == [f"{late}:{i}" for i in range(1, 21)]
    assert not set(first["got"]) - {a, b}
    # each line says which process wrote it (the shell that echoes: one PID a unit)
    for unit in (a, b):
        assert len(first["pids"][unit]) == 1 and isinstance(first["pids"][unit][0], int)
    assert first["pids"][a] != first["pids"][b]


CRASHY = """
[health]
interval = "30s"
timeout = "1s"
failures = 1
startup_grace = "8s"
canary_every = 0

[fallback]
restarts_per_tier = 5
promote_after = "0"

[tiers.rocm]
available = "always"
[tiers.vulkan]
available = "always"
"""


def test_a_crash_is_acted_on_at_once_not_at_the_next_interval(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port), settings=FAST.split("[health]")[0] + CRASHY)
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=90)
    assert json.loads(c.run(["llm-supervisorctl", "status", "--json"]).stdout)[
        "supervisor"]["systemd"] == "dbus"
    before = len(events(c))
    time.sleep(1)
    killed = time.monotonic()
    c.run(["kill", "-9", str(main_pid(c, "llm-main.service"))])

    def noticed():
        new = [e for e in events(c)[before:] if e.get("engine") == "main"
               and e["type"] == "state" and e.get("from") == "healthy"]
        return new or None

    seen = c.wait_for(noticed, timeout=25, interval=0.2, what="the crash acted on")
    took = time.monotonic() - killed
    assert took < 5, (took, seen)  # the interval is 30 s
    assert "not running" in seen[0]["reason"] or "restarted" in seen[0]["reason"], seen
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
