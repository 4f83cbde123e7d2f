"""What an operator woken at 3 a.m. uses: events, the support bundle (docs/contract.md §10)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import zstandard
from sandbox import configure, engine_toml, free_port, install, start_daemon, wait_engine


def test_events_follow_and_bundle(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port, c=c, faults={"rocm": {"crash_on_start": True}}))
    c.write("/etc/llm-supervisor/conf.d/50-token.toml",  # merged into engine "main"
            '[[engine]]\nname = "main"\nenvironment = { HF_TOKEN = "hf_secret_value_42" }\n')
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="vulkan")

    table = c.run(["llm-supervisorctl", "events", "-n", "5", "--engine", "main"]).stdout
    assert len(table.strip().splitlines()) == 5 and "main" in table
    as_json = [json.loads(line) for line in c.run(
        ["llm-supervisorctl", "events", "-n", "100", "--json"]).stdout.splitlines()]
    assert [e["seq"] for e in as_json] == sorted(e["seq"] for e in as_json)
    assert any(e["type"] == "tier" and e["to"] == "vulkan" for e in as_json)

    # follow: the backlog, then live events as they happen
    follower = subprocess.Popen(
        ["nsenter", "-t", str(c.pid), "-m", "-p", "-u", "-i", "-n",
         "llm-supervisorctl", "events", "-f", "-n", "1", "--json"],
        stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(follower.stdout.readline())
        c.run(["llm-supervisorctl", "restart", "main"])
        live = json.loads(follower.stdout.readline())
        assert live["seq"] > first["seq"]
        assert live["type"] == "operator" and "restart" in live["reason"]
    finally:
        follower.kill()
        follower.wait()
        follower.stdout.close()

    c.run(["llm-supervisorctl", "bundle", "-o", "/root/bundle.tar.zst"])
    listing = c.run(["tar", "--zstd", "-tf", "/root/bundle.tar.zst"]).stdout.split()
    for name in ("config/supervisor.toml", "units/llm-main.service",
                 "units/llm-main.service.d/50-tier.conf", "state.json", "status.json",
                 "tiers.json", "events.jsonl", "journal/main.log", "journal/llm-supervisor.log",
                 "versions.txt"):
        assert f"llm-supervisor-bundle/{name}" in listing, (name, listing)
    texts = unpacked(c, "/root/bundle.tar.zst")
    assert not any("hf_secret_value_42" in text for text in texts.values())
    assert "HF_TOKEN" in texts["llm-supervisor-bundle/config/conf.d/50-token.toml"]
    unit = texts["llm-supervisor-bundle/units/llm-main.service"]
    assert "HF_TOKEN" not in unit and "EnvironmentFile=" in unit  # values live in a 0600 file
    assert "library=Vulkan" in texts["llm-supervisor-bundle/journal/main.log"]
    assert json.loads(texts["llm-supervisor-bundle/status.json"])["engines"][0]["tier"] == \
        "vulkan"
    assert "systemd 252" in texts["llm-supervisor-bundle/versions.txt"]

    # the daemon down: the bundle is read from its files (as root), the same names
    c.run(["systemctl", "stop", "llm-supervisor"])
    done = c.run(["llm-supervisorctl", "bundle", "-o", "/root/down.tar.zst"])
    assert "not reachable" in done.stderr
    listing = c.run(["tar", "--zstd", "-tf", "/root/down.tar.zst"]).stdout.split()
    for name in ("config/supervisor.toml", "units/llm-main.service", "state.json",
                 "status.json", "tiers.json", "events.jsonl", "journal/main.log",
                 "journal/llm-supervisor.log", "journal/kernel.log", "versions.txt"):
        assert f"llm-supervisor-bundle/{name}" in listing, (name, listing)
    down = unpacked(c, "/root/down.tar.zst")
    assert not any("hf_secret_value_42" in text for text in down.values())
    assert "library=Vulkan" in down["llm-supervisor-bundle/journal/main.log"]
    assert '"type": "operator"' in down["llm-supervisor-bundle/events.jsonl"]


def unpacked(c, path: str) -> dict[str, str]:
    """A bundle's files (name -> text), as a maintainer unpacks it."""
    data = c.host_path(path).read_bytes()
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}
