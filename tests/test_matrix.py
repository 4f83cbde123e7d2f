"""The fault × phase matrix: every fault in every phase, through the real engine loop.

Each cell injects one fault into one phase of an engine's life and asserts the first action
the supervisor takes (restart on the tier, demote, roll a promotion back, block, reboot
required, or nothing) and that it comes within a bound computed from the config — the
README's formulas. The engine is an Ollama ≥ 0.30 behind ``httpx.MockTransport``: liveness,
a generation that can hang, queue behind a user or crawl, ``/api/ps``, and its runner's
``/slots`` (one slot) whose decoded tokens advance while a user's answer streams. systemd is
the fake actuator; time is an injected clock, one ``interval`` per tick.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from test_engine import Clock, FakeActuator

from supervisor import config
from supervisor.causes import Cause, Finding, Observation
from supervisor.checks import speed
from supervisor.checks.classify import parse_device
from supervisor.engine import DEVICES_SETTLE, Engine
from supervisor.host.tuning import Tuning
from supervisor.records.memory import EngineMemory
from supervisor.states import EngineState
from supervisor.systemd.systemctl import UnitStatus

ANSWER = " five, six, seven, eight"  # a healthy model's canary answer

SETTINGS = """
[health]
interval = "1s"
timeout = "1s"
failures = 3
startup_grace = "10s"
canary_every = 2
canary_timeout = "2s"
load_timeout = "6s"
stall_after = "4s"
blind_timeout = "20s"
{extra}
[fallback]
restarts_per_tier = 1
promote_after = "60s"
probation = "120s"
[[engine]]
name = "main"
model = "qwen2.5:7b-instruct"
"""
RUNNER = 41234


class Ollama:
    """An Ollama >= 0.30 with one generation slot, whose behaviour the cell switches."""

    def __init__(self) -> None:
        self.alive = True
        self.hung = False          # generations never answer; the slot's tokens stop
        self.rate = 40.0
        self.text = ANSWER
        self.size_vram = 4_000_000_000
        self.present = True
        self.user = False          # a user's long answer holds the slot, tokens streaming
        self.decoded = 0
        self.task = 1
        self.release = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.port == RUNNER and path == "/slots":
            if self.user and not self.hung:
                self.decoded += 25
            return httpx.Response(200, json=[{
                "id": 0, "id_task": self.task, "is_processing": self.user or self.hung,
                "n_prompt_tokens_processed": 12,
                "next_token": [{"has_next_token": True, "n_remain": -1,
                                "n_decoded": self.decoded}]}])
        if path == "/":
            return httpx.Response(200 if self.alive else 500, text="Ollama is running")
        if path == "/api/ps":
            return httpx.Response(200, json={"models": [
                {"name": "qwen2.5:7b-instruct", "size": 4_000_000_000,
                 "size_vram": self.size_vram}]})
        if path == "/api/tags":
            return httpx.Response(200, json={"models": [{"name": "qwen2.5:7b-instruct"}]
                                             if self.present else []})
        if path == "/api/generate":
            body = json.loads(request.content)
            if not self.present:
                return httpx.Response(404, json={"error": f"model '{body['model']}' not found"})
            while self.hung or self.user:  # queued behind the user, or stuck on the GPU
                self.release.clear()
                await self.release.wait()
            n = body["options"]["num_predict"]
            return httpx.Response(200, json={"model": body["model"], "response": self.text,
                                             "done": True, "eval_count": n,
                                             "eval_duration": int(n * 1e9 / self.rate)})
        return httpx.Response(404)

    def wake(self) -> None:
        self.release.set()


@dataclass
class World:
    engine: Engine
    actuator: FakeActuator
    api: Ollama
    clock: Clock
    wall: Clock
    cfg: config.Config
    extra: str = ""
    settings: str = SETTINGS

    @property
    def h(self) -> config.HealthSection:
        return self.engine.health

    async def step(self) -> None:
        """One check interval: tick, let the background canary run, move time on."""
        await self.engine.tick()
        for _ in range(4):
            await asyncio.sleep(0)
        self.api.wake()
        for _ in range(4):
            await asyncio.sleep(0)
        if self.engine.canary_task is not None and self.engine.canary_task.done():
            await self.engine.tick()
        self.clock.now += self.h.interval
        self.wall.now += self.h.interval

    async def until(self, predicate: Any, limit: float) -> float:
        """Seconds (on the engine's clock) until ``predicate()``, or fail past ``limit``."""
        start = self.clock.now
        while not predicate():
            assert self.clock.now - start <= limit, (
                f"nothing after {limit:g}s: {self.engine.state} on {self.engine.tier},"
                f" {self.engine.memory.reason!r}, switches {self.actuator.switches}")
            await self.step()
        return self.clock.now - start


def world(extra: str = "", memory: EngineMemory | None = None,
          settings: str = SETTINGS) -> World:
    cfg = config.loads(settings.format(extra=extra))
    actuator = FakeActuator(["rocm", "vulkan", "cpu"])
    api = Ollama()
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    clock, wall = Clock(), Clock()
    engine = Engine(cfg, cfg.engines[0], memory or EngineMemory(), actuator, http,
                    clock=clock, wall=wall)
    return World(engine, actuator, api, clock, wall, cfg, extra, settings)


# --------------------------------------------------------------------------- phases


async def first_start(w: World, inject: Any) -> None:
    await w.engine.start_on("rocm", Cause.START)
    w.engine.runner(RUNNER)
    inject(w)  # broken from its start, before it answers anything


async def model_load(w: World, inject: Any) -> None:
    w.api.hung = True  # the load takes its time
    await w.engine.start_on("rocm", Cause.START)
    w.engine.runner(RUNNER)
    await w.step()  # it answers; the first generation (the load) is under way
    assert w.engine.phase == "load" and w.engine.canary_task is not None
    w.api.hung = False
    inject(w)


async def healthy_on(w: World, tier: str = "rocm") -> None:
    await w.engine.start_on(tier, Cause.START)
    w.engine.runner(RUNNER)
    await w.until(lambda: w.engine.state == EngineState.HEALTHY, 20)


async def serving_idle(w: World, inject: Any) -> None:
    await healthy_on(w)
    inject(w)


async def serving_busy(w: World, inject: Any) -> None:
    await healthy_on(w)
    w.api.user = True  # a long answer streams in the only slot: canaries queue behind it
    h = w.engine.health
    await w.until(lambda: (w.engine.busy or "").startswith("busy:"),
                  h.canary_every * h.interval + h.canary_timeout + 2 * h.interval)
    inject(w)


async def promotion(w: World, inject: Any) -> None:
    await healthy_on(w, "vulkan")
    w.wall.now = w.engine.memory.next_promotion_at or 0
    await w.step()  # promote_after elapsed: rocm is tried again
    assert w.engine.tier == "rocm" and w.engine.memory.promoted_from == "vulkan"
    w.engine.runner(RUNNER)
    inject(w)


async def probation(w: World, inject: Any) -> None:
    await healthy_on(w, "vulkan")
    w.wall.now = w.engine.memory.next_promotion_at or 0
    await w.step()
    w.engine.runner(RUNNER)
    await w.until(lambda: w.engine.state == EngineState.HEALTHY, 20)
    assert w.engine.memory.probation_until is not None
    inject(w)


async def daemon_restart(w: World, inject: Any) -> None:
    await healthy_on(w)
    old = w.engine
    old.canary_task and old.canary_task.cancel()
    w.engine = Engine(w.cfg, w.cfg.engines[0], old.memory, w.actuator, old.http,
                      clock=w.clock, wall=w.wall)  # a new daemon, the same state.json
    w.engine.adopt(running=True, tuning=Tuning())
    inject(w)


async def reload(w: World, inject: Any) -> None:
    await healthy_on(w)
    new = config.loads(w.settings.format(extra=w.extra).replace("failures = 3",
                                                                "failures = 2"))
    w.engine.configure(new, new.engines[0])  # health settings change without a restart
    w.cfg = new
    inject(w)


PHASES = {"first start": first_start, "model load": model_load, "serving idle": serving_idle,
          "serving busy": serving_busy, "promotion load": promotion,
          "promotion probation": probation, "after a daemon restart": daemon_restart,
          "during a reload": reload}

# --------------------------------------------------------------------------- faults


def crash(w: World) -> None:
    w.actuator.unit = UnitStatus("llm-main.service", "activating", "auto-restart", 1, 134, 0)


def hang(w: World) -> None:
    w.api.hung = True


def slow(w: World) -> None:
    w.api.rate = 2.0


def garbage(w: World) -> None:
    w.api.text = "GGGGGGGG"  # full speed, no text: what a faulted ROCm path answers


def cpu_speed(w: World) -> None:
    """Generation falls to the CPU's speed while /api/ps still says all in VRAM; the engine
    had learned its speed on this tier (kept in state.json, so after a daemon restart too)."""
    e = w.engine
    assert e.tier is not None
    e.speed.data["tiers"][e.tier] = {"samples": [40.0] * speed.LEARN, "low": [], "last": []}
    w.api.rate = 4.0


def gpu_errors(w: World) -> None:
    w.engine.finding(Observation.bad("log", Cause.GPU_FAULT, "ROCm error: unspecified launch"
                                     " failure"))


def silent_cpu(w: World) -> None:
    w.api.size_vram = 0


def backend_mismatch(w: World) -> None:
    line = ('time=2026-12-03T08:00:00Z level=INFO source=types.go:42 msg="inference compute"'
            ' id=0 library=Vulkan compute=0.0 name=Vulkan0 description="AMD Instinct MI50'
            ' (RADV VEGA20)" total="16.0 GiB" available="15.9 GiB"')
    device = parse_device(line)
    assert device is not None
    w.engine.device(device)
    w.clock.now += DEVICES_SETTLE  # the device lines have settled


def gpu_reset(w: World) -> None:
    w.engine.finding(Observation.bad("log", Cause.RESET, "amdgpu: GPU reset begin!"))


def failed_reset(w: World) -> None:
    w.engine.finding(Observation.bad("log", Cause.FATAL_RESET, "amdgpu: GPU Recovery Failed"))


def model_missing(w: World) -> None:
    w.api.present = False
    w.api.user = False


def port_held(w: World) -> None:
    crash(w)
    w.actuator.diagnosis = Finding(Cause.PORT_IN_USE, "127.0.0.1:11434 is held by pid 812"
                                   " (ollama) of ollama.service",
                                   fix="systemctl disable --now ollama.service")


def nothing(w: World) -> None:
    pass


FAULTS = {"crash at start": crash, "crash later": crash, "hang from the first generation": hang,
          "hang after serving": hang, "slow tokens": slow, "GPU error lines": gpu_errors,
          "silent CPU": silent_cpu, "backend mismatch": backend_mismatch,
          "garbage text": garbage, "speed like the CPU's": cpu_speed,
          "GPU reset": gpu_reset, "failed reset": failed_reset,
          "model missing": model_missing, "port held": port_held, "none (busy)": nothing}

# --------------------------------------------------------------------------- the table


def bound(fault: str, phase: str, h: config.HealthSection) -> float:
    """The README's worst case from the fault to the first action, in seconds."""
    i, n = h.interval, h.failures
    if fault in ("crash at start", "crash later"):
        return n * i + i
    if fault in ("hang from the first generation", "hang after serving"):
        if phase in ("first start", "model load", "promotion load"):
            return i + h.load_deadline + n * i  # the load's deadline, then `failures` checks
        # the next canary (canary_every), its deadline (a stall: stall_after with the slot
        # held), then `failures` checks
        return h.canary_every * i + max(h.canary_timeout, h.stall_after) + n * i
    if fault in ("slow tokens", "garbage text"):
        return h.canary_every * i + n * i + i
    if fault == "speed like the CPU's":  # a run of low canaries, then at once
        return speed.LOW_RUN * h.canary_every * i + 2 * i
    if fault == "silent CPU":
        return h.canary_every * i + 2 * i
    if fault == "model missing":
        return h.canary_every * i + 2 * i
    return 2 * i  # log findings and unit diagnoses act at the next check


Cell = tuple[str, str, str]  # (fault, phase, expected action)


def expected(fault: str, phase: str) -> str | None:
    """The action each cell must take; None where the fault cannot happen in that phase."""
    promoting = phase.startswith("promotion")
    if fault == "none (busy)":
        return "nothing" if phase == "serving busy" else None
    if fault in ("slow tokens", "garbage text", "speed like the CPU's") and \
            phase == "serving busy":
        return "nothing"  # the canary waits behind the user: no answer to judge, tokens flow
    if fault == "speed like the CPU's" and phase in ("first start", "model load",
                                                      "promotion load"):
        return None  # a tier's speed is learned while it serves: nothing to compare yet
    if fault == "crash at start" and phase not in ("first start", "promotion load"):
        return None
    if fault == "hang from the first generation" and phase not in (
            "first start", "model load", "promotion load"):
        return None
    if fault in ("crash later", "hang after serving") and phase in (
            "first start", "model load", "promotion load"):
        return None
    if fault in ("model missing", "port held"):
        return "block"
    if fault == "failed reset":
        return "reboot"
    if fault == "GPU reset":
        return "restart"
    if promoting:
        return "rollback"
    if fault in ("GPU error lines", "silent CPU", "backend mismatch", "speed like the CPU's"):
        return "demote"
    return "restart"  # counted faults: `failures` checks, then a restart on the tier first


CELLS = [(f, p, e) for f in FAULTS for p in PHASES if (e := expected(f, p)) is not None]


def acted(w: World, switches: int) -> bool:
    e = w.engine
    return (len(w.actuator.switches) > switches or e.state == EngineState.BLOCKED
            or e.memory.reboot_required)


@pytest.mark.parametrize(("fault", "phase", "action"), CELLS,
                         ids=[f"{p}-{f}" for f, p, _ in CELLS])
async def test_matrix(fault: str, phase: str, action: str) -> None:
    extra = "min_tokens_per_second = 10" if fault == "slow tokens" else ""
    w = world(extra)
    await PHASES[phase](w, FAULTS[fault])
    e = w.engine
    tier, switches = e.tier, len(w.actuator.switches)
    limit = bound(fault, phase, e.health)
    if action == "nothing":  # busy for a long while: never a restart, never a demotion
        for _ in range(int(10 * e.health.blind_timeout)):
            await w.step()
        assert len(w.actuator.switches) == switches and e.state == EngineState.HEALTHY
        assert e.busy and e.busy.startswith("busy: canary queued"), e.busy
        assert "tokens in the last" in e.busy and e.failures == 0
        return
    took = await w.until(lambda: acted(w, switches), limit)
    assert took <= limit
    done = w.actuator.switches[switches:]
    if action == "restart":
        assert done == [tier], (done, e.memory.reason)
    elif action == "demote":
        assert done == ["vulkan"] and e.memory.demoted_from == "rocm", done
    elif action == "rollback":
        assert done == ["vulkan"] and e.memory.cause == Cause.PROMOTION_FAILED.value, (
            done, e.memory.reason)
        assert e.memory.promote_wait == 120  # the next try waits promote_backoff times longer
    elif action == "block":
        assert done == [] and e.state == EngineState.BLOCKED and e.memory.fix
    elif action == "reboot":
        assert e.memory.reboot_required and done == ["cpu"], done


async def test_a_stalled_user_answer_is_a_stall_after_stall_after():
    """Busy, then the tokens stop with the user's request still in its slot: a stall —
    never before ``stall_after`` of silence, and acted on like a hang."""
    w = world()
    await serving_busy(w, nothing)
    w.api.hung = True
    silent = w.clock.now
    await w.until(lambda: w.engine.failures > 0, 20)
    assert w.clock.now - silent >= w.engine.health.stall_after
    assert w.engine.last_check and w.engine.last_check["cause"] == "stall"
    await w.until(lambda: len(w.actuator.switches) > 1, 20)
    assert w.actuator.switches[-1] == "rocm"


async def test_without_a_token_signal_an_overdue_canary_waits_for_the_blind_bound():
    """An Ollama before 0.30 (no runner /slots): a user's answer in front of the canary is
    invisible until it completes. Completed requests keep it busy; with none, the canary is
    a hang only after ``blind_timeout`` — never at ``canary_timeout`` alone."""
    w = world()
    await healthy_on(w)
    w.engine.memory.runner_port = None
    w.api.user = True
    start = w.clock.now
    for _ in range(12):
        await w.step()
        w.engine.completed()  # the gin line of someone's finished answer
    assert w.actuator.switches == ["rocm"] and w.engine.busy
    assert "request(s) completed" in w.engine.busy
    took = await w.until(lambda: len(w.actuator.switches) > 1, 40)
    assert w.clock.now - start >= w.engine.health.blind_timeout
    assert took <= w.engine.health.blind_timeout + w.engine.health.stall_after + 3 * 1 + 2


async def test_a_clean_liveness_never_clears_a_hung_load():
    """The issue's first bug: a load that hangs, liveness clean on every tick."""
    w = world()
    await model_load(w, hang)
    await w.until(lambda: w.engine.failures >= 1, 20)
    for _ in range(2):
        before = w.engine.failures
        await w.step()
        assert w.engine.failures in (before + 1, 0) and w.engine.state != EngineState.HEALTHY
    await w.until(lambda: w.engine.tier == "vulkan", 60)  # restarted, then demoted
    assert [s for s in w.actuator.switches] == ["rocm", "rocm", "vulkan"]


def test_every_phase_and_fault_is_in_the_table():
    assert {p for _, p, _ in CELLS} == set(PHASES)
    assert {f for f, _, _ in CELLS} == set(FAULTS)
