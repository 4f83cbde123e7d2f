"""The engine state machine and its decisions, with a fake actuator (the one interface we own
for side effects), a manual clock and httpx.MockTransport for the engine's HTTP API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from supervisor import config
from supervisor.engine import Engine
from supervisor.health import Observation
from supervisor.state import EngineMemory
from supervisor.states import FATAL_RESET, FAULT, RESET, EngineState
from supervisor.systemd import UnitStatus

RUNNING = UnitStatus("llm-main.service", "active", "running", 0, 0, 100)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeActuator:
    def __init__(self, usable: list[str]) -> None:
        self.tiers = usable
        self.switches: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.unit = RUNNING
        self.reprobes = 0
        self.checks: list[tuple[str, float]] = []

    async def switch(self, engine: Engine, tier: str) -> None:
        self.switches.append(tier)

    async def unit_status(self, engine: Engine) -> UnitStatus:
        return self.unit

    async def reprobe(self) -> None:
        self.reprobes += 1

    def usable(self, engine: Engine) -> list[str]:
        return [t for t in self.tiers if not (engine.memory.reboot_required and t != "cpu")]

    def record(self, engine: Engine, type: str, **fields: Any) -> None:
        self.events.append({"type": type, **fields})

    def observe_check(self, engine: Engine, check: str, seconds: float) -> None:
        self.checks.append((check, seconds))


class FakeOllama:
    """What the engine's API answers: switchable per test."""

    def __init__(self) -> None:
        self.alive = True
        self.hang = False
        self.size_vram = 4_000_000_000
        self.eval_rate = 40.0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/":
            return httpx.Response(200 if self.alive else 500, text="Ollama is running")
        if request.url.path == "/api/generate":
            if self.hang:
                await asyncio.sleep(10)
            body = json.loads(request.content)
            assert body["options"]["num_predict"] == 1 and body["stream"] is False
            return httpx.Response(200, json={"model": body["model"], "response": "p",
                                             "done": True, "eval_count": 1,
                                             "eval_duration": int(1e9 / self.eval_rate)})
        if request.url.path == "/api/ps":
            return httpx.Response(200, json={"models": [
                {"name": "qwen2.5:7b-instruct", "model": "qwen2.5:7b-instruct",
                 "size": 4_000_000_000, "size_vram": self.size_vram}]})
        return httpx.Response(404)


SETTINGS = """
[health]
interval = "1s"
timeout = "1s"
failures = 3
startup_grace = "10s"
canary_every = 1
canary_timeout = "200ms"
min_tokens_per_second = {rate}
[fallback]
restarts_per_tier = 1
promote_after = "60s"
promote_backoff = 2.0
[[engine]]
name = "main"
model = "qwen2.5:7b-instruct"
"""


def make(usable=("rocm", "vulkan", "cpu"), rate=0, tier="rocm"):
    cfg = config.loads(SETTINGS.format(rate=rate))
    actuator = FakeActuator(list(usable))
    api = FakeOllama()
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    clock, wall = Clock(), Clock()
    engine = Engine(cfg, cfg.engines[0], EngineMemory(), actuator, http, clock=clock, wall=wall)
    return engine, actuator, api, clock, wall


async def started(tier="rocm", **kw):
    engine, actuator, api, clock, wall = make(**kw)
    await engine.start_on(tier, "starting")
    clock.now += 11  # past the grace
    await settle(engine)
    assert engine.state == EngineState.HEALTHY
    return engine, actuator, api, clock, wall


async def settle(engine: Engine, ticks: int = 1) -> None:
    """Run check intervals, letting a background canary finish within each."""
    for _ in range(ticks):
        await engine.tick()
        if engine.canary_task is not None:
            await asyncio.wait([engine.canary_task], timeout=1)
        await engine.tick()
        engine.clock.now += 1  # type: ignore[attr-defined]  # one interval


async def test_healthy_after_start_and_one_failed_check_changes_nothing():
    engine, actuator, api, clock, _ = await started()
    api.alive = False
    await engine.tick()
    api.alive = True
    await settle(engine, 3)
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]
    assert engine.failures == 0


async def test_failures_restart_then_demote():
    engine, actuator, api, clock, _ = await started()
    api.alive = False
    for _ in range(3):
        await engine.tick()
    assert actuator.switches == ["rocm", "rocm"]  # restarted on the same tier
    assert engine.state == EngineState.STARTING
    clock.now += 11
    for _ in range(3):
        await engine.tick()
    assert actuator.switches == ["rocm", "rocm", "vulkan"]
    assert "demoted from rocm" in engine.memory.reason
    assert [e for e in actuator.events if e["type"] == "tier"][-1]["to"] == "vulkan"
    assert engine.memory.next_promotion_at == 1000.0 + 60


async def test_no_verdict_within_grace_but_a_crash_counts():
    engine, actuator, api, clock, _ = make()
    await engine.start_on("rocm", "starting")
    api.alive = False
    for _ in range(10):
        await engine.tick()
    assert actuator.switches == ["rocm"] and engine.state == EngineState.STARTING
    actuator.unit = UnitStatus("u", "activating", "auto-restart", 1, 1, 0)
    for _ in range(3):
        await engine.tick()
    assert actuator.switches == ["rocm", "rocm"]  # a crash loop is no slow start


async def test_hung_canary_while_liveness_answers_is_acted_on():
    engine, actuator, api, clock, _ = await started()
    api.hang = True
    for _ in range(8):
        await settle(engine)
        if len(actuator.switches) > 1:
            break
    assert actuator.switches == ["rocm", "rocm"]
    assert "canary hung" in engine.memory.history[-2]["reason"]


async def test_slow_tokens_below_the_threshold_count_only_when_set():
    engine, actuator, api, clock, _ = await started(rate=10)
    api.eval_rate = 3.0
    for _ in range(4):
        await settle(engine)
    assert len(actuator.switches) > 1 and "tokens/s" in engine.memory.history[-2]["reason"]
    engine, actuator, api, clock, _ = await started(rate=0)
    api.eval_rate = 3.0
    for _ in range(4):
        await settle(engine)
    assert actuator.switches == ["rocm"] and engine.tokens_per_second == pytest.approx(3.0)


async def test_silent_cpu_fallback_demotes_without_restart():
    engine, actuator, api, clock, _ = await started()
    api.size_vram = 0
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan"]
    assert "runs on the CPU" in engine.memory.reason


@pytest.mark.parametrize(("severity", "tiers", "reboot"), [
    (FAULT, ["rocm", "vulkan"], False),
    (RESET, ["rocm", "rocm"], False),
    (FATAL_RESET, ["rocm", "cpu"], True),
])
async def test_log_findings(severity, tiers, reboot):
    engine, actuator, api, clock, _ = await started()
    engine.inbox.append(Observation(False, "log", "GPU trouble", severity=severity,
                                    evidence="amdgpu: GPU reset begin!"))
    await engine.tick()
    assert actuator.switches == tiers
    assert engine.memory.reboot_required is reboot


async def test_a_pin_holds_through_faults():
    engine, actuator, api, clock, _ = await started()
    engine.memory.pinned = "rocm"
    engine.inbox.append(Observation(False, "log", "ROCm error", severity=FAULT))
    await engine.tick()
    api.alive = False
    clock.now += 11
    for _ in range(6):
        await engine.tick()
        clock.now += 11
    assert set(actuator.switches) == {"rocm"}


async def test_end_of_chain_fails_and_retries_from_the_bottom_with_backoff():
    engine, actuator, api, clock, _ = await started(usable=("rocm",))
    api.alive = False

    async def fail_through() -> None:
        for _ in range(3):  # restart once on rocm, then nothing below it
            await engine.tick()
        clock.now += 11
        for _ in range(3):
            await engine.tick()

    await fail_through()
    assert engine.state == EngineState.FAILED and "retry 1 in 2s" in engine.memory.reason
    assert "every usable tier exhausted" in engine.memory.reason
    await engine.tick()
    assert actuator.switches == ["rocm", "rocm"]  # waits
    clock.now += 2
    await engine.tick()
    assert actuator.switches == ["rocm", "rocm", "rocm"]  # retried from the bottom
    clock.now += 11
    for _ in range(3):
        await engine.tick()
    await fail_through()
    assert engine.state == EngineState.FAILED and "retry 2 in 4s" in engine.memory.reason


async def test_promotion_back_up_and_backoff_when_it_fails():
    engine, actuator, api, clock, wall = await started(tier="vulkan")
    assert engine.memory.next_promotion_at == wall.now + 60
    wall.now += 61
    await engine.tick()
    assert actuator.switches[-1] == "rocm" and engine.promoting_from == "vulkan"
    assert actuator.reprobes == 1
    api.alive = False  # still broken on rocm: not healthy within its grace
    clock.now += 11
    await engine.tick()
    assert actuator.switches[-1] == "vulkan" and engine.memory.promote_wait == 120
    assert engine.memory.next_promotion_at == wall.now + 120
    api.alive = True
    clock.now += 11
    await settle(engine)
    assert engine.state == EngineState.HEALTHY and engine.tier == "vulkan"
    wall.now += 121
    await engine.tick()
    clock.now += 11
    await settle(engine)
    assert engine.tier == "rocm" and engine.state == EngineState.HEALTHY
    assert engine.memory.next_promotion_at is None and "promoted" in engine.memory.reason
