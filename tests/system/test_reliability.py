"""Reliability under a real systemd: journal-native logs (fields, priorities, readable text),
a closed stdout for the client, bad `since`, and a group member whose group is supplementary."""

from __future__ import annotations

import json

from sandbox import SOCKET, configure, engine_toml, free_port, install, start_daemon, wait_engine


def test_journal_fields_pipes_and_group_members(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port, c=c, faults={"rocm": {"crash_on_start": True}}))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="vulkan", timeout=60)
    c.run(["journalctl", "--sync"])

    # journalctl -u llm-supervisor ENGINE=main finds the daemon's lines about that engine
    out = c.run(["journalctl", "-u", "llm-supervisor", "ENGINE=main", "-o", "json",
                 "--no-pager"]).stdout
    entries = [json.loads(line) for line in out.splitlines()]
    assert entries, "no journal entry carries ENGINE=main"
    assert all(e["ENGINE"] == "main" and e["SYSLOG_IDENTIFIER"] == "llm-supervisord"
               for e in entries)
    assert not any(str(e["MESSAGE"]).lstrip().startswith(("{", "<")) for e in entries)
    demoted = [e for e in entries if str(e["MESSAGE"]).startswith("engine demoted")]
    assert demoted and demoted[0]["TIER"] == "vulkan" and demoted[0]["PRIORITY"] == "4"
    warnings = c.run(["journalctl", "-u", "llm-supervisor", "-p", "warning", "-o", "cat",
                      "--no-pager"]).stdout
    assert "engine demoted engine=main" in warnings
    assert "adopted" not in warnings and " ready " not in f" {warnings} "

    # a closed stdout: no traceback, exit 0
    piped = c.run("set -o pipefail; llm-supervisorctl events -n 0 | head -1", check=False)
    assert piped.returncode == 0 and "Traceback" not in piped.stderr, piped
    assert piped.stdout.count("\n") == 1

    # since must be a time
    bad = c.run(["curl", "-s", "-w", "%{http_code}", "--unix-socket", SOCKET,
                 "http://localhost/v1/events?since=yesterday"]).stdout
    assert bad.endswith("400") and "ISO-8601" in bad

    # a member of the socket group through a supplementary group may read
    c.run("id -u reader >/dev/null 2>&1 || useradd --no-create-home --shell /bin/sh reader")
    c.run(["usermod", "-a", "-G", "llm-supervisor", "reader"])
    c.run(["chmod", "o+x", "/run/llm-supervisor"], check=False)
    read = c.run(["setpriv", "--reuid=reader", "--regid=reader", "--init-groups",
                  "llm-supervisorctl", "status", "--json"], check=False)
    assert read.returncode in (0, 3), read
    assert json.loads(read.stdout)["engines"][0]["name"] == "main"
    denied = c.run(["setpriv", "--reuid=reader", "--regid=reader", "--clear-groups",
                    "llm-supervisorctl", "status"], check=False)
    assert denied.returncode != 0
