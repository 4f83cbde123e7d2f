"""The test doubles the unit tests share, in one place: an engine's clock, actuator and
Ollama (``make``/``started``/``settle`` build an engine healthy on its tier), and systemd and
sd_notify for the daemon. Only our own seams are faked (the actuator, the service manager,
the engine's HTTP API through httpx's ``MockTransport``), never a library's internals."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx

from llm_supervisor import config
from llm_supervisor.causes import Cause, Finding
from llm_supervisor.checks import health, output
from llm_supervisor.config import EngineConfig
from llm_supervisor.engine import Engine
from llm_supervisor.host.tuning import Tuning
from llm_supervisor.host.view import EngineFacts
from llm_supervisor.records.memory import EngineMemory
from llm_supervisor.records.metrics import EngineView
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.systemctl import Systemd, UnitStatus

RUNNING = UnitStatus("llm-main.service", "active", "running", 0, 0, 0)  # no real process

# an Ollama's device lines (MI50, gfx906): what it dropped, and what it computes on
DROPPED_GFX906 = ('time=2026-11-23T10:00:00.000Z level=WARN source=amd.go:120 msg="dropping ROCm'
                  ' device — no rocblas support for gfx target" device=0 gfx_target=gfx906'
                  ' supported="[gfx908 gfx90a gfx942]" hint="see docs/gpu.mdx"')
VULKAN_MI50 = ('time=2026-11-23T10:00:01.000Z level=INFO source=types.go:42 msg="inference'
               ' compute" id=0 library=Vulkan compute=0.0 name=Vulkan0 description="AMD Instinct'
               ' MI50 (RADV VEGA20)" total="16.0 GiB" available="15.9 GiB"')
ROCM_MI50 = ('time=2026-11-23T10:00:01.000Z level=INFO source=types.go:42 msg="inference compute"'
             ' id=0 library=ROCm compute=gfx906 name=ROCm0 description="AMD Instinct MI50"'
             ' total="16.0 GiB" available="15.9 GiB"')
DROPPED_IGPU = DROPPED_GFX906.replace("gfx906", "gfx1103").replace("device=0", "device=1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeActuator:
    def __init__(self, usable: list[str], clock: Callable[[], float] | None = None) -> None:
        self.tiers = usable
        self.switches: list[str] = []
        self.stops = 0
        self.events: list[dict[str, Any]] = []
        self.unit = RUNNING
        self.reprobes = 0
        self.checks: list[tuple[str, float]] = []
        self.diagnosis: Finding | None = None
        self.is_cleared = False
        self.boot = "boot-1"
        self.switch_error: Exception | None = None
        self.commits: list[list[str]] = []  # the event types of each commit
        self.views: list[EngineView] = []  # the engine's view at each commit
        self.failures: list[str] = []  # the causes of failed checks, as the metrics count
        self.own_cards: tuple[str, ...] | None = None  # the engine's cards (None: any)
        self.clock = clock  # the engine's: when a start's process began

    async def switch(self, cfg: EngineConfig, tier: str, running: str | None,
                     kept: Tuning | None) -> Tuning:
        if self.switch_error is not None:
            raise self.switch_error
        self.switches.append(tier)
        if self.clock is not None:  # systemd starts its process now
            self.unit = dataclasses.replace(self.unit, main_started=self.clock())
        return Tuning({"OLLAMA_NUM_PARALLEL": str(len(self.switches))}, "test host")

    async def stop(self, cfg: EngineConfig) -> None:
        self.stops += 1

    async def unit_status(self, cfg: EngineConfig) -> UnitStatus:
        return self.unit

    async def diagnose(self, cfg: EngineConfig, tier: str | None,
                       unit: UnitStatus) -> Finding | None:
        return self.diagnosis

    async def cleared(self, cfg: EngineConfig, tier: str | None, cause: Cause) -> bool:
        return self.is_cleared

    async def reprobe(self) -> None:
        self.reprobes += 1

    def usable(self, facts: EngineFacts) -> list[str]:
        return [t for t in self.tiers if not (facts.reboot_required and t != "cpu")
                and t not in facts.skipped]

    def cards(self, cfg: EngineConfig) -> tuple[str, ...] | None:
        return self.own_cards

    def boot_id(self) -> str | None:
        return self.boot

    def commit(self, view: EngineView, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.views.append(view)
        if not events:  # a check that made no event: its view only (as the recorder does)
            return
        self.commits.append([type for type, _ in events])
        self.events.extend({"type": type, **fields} for type, fields in events)

    def observe_failure(self, engine: str, cause: str) -> None:
        self.failures.append(cause)

    def observe_check(self, engine: str, check: str, seconds: float) -> None:
        self.checks.append((check, seconds))


class FakeOllama:
    """What the engine's API answers: switchable per test."""

    def __init__(self) -> None:
        self.alive = True
        self.hang = False
        self.size_vram = 4_000_000_000
        self.eval_rate = 40.0
        self.text = " five, six, seven, eight"  # what a healthy model answers
        self.present = True       # the model is on disk
        self.status = 200         # forced canary status (401...)
        self.pulls = 0
        self.loads = 0
        self.ps_name = "qwen2.5:7b-instruct"

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/":
            return httpx.Response(200 if self.alive else 500, text="Ollama is running")
        if request.url.path == "/api/generate":
            if self.hang:
                await asyncio.sleep(10)
            body = json.loads(request.content)
            if "prompt" not in body:  # a warm-up: load the model, generate nothing
                self.loads += 1
                if not self.present:
                    return httpx.Response(404, json={"error": "model not found"})
                return httpx.Response(200, json={"model": body["model"], "done": True,
                                                 "done_reason": "load",
                                                 "load_duration": 1_500_000_000})
            if not self.present:
                return httpx.Response(404, json={"error": f"model '{body['model']}' not found"})
            if self.status != 200:
                return httpx.Response(self.status, json={"error": "unauthorized"})
            options = body["options"]
            assert options["num_predict"] == health.CANARY_TOKENS and body["stream"] is False
            assert options["temperature"] == 0 and options["seed"] == output.SEED
            n = options["num_predict"]
            return httpx.Response(200, json={"model": body["model"], "response": self.text,
                                             "done": True, "eval_count": n,
                                             "eval_duration": int(n * 1e9 / self.eval_rate)})
        if request.url.path == "/api/ps":
            return httpx.Response(200, json={"models": [
                {"name": self.ps_name, "model": self.ps_name,
                 "size": 4_000_000_000, "size_vram": self.size_vram}]})
        if request.url.path == "/api/tags":
            models = [{"name": "qwen2.5:7b-instruct"}] if self.present else []
            return httpx.Response(200, json={"models": models})
        if request.url.path == "/api/pull":
            self.pulls += 1
            self.present = True
            lines = [{"status": "pulling manifest"},
                     {"status": "pulling abc", "total": 100, "completed": 50},
                     {"status": "pulling abc", "total": 100, "completed": 100},
                     {"status": "success"}]
            return httpx.Response(200, text="".join(json.dumps(x) + "\n" for x in lines))
        return httpx.Response(404)


SETTINGS = """
[health]
interval = "1s"
timeout = "1s"
failures = 3
startup_grace = "10s"
canary_every = 1
canary_timeout = "200ms"
stall_after = "2s"
blind_timeout = "5s"
min_tokens_per_second = {rate}
[fallback]
restarts_per_tier = 1
promote_after = "60s"
promote_backoff = 2.0
probation = "120s"
[[engine]]
name = "main"
model = "{model}"
pull = {pull}
"""


def make(usable=("rocm", "vulkan", "cpu"), rate=0, tier="rocm", model="qwen2.5:7b-instruct",
         pull=False):
    cfg = config.loads(SETTINGS.format(rate=rate, model=model, pull=str(pull).lower()))
    clock, wall = Clock(), Clock()
    actuator = FakeActuator(list(usable), clock)
    api = FakeOllama()
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    engine = Engine(cfg, cfg.engines[0], EngineMemory(), actuator, http, clock=clock, wall=wall)
    engine.family = lambda pid: frozenset({pid, pid + 1}) if pid else frozenset()  # + a runner
    return engine, actuator, api, clock, wall


async def started(tier="rocm", **kw):
    engine, actuator, api, clock, wall = make(**kw)
    await engine.start_on(tier, Cause.START)
    clock.now += 11  # past the grace
    await settle(engine)
    assert engine.state == EngineState.HEALTHY
    return engine, actuator, api, clock, wall


async def settle(engine: Engine, ticks: int = 1) -> None:
    """Run check intervals, letting a background canary finish within each."""
    for _ in range(ticks):
        await engine.tick()
        if engine.canary.task is not None:
            await asyncio.wait([engine.canary.task], timeout=1)
        await engine.tick()
        engine.clock.now += 1  # type: ignore[attr-defined]  # one interval
        engine.wall.now += 1  # type: ignore[attr-defined]


def later(clock: Clock, wall: Clock, seconds: float) -> None:
    clock.now += seconds
    wall.now += seconds


class FakeSystemd(Systemd):
    """What the lifecycle asks of systemd, answered from memory and recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, ...]] = []
        self.running: set[str] = set()

    async def connect(self) -> bool:
        return True

    async def close(self) -> None:
        self.calls.append(("close",))

    def describe(self) -> str:
        return "fake"

    async def daemon_reload(self) -> None:
        self.calls.append(("daemon-reload",))

    async def restart(self, unit: str) -> None:
        self.calls.append(("restart", unit))
        self.running.add(unit)

    async def stop(self, unit: str) -> None:
        self.calls.append(("stop", unit))
        self.running.discard(unit)

    async def reset_failed(self, unit: str) -> None:
        self.calls.append(("reset-failed", unit))

    async def status(self, unit: str, *, fresh: bool = False) -> UnitStatus:
        if unit in self.running:
            return UnitStatus(unit, "active", "running", 0, 0, 4242)
        return UnitStatus(unit, "inactive", "dead", 0, 0, 0)

    async def follow(self, *matches: str, cursor: str | None = None,
                     since: float | None = None,
                     fields: Sequence[str] = ()) -> AsyncIterator[dict[str, str]]:
        await asyncio.Event().wait()  # the journal says nothing
        yield {}


class SlowStarts(FakeSystemd):
    """A systemd whose start jobs take as long as the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def restart(self, unit: str) -> None:
        await self.release.wait()
        await super().restart(unit)


class Notes:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, state: str) -> None:
        self.sent.append(state)
