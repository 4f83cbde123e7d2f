"""The daemon under a real systemd, supervising simulated engines (docs/contract.md §5, §7, §8)."""

from __future__ import annotations

import json

from sandbox import (
    FAST,
    SOCKET,
    configure,
    engine_toml,
    events,
    free_port,
    http_get,
    install,
    main_pid,
    start_daemon,
    status,
    unit_env,
    wait_engine,
    watch,
)


def test_start_status_over_the_socket_and_curl(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port))
    start_daemon(c)
    assert c.run(["systemctl", "is-active", "llm-supervisor"]).stdout.strip() == "active"
    doc = wait_engine(c, "main", state="healthy", tier="rocm")
    assert doc["unit"] == "llm-main.service" and doc["endpoint"] == f"http://127.0.0.1:{port}"
    whole = json.loads(c.run(["curl", "-sf", "--unix-socket", SOCKET,
                              "http://localhost/v1/status"]).stdout)
    assert whole["api"] == 1 and [e["name"] for e in whole["engines"]] == ["main"]
    assert whole["supervisor"]["config_files"] == ["/etc/llm-supervisor/supervisor.toml"]
    table = c.run(["llm-supervisorctl", "status"])
    assert "main" in table.stdout and "healthy" in table.stdout and "rocm" in table.stdout
    mode = c.run(["stat", "-c", "%a %U %G", SOCKET]).stdout.split()
    assert mode == ["660", "root", "llm-supervisor"]
    assert "main: healthy on rocm" in c.run(
        ["systemctl", "show", "-p", "StatusText", "--value", "llm-supervisor"]).stdout
    tiers = json.loads(c.run(["llm-supervisorctl", "tiers", "--json"]).stdout)
    by_tier = {t["tier"]: t for t in tiers["tiers"]}
    assert by_tier["opencl"]["present"] is False and "clinfo" in by_tier["opencl"]["command"][0]
    engine_choices = {x["tier"]: x for x in tiers["engines"][0]["choices"]}
    assert "no OpenCL backend" in engine_choices["opencl"]["reason"]


def test_crash_on_rocm_ends_healthy_on_vulkan(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port, c=c, faults={"rocm": {"crash_on_start": True}}))
    start_daemon(c)
    doc = wait_engine(c, "main", state="healthy", tier="vulkan", timeout=60)
    assert "rocm" in doc["reason"] or "vulkan" in doc["reason"]
    env = unit_env(c, "llm-main.service")
    assert env["OLLAMA_GPU_DRIVER"] == "vulkan"
    assert env["ROCR_VISIBLE_DEVICES"] == "-1" and env["OLLAMA_LLM_LIBRARY"] == "vulkan"
    assert "library=Vulkan" in c.journal("llm-main.service")
    assert http_get(port)[0] == 200
    tiers = [(e["from"], e["to"]) for e in events(c) if e["type"] == "tier"]
    assert tiers == [(None, "rocm"), ("rocm", "vulkan")], tiers
    # metrics: parse with prometheus-client's own parser; the demotion moved them
    from prometheus_client.parser import text_string_to_metric_families
    text = c.run(["curl", "-sf", "--unix-socket", SOCKET, "http://localhost/metrics"]).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    switch = [v for (name, labels), v in samples.items()
              if name == "llm_supervisor_tier_switches_total"
              and dict(labels).get("to") == "vulkan" and dict(labels).get("from") == "rocm"]
    assert switch == [1.0], switch
    assert samples[("llm_supervisor_engine_tier", (("engine", "main"), ("tier", "vulkan")))] == 1
    assert samples[("llm_supervisor_engine_up", (("engine", "main"),))] == 1
    # logs: a demotion is a warning, so `journalctl -p warning` shows it; keys are fields
    warnings = c.run(["journalctl", "--no-pager", "-p", "warning", "-u", "llm-supervisor",
                      "-o", "json"]).stdout
    demoted = [e for e in map(json.loads, warnings.splitlines())
               if str(e["MESSAGE"]).startswith("engine demoted")]
    assert demoted and demoted[0]["ENGINE"] == "main" and demoted[0]["TIER"] == "vulkan"
    assert demoted[0]["FROM"] == "rocm" and demoted[0]["REASON"]
    infos = c.run(["journalctl", "--no-pager", "-p", "info", "-u", "llm-supervisor",
                   "-o", "cat"]).stdout
    assert "\nready engines=" in f"\n{infos}" and "ready engines=" not in warnings
    c.wait_for(lambda: "demoted from rocm" in c.run(
        ["systemctl", "show", "-p", "StatusText", "--value", "llm-supervisor"]).stdout,
        timeout=35, what="STATUS= saying where the engine came from")


def test_a_single_failed_check_or_a_slow_start_moves_nothing(fresh_container):
    c = fresh_container
    install(c)
    blip, slow = free_port(), free_port()
    configure(c, engine_toml("blip", blip, c=c, faults={"rocm": {"blip_every": 4}})
              + engine_toml("slow", slow, c=c, faults={"rocm": {"start_delay": 5}}))
    start_daemon(c)
    wait_engine(c, "slow", state="healthy", tier="rocm", timeout=40)
    samples = watch(c, "blip", seconds=8)
    assert all(s["tier"] == "rocm" for s in samples), [
        (e["type"], e.get("cause"), e["reason"]) for e in events(c) if e.get("engine") == "blip"]
    assert all(s["state"] in ("starting", "healthy") for s in samples), \
        [(s["state"], s["reason"]) for s in samples]
    assert any(s["consecutive_failures"] == 1 for s in samples) or _blips_seen(c)
    assert status(c, "slow")["tier"] == "rocm"


def _blips_seen(c) -> bool:
    return "HTTP 500" in c.journal("llm-supervisor")


def test_rocm_never_starts_directly_on_vulkan_and_says_why(fresh_container):
    c = fresh_container
    install(c)
    configure(c, engine_toml("main", free_port()),
              settings=FAST.replace('[tiers.rocm]\navailable = "always"',
                                    '[tiers.rocm]\navailable = "never"'))
    start_daemon(c)
    doc = wait_engine(c, "main", state="healthy", tier="vulkan")
    assert "rocm" not in doc["usable_tiers"]
    assert 'available = "never"' in doc["skipped_tiers"]["rocm"]
    assert any("skipped rocm" in e["reason"] for e in events(c))


def test_every_tier_failing_is_failed_with_backoff(fresh_container):
    c = fresh_container
    install(c)
    crash = {"crash_on_start": True}
    configure(c, engine_toml("main", free_port(), c=c,
                             faults={"rocm": crash, "vulkan": crash, "cpu": crash}))
    start_daemon(c)
    doc = wait_engine(c, "main", state="failed", timeout=90)
    assert "every usable tier exhausted" in doc["reason"] and doc["next_retry_at"]
    # it retries from the bottom (cpu), fails again, and waits longer each time
    c.wait_for(lambda: "retry 2" in status(c, "main")["reason"], timeout=90,
               what="a second retry")
    waits = [e["reason"] for e in events(c) if e["type"] == "state" and e["to"] == "failed"]
    assert "retry 1 in 2s" in waits[0] and "retry 2 in 4s" in waits[1], waits
    assert c.run(["llm-supervisorctl", "status"], check=False).returncode == 3


def test_kill_9_and_stop_leave_the_engine_serving(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port, c=c, faults={"rocm": {"crash_on_start": True}}))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="vulkan", timeout=60)
    engine_pid = main_pid(c, "llm-main.service")
    daemon_pid = main_pid(c, "llm-supervisor.service")
    c.run(["kill", "-9", str(daemon_pid)])
    c.wait_for(lambda: main_pid(c, "llm-supervisor.service") not in (0, daemon_pid)
               and c.run(["systemctl", "is-active", "llm-supervisor"], check=False)
               .stdout.strip() == "active", timeout=30, what="systemd restarting the daemon")
    doc = wait_engine(c, "main", state="healthy", tier="vulkan", timeout=30)
    assert main_pid(c, "llm-main.service") == engine_pid, "the engine was restarted"
    assert doc["tier"] == "vulkan"
    c.run(["systemctl", "stop", "llm-supervisor"])
    assert c.run(["systemctl", "is-active", "llm-main.service"]).stdout.strip() == "active"
    assert http_get(port)[0] == 200
    assert main_pid(c, "llm-main.service") == engine_pid
    assert c.run(["llm-supervisorctl", "status"], check=False).returncode == 4


def test_the_control_socket_survives_bad_clients(fresh_container):
    c = fresh_container
    install(c)
    configure(c, engine_toml("main", free_port()))
    start_daemon(c)
    script = r'''
import socket, sys, time
path = "/run/llm-supervisor/control.sock"
def talk(data, shut=True, wait=3.0):
    s = socket.socket(socket.AF_UNIX); s.settimeout(wait); s.connect(path)
    s.sendall(data)
    if shut: s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while chunk := s.recv(65536): out += chunk
    except socket.timeout:
        out += b"<timeout>"
    s.close(); return out.split(b"\r\n", 1)[0].decode()
print("garbage", talk(b"\x00\xff garbage \r\n\r\n"))
half = socket.socket(socket.AF_UNIX); half.connect(path); half.sendall(b"GET /v1/sta")
print("oversized", talk(b"POST /v1/engines/main/pin HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 70000, shut=False))
print("bighead", talk(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 40000 + b"\r\n\r\n"))
print("unknown", talk(b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n"))
print("badjson", talk(b"POST /v1/engines/main/pin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{x}"))
print("next", talk(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
half.close()
'''
    out = c.run(["/usr/bin/env", "python3", "-c", script], timeout=60).stdout
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert lines["garbage"].startswith("HTTP/1.1 400"), out
    assert lines["oversized"].startswith("HTTP/1.1 413"), out
    assert lines["bighead"].startswith(("HTTP/1.1 413", "HTTP/1.1 431", "HTTP/1.1 400")), out
    assert lines["unknown"].startswith("HTTP/1.1 404"), out
    assert lines["badjson"].startswith("HTTP/1.1 400"), out
    assert lines["next"].startswith("HTTP/1.1 200"), out
    assert status(c)["engines"][0]["name"] == "main"
    assert c.run(["systemctl", "is-active", "llm-supervisor"]).stdout.strip() == "active"


def test_status_exit_codes_and_unreachable(fresh_container):
    c = fresh_container
    install(c)
    assert c.run(["llm-supervisorctl", "status"], check=False).returncode == 4
    configure(c, engine_toml("main", free_port()))
    start_daemon(c)
    wait_engine(c, "main", state="healthy")
    assert c.run(["llm-supervisorctl", "status"], check=False).returncode == 0
    assert c.run(["llm-supervisorctl", "status", "nope"], check=False).returncode == 1
    assert c.run(["llm-supervisorctl", "frobnicate"], check=False).returncode == 2


def test_a_vllm_engine_falls_back_to_its_cpu_build(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    c.write("/etc/llm-supervisor/faults-vl.json", json.dumps({"rocm": {"crash_on_start": True}}))
    sim = f"/usr/bin/llm-supervisor-simengine --kind vllm --listen 127.0.0.1:{port}"
    configure(c, f'''
[[engine]]
name = "vl"
kind = "vllm"
model = "Qwen/Qwen2.5-7B-Instruct"
exec = "{sim}"
listen = "127.0.0.1:{port}"
user = "ollama"
group = "ollama"
environment = {{ SIMENGINE_FAULTS = "/etc/llm-supervisor/faults-vl.json" }}
[engine.tiers.cpu]
exec = "{sim} --library cpu"
''')
    start_daemon(c)
    doc = wait_engine(c, "vl", state="healthy", tier="cpu", timeout=60)
    assert doc["usable_tiers"] == ["rocm", "cpu"]
    assert "vllm cannot run on vulkan" in doc["skipped_tiers"]["vulkan"]
    env = unit_env(c, "llm-vl.service")
    assert env["LLM_SUPERVISOR_TIER"] == "cpu" and "OLLAMA_GPU_DRIVER" not in env
    show = c.run(["systemctl", "show", "-p", "ExecStart", "llm-vl.service"]).stdout
    assert "--library" in show and "cpu" in show
    c.wait_for(lambda: (status(c, "vl")["last_check"] or {}).get("tokens_per_second"),
               timeout=20, what="a vLLM canary through /v1/completions")
    assert http_get(port, "/health")[0] == 200
