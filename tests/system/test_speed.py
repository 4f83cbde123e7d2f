"""What a lying placement report, garbage output and a renamed CPU look like, under a real
systemd with the simulated Ollama: the engine's own speed is the witness when /api/ps says
100 % VRAM (Ollama >= 0.30), the canary's text when the answers are garbage, and OpenCL that
computes on the CPU is skipped for the engine with its reason."""

from __future__ import annotations

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
)

from llm_supervisor.checks.speed import LEARN, LOW_RUN


def of(c, name: str, kind: str) -> list[dict]:
    return [e for e in events(c) if e.get("engine") == name and e["type"] == kind]


def test_speed_falling_to_the_cpus_while_api_ps_says_full_vram_leaves_rocm(fresh_container):
    """No min_tokens_per_second: the engine learns its rocm speed from its canaries (one every
    2 s), then generation falls to the CPU's speed while /api/ps and the runner still say
    every layer is on the GPU. Placement, from the speed alone: demoted, healthy on vulkan."""
    c = fresh_container
    install(c)
    learn_s = (LEARN + 2) * 2  # canary_every 2 x interval 1 s, with a margin
    configure(c, engine_toml("main", free_port(), c=c, faults={
        "rocm": {"cpu_speed_after": learn_s}}), FAST)
    start_daemon(c)
    doc = wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
    assert doc["offload"] == "29/29" and doc["backend"].startswith("ROCm")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # learned before the fault
        speed = status(c, "main")["speed"]
        if speed and speed["reference"]:
            break
        time.sleep(0.5)
    assert speed["reference"] and 35 < speed["reference"] < 55, speed
    metrics = c.run(["curl", "-s", "--unix-socket", "/run/llm-supervisor/control.sock",
                     "http://x/metrics"]).stdout
    assert 'llm_supervisor_speed_reference_tokens_per_second{engine="main",tier="rocm"}' \
        in metrics, metrics
    dropped_at = time.monotonic()
    doc = wait_engine(c, "main", state="healthy", tier="vulkan", timeout=90)
    took = time.monotonic() - dropped_at
    switch = of(c, "main", "tier")[-1]
    assert switch["to"] == "vulkan" and switch["cause"] == "placement", switch
    assert "like the CPU" in switch["reason"] and "whatever the engine reports" in \
        switch["reason"], switch
    assert doc["demoted_from"] == "rocm"
    # the bound: the rest of the learning window, then LOW_RUN canaries, then the restart
    assert took < learn_s + LOW_RUN * 2 + 15, took
    ps = c.run(["curl", "-s", f"{doc['endpoint']}/api/ps"]).stdout
    assert '"size_vram"' in ps


def test_degenerate_text_on_rocm_is_never_healthy_there_and_ends_on_vulkan(fresh_container):
    """ROCm answers "GGGGGGGG" at full speed from its first generation: a failed check each
    time (restart, then demote); the engine is never healthy on rocm."""
    c = fresh_container
    install(c)
    configure(c, engine_toml("main", free_port(), c=c, faults={"rocm": {"degenerate": True}}),
              FAST)
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="vulkan", timeout=90)
    healthy = [e for e in of(c, "main", "state") if e["to"] == "healthy"]
    assert healthy and all(e["tier"] == "vulkan" for e in healthy), healthy
    switch = of(c, "main", "tier")[-1]
    assert switch["to"] == "vulkan" and switch["cause"] == "degenerate", switch
    assert "one character repeated" in switch["reason"], switch
    restarts = [e for e in of(c, "main", "state") if "restarting on rocm" in
                (e.get("reason") or "")]
    assert len(restarts) == 1 and restarts[0]["cause"] == "degenerate", restarts


OPENCL = """chain = ["opencl", "cpu"]
[engine.tiers.opencl]
exec = "/usr/bin/llm-supervisor-simengine serve --library opencl"
"""


def test_an_opencl_tier_computing_on_the_cpu_is_skipped_with_its_reason(fresh_container):
    """llama.cpp's OpenCL drops the MI50 ("ggml_opencl: unsupported GPU") and computes on the
    CPU: a backend mismatch, the opencl tier skipped for this engine with the reason, the
    engine healthy on cpu, never reported as computing on OpenCL."""
    c = fresh_container
    install(c)
    configure(c, engine_toml("main", free_port(), c=c, extra=OPENCL,
                             faults={"opencl": {"opencl_unsupported": True}}),
              FAST + '[tiers.opencl]\navailable = "always"\n')
    start_daemon(c)
    doc = wait_engine(c, "main", state="healthy", tier="cpu", timeout=90)
    assert "opencl" in doc["skipped_tiers"], doc
    assert "computes on the CPU" in doc["skipped_tiers"]["opencl"], doc["skipped_tiers"]
    switch = of(c, "main", "tier")[-1]
    assert (switch["from"], switch["to"], switch["cause"]) == ("opencl", "cpu",
                                                                "backend_mismatch"), switch
    assert "opencl" not in (doc["backend"] or "").lower(), doc["backend"]
