"""The operator's hand under a real systemd: `systemctl stop` of an engine is held stopped
(never restarted, counted or demoted), across a daemon restart, until `systemctl start`;
`systemctl restart` is a fresh start, no fault; `llm-supervisorctl stop|start`; a kill -9
stays a crash."""

from __future__ import annotations

import time

from sandbox import (
    configure,
    engine_toml,
    events,
    free_port,
    http_get,
    install,
    main_pid,
    start_daemon,
    wait_engine,
    watch,
)

from llm_supervisor import __version__

UNIT = "llm-main.service"


def active(c, unit: str = UNIT) -> str:
    return c.run(["systemctl", "is-active", unit], check=False).stdout.strip()


def test_an_operators_stop_and_restart_are_never_fought(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=90)
    version = c.run(["llm-supervisorctl", "--version"]).stdout.splitlines()
    assert version == [f"llm-supervisorctl {__version__}", f"llm-supervisord {__version__}"]

    # systemctl stop: held stopped, well past failures x interval, the grace and a restart
    c.run(["systemctl", "stop", UNIT])
    doc = wait_engine(c, "main", state="stopped", timeout=30)
    assert doc["stopped_by"] == doc["reason"] and "systemctl stop" in doc["reason"]
    assert doc["reason"].startswith("stopped outside the daemon: ")
    samples = watch(c, "main", 15)
    assert {s["state"] for s in samples} == {"stopped"}, samples
    assert active(c) == "inactive" and doc["tier"] == "rocm"
    # ... and across a daemon restart
    c.run(["systemctl", "restart", "llm-supervisor"])
    time.sleep(5)
    assert active(c) == "inactive"
    assert wait_engine(c, "main", state="stopped", timeout=30)["tier"] == "rocm"
    # systemctl start: supervised again, healthy on the tier it had
    c.run(["systemctl", "start", UNIT])
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)

    # systemctl restart: a fresh start, no fault
    before = main_pid(c, UNIT)
    c.run(["systemctl", "restart", UNIT])
    c.wait_for(lambda: [e for e in events(c) if e["type"] == "restart"], timeout=30,
               what="the restart outside the daemon seen")
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
    assert main_pid(c, UNIT) != before

    # llm-supervisorctl stop / start
    assert c.run(["llm-supervisorctl", "stop", "main"]).returncode == 0
    wait_engine(c, "main", state="stopped", timeout=30)
    assert active(c) == "inactive"
    refused = c.run(["llm-supervisorctl", "restart", "main"], check=False)
    assert refused.returncode != 0 and "start it first" in refused.stderr
    assert c.run(["llm-supervisorctl", "start", "main"]).returncode == 0
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
    assert http_get(port)[0] == 200

    history = events(c)
    moves = [e for e in history if e["type"] == "tier"]
    assert [e["to"] for e in moves] == ["rocm"], moves  # never demoted
    faults = [e for e in history if e["type"] == "state" and e.get("cause") == "crash"]
    assert not faults, faults
    stops = [e for e in history if e["type"] == "state" and e["to"] == "stopped"]
    assert [e["cause"] for e in stops] == ["stopped", "operator"], stops
    assert [e for e in history if e["type"] == "restart" and e["cause"] == "operator"], \
        "\n".join(f'{e["type"]} {e.get("to")} {e.get("reason")}' for e in history[-14:])

    # a kill -9 stays a crash: systemd restarts it, the daemon counts a failed check
    since = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
    c.run(["kill", "-9", str(main_pid(c, UNIT))])

    def crash_counted() -> bool:
        journal = c.run(["journalctl", "-u", "llm-supervisor", "--since", since, "-o", "cat"],
                        check=False).stdout
        return any("check failed" in line and "cause=crash" in line
                   for line in journal.splitlines())

    c.wait_for(crash_counted, timeout=30, what="the kill -9 counted as a crash")
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
