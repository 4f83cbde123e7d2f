"""Every decision names its true cause (docs/contract.md §5), under a real systemd: what no
tier change can fix blocks instead of demoting, the backend in use is what the engine reports,
promotions go on probation, and facts expire with the boot they belong to."""

from __future__ import annotations

import json
import time

from sandbox import (
    FAST,
    configure,
    engine_toml,
    events,
    free_port,
    install,
    start_daemon,
    status,
    wait_engine,
    watch,
)

from llm_supervisor.timefmt import epoch

SIM = "/usr/bin/llm-supervisor-simengine serve"


def at(event: dict) -> float:
    return epoch(event["ts"])


def tier_events(c, engine: str) -> list[dict]:
    return [e for e in events(c) if e["type"] == "tier" and e.get("engine") == engine]


def test_causes_no_tier_fixes_block_and_the_backend_in_use_is_checked(fresh_container):
    c = fresh_container
    install(c)
    normalised_port = free_port()
    c.write("/etc/llm-supervisor/faults-normalised.json",
            json.dumps({"rocm": {"no_offload": True}}))
    configure(c,
              engine_toml("missing", free_port(), c=c, faults={"*": {"missing_model": True}})
              + engine_toml("pulled", free_port(), c=c, extra="pull = true\n",
                            faults={"*": {"missing_model": True, "pull_seconds": 2}})
              + engine_toml("mi50", free_port(), c=c, faults={"rocm": {"drops_rocm": "gfx906"}})
              + engine_toml("apu", free_port(), c=c, faults={"rocm": {"drops_igpu": True}})
              # the config says "qwen2.5"; the engine (and /api/ps) say "qwen2.5:latest"
              + f'[[engine]]\nname = "normalised"\nexec = "{SIM} --model qwen2.5:latest"\n'
                f'listen = "127.0.0.1:{normalised_port}"\nmodel = "qwen2.5"\n'
                'environment = { SIMENGINE_FAULTS = "/etc/llm-supervisor/faults-normalised'
                '.json" }\n')
    start_daemon(c)

    # a model not pulled yet: blocked with the hint, no tier change, no GPU blamed
    missing = wait_engine(c, "missing", state="blocked")
    assert missing["cause"] == "model_missing" and missing["tier"] == "rocm"
    assert missing["fix"].startswith("ollama pull qwen2.5:7b-instruct")
    assert missing["next_retry_at"]
    # pull = true: pulled through the engine's API, then healthy on the same tier
    pulled = wait_engine(c, "pulled", state="healthy", tier="rocm")
    assert pulled["pull"]["status"] == "success"
    # this Ollama build dropped the MI50's ROCm device and ran on Vulkan: rocm is skipped
    mi50 = wait_engine(c, "mi50", state="healthy", tier="vulkan")
    assert mi50["backend"] == "Vulkan: AMD Instinct MI50 (RADV VEGA20)"
    skipped = mi50["skipped_tiers"]["rocm"]
    assert "dropped the ROCm device" in skipped and "gfx906" in skipped, skipped
    assert "rocm" not in mi50["usable_tiers"]
    # an iGPU dropped beside a kept card: stays on rocm
    apu = wait_engine(c, "apu", state="healthy", tier="rocm")
    assert apu["backend"] == "ROCm: AMD Instinct MI50"
    assert set(apu["derived_environment"]) == {"OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS"}
    # "qwen2.5" is "qwen2.5:latest": its size_vram 0 is caught
    wait_engine(c, "normalised", state="healthy", tier="vulkan")

    later = watch(c, "apu", 4) + watch(c, "missing", 1)
    assert all(s["tier"] == "rocm" for s in later), later
    history = events(c)
    for name in ("missing", "pulled", "apu"):
        assert [e["to"] for e in tier_events(c, name)] == ["rocm"], tier_events(c, name)
    assert not [e for e in history if e["type"] == "operator"]
    assert [e["to"] for e in history if e["type"] == "pull" and e["engine"] == "pulled"][-1] \
        == "success"
    mi50_moves = tier_events(c, "mi50")
    assert [(e["to"], e["cause"]) for e in mi50_moves] == [("rocm", "start"),
                                                           ("vulkan", "backend_mismatch")]
    assert not [e for e in history if e["engine"] == "mi50" and e["type"] == "state"
                and e["to"] == "healthy" and e["tier"] == "rocm"]  # never reported as rocm
    normalised = tier_events(c, "normalised")
    assert [(e["to"], e["cause"]) for e in normalised] == [("rocm", "start"),
                                                           ("vulkan", "placement")]
    # the metrics label is the cause, as data; the blocked engine shows as blocked (between
    # two of its retries: a retry is a moment in "starting" while the canary asks again)
    def metrics() -> str:
        return c.run(["curl", "-s", "--unix-socket", "/run/llm-supervisor/control.sock",
                      "http://localhost/metrics"]).stdout
    assert 'cause="backend_mismatch",engine="mi50"' in metrics()
    c.wait_for(lambda: 'llm_supervisor_engine_state{engine="missing",state="blocked"} 1.0'
               in metrics(), timeout=30, what="the blocked engine in the metrics")


def test_a_port_held_by_another_unit_blocks_naming_it_then_clears(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    c.write("/etc/systemd/system/ollama.service",  # the stock unit, as install.sh writes it
            f"[Unit]\nDescription=Ollama Service\n[Service]\nExecStart={SIM} --listen "
            f"127.0.0.1:{port}\nRestart=always\nRestartSec=3\n[Install]\n"
            "WantedBy=multi-user.target\n")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", "ollama.service"])
    configure(c, engine_toml("main", port))
    start_daemon(c)
    doc = wait_engine(c, "main", state="blocked")
    assert doc["cause"] == "port_in_use" and doc["tier"] == "rocm"
    assert "ollama.service" in doc["reason"] and "pid" in doc["reason"]
    assert "systemctl disable --now ollama.service" in doc["fix"]
    assert [e["to"] for e in tier_events(c, "main")] == ["rocm"]  # no demotion
    summary = c.run(["systemctl", "show", "-p", "StatusText", "--value",
                     "llm-supervisor"]).stdout
    assert "main: blocked on rocm: port in use" in summary
    c.run(["systemctl", "stop", "ollama.service"])
    doc = wait_engine(c, "main", state="healthy", tier="rocm", timeout=30)
    assert doc["cause"] == "recovered"
    assert [e["to"] for e in tier_events(c, "main")] == ["rocm"]


def test_a_flapping_rocm_path_is_promoted_less_and_less_often(fresh_container):
    """ROCm works for 2 s after each start, then its generations fail with GPU errors: every
    promotion fails on probation, so the waits double (3, 6, 12, 24 s)."""
    c = fresh_container
    install(c)
    settings = FAST.replace('promote_after = "0"', 'promote_after = "3s"\nprobation = "60s"'
                            '\npromote_backoff = 2.0')
    configure(c, engine_toml("main", free_port(), c=c,
                             faults={"rocm": {"gpu_errors_after": 2}}), settings)
    start_daemon(c)
    time.sleep(50)
    switches = tier_events(c, "main")
    promotions = [e for e in switches if e["cause"] == "promotion"]
    failed = [e for e in events(c) if e["engine"] == "main" and e["type"] == "state"
              and e.get("cause") == "promotion_failed"]
    stamps = [at(e) for e in promotions]
    # each wait, from a failed promotion (back to vulkan) to the next try: the engine's own
    # start and how soon the fault shows are not part of it
    backs = [at(e) for e in switches if e["cause"] == "promotion_failed"]
    gaps = [p - b for b, p in zip(backs, stamps[1:], strict=False)]
    assert len(promotions) >= 3 and failed, (promotions, failed)
    assert len(gaps) >= 2 and all(later >= earlier * 1.5 for earlier, later in zip(
        gaps, gaps[1:], strict=False)), gaps
    first_half = sum(1 for s in stamps if s - stamps[0] < 20)
    assert first_half > len(stamps) - first_half  # fewer promotions as time goes on


def test_reboot_required_clears_when_the_boot_changes(fresh_container):
    c = fresh_container
    install(c)
    c.write("/etc/llm-supervisor/boot_id", "11111111-aaaa\n")
    settings = FAST + '\n[logs]\nkernel_match = "SYSLOG_IDENTIFIER=kernel-test"\n'
    settings = settings.replace('[supervisor]\n', '[supervisor]\nboot_id_path = '
                                '"/etc/llm-supervisor/boot_id"\n')
    configure(c, engine_toml("main", free_port()), settings)
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm")
    c.run(["logger", "-t", "kernel-test", "amdgpu 0000:03:00.0: amdgpu: GPU Recovery Failed:"
           " -22"])
    doc = wait_engine(c, "main", state="healthy", tier="cpu")
    assert doc["reboot_required"] and doc["usable_tiers"] == ["cpu"]
    c.run(["systemctl", "restart", "llm-supervisor"])  # the same boot: still required
    assert status(c, "main")["reboot_required"]
    c.write("/etc/llm-supervisor/boot_id", "22222222-bbbb\n")  # the host rebooted
    c.run(["systemctl", "restart", "llm-supervisor"])
    doc = status(c, "main")
    assert not doc["reboot_required"] and "rocm" in doc["usable_tiers"]
    assert [e["to"] for e in events(c) if e["type"] == "reboot"] == ["done"]


def test_a_failed_engine_is_retried_after_the_daemon_is_killed(fresh_container):
    c = fresh_container
    install(c)
    configure(c, engine_toml("main", free_port(), c=c, extra='chain = ["rocm"]\n',
                             faults={"rocm": {"crash_on_start": True}}))
    start_daemon(c)
    doc = wait_engine(c, "main", state="failed")
    assert doc["next_retry_at"]
    c.run(["systemctl", "kill", "-s", "KILL", "llm-supervisor"])
    killed = time.time()
    c.wait_for(lambda: c.run(["systemctl", "is-active", "llm-supervisor"], check=False)
               .stdout.strip() == "active" and time.time() - killed > 2, timeout=30,
               what="the daemon back up")

    def retried() -> bool:
        return any(e.get("cause") == "retry" and e["type"] == "tier" or
                   (e["type"] == "state" and e.get("cause") == "retry")
                   for e in events(c) if e.get("engine") == "main" and at(e) >= int(killed))
    c.wait_for(retried, timeout=60, what="a retry after the restart")


def test_vllm_canary_with_an_api_key_measures_tokens(fresh_container):
    c = fresh_container
    install(c)
    c.write("/etc/llm-supervisor/vllm.key", "s3cret\n", mode=0o600)
    c.write("/etc/llm-supervisor/wrong.key", "nope\n", mode=0o600)
    engines = ""
    for name, key in (("keyed", "vllm.key"), ("wrong", "wrong.key")):
        port = free_port()
        engines += (f'[[engine]]\nname = "{name}"\nkind = "vllm"\nmodel = "Qwen/Qwen2.5-7B"\n'
                    f'exec = "{SIM} --kind vllm --model Qwen/Qwen2.5-7B --listen 127.0.0.1:{port}'
                    f' --api-key s3cret"\nlisten = "127.0.0.1:{port}"\nchain = ["rocm"]\n'
                    f'api_key_file = "/etc/llm-supervisor/{key}"\n')
    c.ensure_user("vllm")
    configure(c, engines)
    start_daemon(c)
    doc = wait_engine(c, "keyed", state="healthy", tier="rocm")
    wait_engine(c, "keyed", state="healthy")
    rate = c.wait_for(lambda: (status(c, "keyed")["last_check"] or {}).get("tokens_per_second"),
                      timeout=20, what="a canary rate")
    assert 30 < rate < 60, rate  # the simulated GPU makes 45 tokens/s: tokens, not latency
    wrong = wait_engine(c, "wrong", state="blocked")
    assert wrong["cause"] == "auth" and "/etc/llm-supervisor/wrong.key" in wrong["fix"]
    assert doc["chain"] == ["rocm"]


def test_after_a_demotion_the_first_request_finds_the_model_loaded(fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, engine_toml("main", port, c=c, faults={"*": {"load_seconds": 1.5},
                                                        "rocm": {"gpu_errors_after": 2}}))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="vulkan")
    loads = [e for e in events(c) if e["type"] == "load"]
    assert [e["to"] for e in loads] == ["rocm", "vulkan"], loads
    assert all(e["evidence"]["seconds"] >= 1.4 for e in loads), loads  # the engine's own figure
    import httpx
    first = httpx.post(f"http://127.0.0.1:{port}/api/generate", trust_env=False, timeout=10,
                       json={"model": "qwen2.5:7b-instruct", "prompt": "hi", "stream": False,
                             "options": {"num_predict": 1}}).json()
    assert first["load_duration"] < 0.2e9, first  # the user did not pay the 1.5 s load
