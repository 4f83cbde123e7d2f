"""Reconfiguration without downtime (docs/contract.md §7): file edits, `systemctl reload`, SIGHUP."""

from __future__ import annotations

import time

import pytest
from sandbox import (
    CONFIG,
    FAST,
    configure,
    engine_toml,
    events,
    free_port,
    install,
    main_pid,
    process_env,
    start_daemon,
    status,
    wait_engine,
)

NO_WATCH = FAST.replace("[supervisor]\n", "[supervisor]\nwatch_config = false\n")


def names(c) -> list[str]:
    return [e["name"] for e in status(c)["engines"]]


def units_on_disk(c) -> dict[str, str]:
    out = c.run(["sh", "-c", "for f in /etc/systemd/system/llm-*.service "
                 "/etc/systemd/system/llm-*.service.d/*; do [ -f \"$f\" ] && "
                 "echo \"$f $(sha256sum < \"$f\" | cut -c1-16)\"; done"]).stdout
    return dict(line.split() for line in out.splitlines())


def test_add_change_remove_by_systemctl_reload(fresh_container):
    c = fresh_container
    install(c)
    ports = {n: free_port() for n in ("keep", "change", "gone", "new")}
    configure(c, "".join(engine_toml(n, ports[n]) for n in ("keep", "change", "gone")),
              NO_WATCH)
    start_daemon(c)
    for n in ("keep", "change", "gone"):
        wait_engine(c, n, state="healthy")
    pids = {n: main_pid(c, f"llm-{n}.service") for n in ("keep", "change")}
    configure(c, engine_toml("keep", ports["keep"])
              + engine_toml("change", ports["change"],
                            extra='environment = { OLLAMA_NUM_PARALLEL = "2" }')
              + engine_toml("new", ports["new"]), NO_WATCH)
    done = c.run(["systemctl", "reload", "llm-supervisor"], check=False)
    assert done.returncode == 0, done.stderr
    wait_engine(c, "new", state="healthy")
    wait_engine(c, "change", state="healthy")
    assert sorted(names(c)) == ["change", "keep", "new"]
    assert main_pid(c, "llm-keep.service") == pids["keep"]  # untouched: not restarted
    assert main_pid(c, "llm-change.service") != pids["change"]
    # engine values live in the root-only environment file, not in `systemctl show`
    assert process_env(c, "llm-change.service")["OLLAMA_NUM_PARALLEL"] == "2"
    assert c.run(["test", "-e", "/etc/systemd/system/llm-gone.service"],
                 check=False).returncode == 1
    assert c.run(["systemctl", "is-active", "llm-gone.service"], check=False).stdout.strip() \
        in ("inactive", "unknown")
    applied = [e for e in events(c) if e["type"] == "reload" and e["to"] == "applied"][-1]
    assert applied["evidence"]["added"] == ["new"] and applied["evidence"]["removed"] == ["gone"]
    assert applied["evidence"]["changed"] == ["change"]
    # SIGHUP takes the same path
    c.write(CONFIG, NO_WATCH + engine_toml("keep", ports["keep"]))
    c.run(["systemctl", "kill", "-s", "HUP", "--kill-who=main", "llm-supervisor"])
    c.wait_for(lambda: names(c) == ["keep"], timeout=30, what="SIGHUP reload")
    assert main_pid(c, "llm-keep.service") == pids["keep"]


def test_file_edits_reload_by_themselves(fresh_container):
    c = fresh_container
    install(c)
    a, b = free_port(), free_port()
    configure(c, engine_toml("a", a))
    start_daemon(c)
    wait_engine(c, "a", state="healthy")
    pid = main_pid(c, "llm-a.service")
    c.write("/etc/llm-supervisor/conf.d/50-b.toml", engine_toml("b", b))
    wait_engine(c, "b", state="healthy", timeout=30)
    c.run(["rm", "/etc/llm-supervisor/conf.d/50-b.toml"])
    c.wait_for(lambda: names(c) == ["a"], timeout=30, what="b removed after the file went")
    assert main_pid(c, "llm-a.service") == pid


BAD = {
    "broken TOML": "[[engine]\nname = \"x\"\n",
    "unknown key": '[[engine]]\nname = "main"\nlistne = "127.0.0.1:1"\n',
    "duplicate name": '[[engine]]\nname = "dup"\n[[engine]]\nname = "dup"\n',
    "injection": '[[engine]]\nname = "main"\nenvironment = { X = "1\\nExecStartPre=/bin/sh -c evil" }\n',
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_config_is_refused_loudly_and_the_running_one_serves_on(fresh_container, kind):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port), NO_WATCH)
    start_daemon(c)
    wait_engine(c, "main", state="healthy")
    pid = main_pid(c, "llm-main.service")
    before = units_on_disk(c)
    c.write("/etc/llm-supervisor/conf.d/90-bad.toml", BAD[kind])
    done = c.run(["systemctl", "reload", "llm-supervisor"], check=False)
    assert done.returncode != 0
    journal = c.journal("llm-supervisor")
    assert "90-bad.toml" in journal and "config rejected" in journal
    doc = status(c)
    assert doc["supervisor"]["config_error"] and any(
        "90-bad.toml" in p for p in doc["supervisor"]["config_error"])
    assert units_on_disk(c) == before  # nothing was written
    assert main_pid(c, "llm-main.service") == pid
    assert wait_engine(c, "main", state="healthy")["tier"] == "rocm"
    ctl = c.run(["llm-supervisorctl", "reload"], check=False)
    assert ctl.returncode == 1 and "90-bad.toml" in ctl.stderr
    c.run(["rm", "/etc/llm-supervisor/conf.d/90-bad.toml"])
    c.run(["systemctl", "reload", "llm-supervisor"])
    assert status(c)["supervisor"]["config_error"] is None


def test_ten_rapid_edits_end_in_one_consistent_state(fresh_container):
    c = fresh_container
    install(c)
    ports = [free_port() for _ in range(10)]
    configure(c, engine_toml("e0", ports[0]))
    start_daemon(c)
    wait_engine(c, "e0", state="healthy")
    for i in range(1, 10):  # each edit replaces the engine list with e0..e{i}
        configure(c, "".join(engine_toml(f"e{j}", ports[j]) for j in range(0, i + 1, 3)))
        time.sleep(0.05)
    final = [f"e{j}" for j in range(0, 10, 3)]
    c.wait_for(lambda: sorted(names(c)) == final and all(
        e["state"] == "healthy" for e in status(c)["engines"]), timeout=60,
        what=f"engines {final} healthy")
    time.sleep(2)  # and it stays so
    assert sorted(names(c)) == final
    on_disk = sorted(p.split("/")[-1] for p in units_on_disk(c)
                     if p.endswith(".service") and "llm-e" in p)
    assert on_disk == sorted(f"llm-{n}.service" for n in final)
    active = c.run(["sh", "-c", "systemctl list-units --no-legend --state=active 'llm-e*'"
                    " | awk '{print $1}'"]).stdout.split()
    assert sorted(active) == sorted(f"llm-{n}.service" for n in final)
