"""A full state disk never stops supervision (issue: ENOSPC from the event log aborted every
decision): the demotion happens, status says the supervisor is degraded, and the events kept
in memory meanwhile land in order once space returns."""

from __future__ import annotations

from sandbox import (
    configure,
    engine_toml,
    events,
    free_port,
    install,
    start_daemon,
    status,
    wait_engine,
)

STATE_DIR = "/var/lib/llm-supervisor"


def test_a_full_state_disk_does_not_stop_a_demotion(fresh_container):
    c = fresh_container
    install(c)
    c.run(f"mkdir -p {STATE_DIR} && mount -t tmpfs -o size=1m tmpfs {STATE_DIR}")
    configure(c, engine_toml("main", free_port(), c=c, faults={"rocm": {"hang_after": 8}}))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm")
    c.run(f"dd if=/dev/zero of={STATE_DIR}/filler bs=4k 2>/dev/null; true")
    assert "No space left" in c.run(f"echo x > {STATE_DIR}/probe", check=False).stderr
    doc = wait_engine(c, "main", state="healthy", tier="vulkan", timeout=60)
    assert doc["demoted_from"] == "rocm"
    degraded = status(c)["supervisor"]["degraded"]
    assert degraded and "No space left" in degraded, degraded
    c.run(["rm", f"{STATE_DIR}/filler"])
    c.run(["llm-supervisorctl", "reload"])  # an event: the backlog goes first, in order
    c.wait_for(lambda: status(c)["supervisor"]["degraded"] is None, timeout=30,
               what="the supervisor writing its records again")
    history = events(c)
    seqs = [e["seq"] for e in history]
    assert seqs == sorted(seqs) and all(b == a + 1 for a, b in zip(seqs, seqs[1:], strict=False))
    moves = [(e["from"], e["to"], e["cause"]) for e in history if e["type"] == "tier"]
    assert ("rocm", "vulkan", "hang") in moves, moves
    assert status(c)["supervisor"]["events_dropped"] == 0
