"""The fault × phase matrix: every fault in every phase, through the real engine loop.

Each cell injects one fault into one phase of an engine's life and asserts the first action the
supervisor takes (restart on the tier, demote, roll a promotion back, block, reboot required,
or nothing), that it comes within a bound computed from the config — the formulas of
docs/decisions.md — and the cause it carries. The engine is an Ollama behind
``httpx.MockTransport`` that answers as the real one does: liveness, ``/api/version``,
``/api/show`` (the model's capabilities), ``/api/tags``, ``/api/ps``, a generation (or an
embedding) that can hang, queue behind a user or crawl, and, from 0.30, its runner's ``/slots``
(one slot) whose counters advance while a user's answer streams. The kernel's view of the
engine's clients is injected (``Canary.view``): a user's connection, with its bytes growing
while the answer streams. Log lines reach the engine through the daemon's own sinks
(``Supervisor._engine_line``, ``Supervisor._kernel_line``) and the real classifier. systemd is
the fake actuator; time is an injected clock, one ``interval`` per tick; the daemon restart
runs the daemon's reconcile, the reload its ``_reload``, against a fake systemd and a fixed
host probe.

The grid: every fault × every phase on the default engine (a completion model, one model,
Ollama ≥ 0.30), and each other value of each axis — the model's kind (reasoning, embedding),
the models on the engine (another one on the CPU beside it, its own model evicted), the
version (before 0.30: no token signal) — against every fault in the phases where it changes
something (serving idle, serving busy, the model's load, after a daemon restart).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import Clock, FakeActuator

from llm_supervisor import config, names
from llm_supervisor.causes import Cause, Finding
from llm_supervisor.checks import speed
from llm_supervisor.checks.observations import DEVICES_SETTLE
from llm_supervisor.checks.progress import Reading, from_clients
from llm_supervisor.daemon import Setup, Supervisor
from llm_supervisor.engine import Engine
from llm_supervisor.host import cards
from llm_supervisor.host.clients import Clients, Connection
from llm_supervisor.host.probes import ProbeResult
from llm_supervisor.host.tuning import Tuning
from llm_supervisor.records.memory import EngineMemory, State
from llm_supervisor.states import EngineState
from llm_supervisor.systemd import units
from llm_supervisor.systemd.systemctl import UnitStatus

ANSWER = " five, six, seven, eight"  # a healthy model's canary answer
MODEL = "qwen2.5:7b-instruct"
OTHER = "nomic-embed-text:latest"   # the other model beside it (an embedding model)
OWN_BLOB, OTHER_BLOB = "1" * 64, "2" * 64
RUNNER, OTHER_RUNNER = 41234, 41001  # their runners' ports (Ollama >= 0.30)
USER_TASK = 1                        # the user's request in the runner's slot

SETTINGS = """
[supervisor]
unit_dir = "{tmp}/units"
state_dir = "{tmp}/state"
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
{cards}
[engine.environment]
OLLAMA_MODELS = "{tmp}/models"
"""

# --------------------------------------------------------------------------- the axes


@dataclass(frozen=True)
class Axes:
    kind: str = "completion"  # completion | reasoning (capabilities: thinking) | embedding
    models: str = "one"       # one | two (another model on the CPU beside it) | evicted
    version: str = "0.30"     # "0.30": its runner's /slots; "0.12": no token signal
    cards: str = "any"        # any (it names no card: every card's faults are its own) | own

    @property
    def label(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != getattr(DEFAULT, f.name)]
        return ",".join(changed) or "default"

    @property
    def new(self) -> bool:
        return self.version == "0.30"

    @property
    def tokens(self) -> bool:
        """Does a canary see tokens? From 0.30 the runner's /slots; an evicted model's runner
        is gone (the kernel's view stands in), and before 0.30 there is no /slots at all."""
        return self.new and self.models != "evicted"


DEFAULT = Axes()
VARIANTS = (Axes(kind="reasoning"), Axes(kind="embedding"), Axes(models="two"),
            Axes(models="evicted"), Axes(version="0.12"), Axes(cards="own"))
# a host of two MI50s; with cards=own the engine names the first (`gpus`), the faults'
# card; the other card is another engine's
OWN_CARD, OTHER_CARD = "0000:43:00.0", "0000:83:00.0"
CARDS = cards.inventory({"rocm": [cards.Seen(OWN_CARD, 0, "AMD Instinct MI50", "gfx906"),
                                  cards.Seen(OTHER_CARD, 1, "AMD Instinct MI50", "gfx906")],
                         "vulkan": [cards.Seen(OWN_CARD, 0), cards.Seen(OTHER_CARD, 1)]}, {})
CAPABILITIES = {"completion": ["completion", "tools"],
                "reasoning": ["completion", "tools", "thinking"],
                "embedding": ["embedding"]}


def start_line(blob: str, port: int, embedding: bool = False) -> str:
    """Ollama >= 0.30 starting a model's runner (llm/llama_server.go)."""
    return ('time=2026-12-07T08:00:00.000Z level=INFO source=llama_server.go:431'
            ' msg="starting llama-server" cmd="/usr/lib/ollama/llama-server --model'
            f' {{models}}/blobs/sha256-{blob} --port {port} --host 127.0.0.1 -c 4096'
            f'{" --embedding" if embedding else ""}"')


def manifest(models: Path, name: str, blob: str) -> None:
    path = models / names.manifest_relpath(name)  # where the engine looks: Ollama's rule
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{blob}",
         "size": 1}]}))


# --------------------------------------------------------------------------- the engine


class Ollama:
    """An Ollama with one generation slot, whose behaviour the cell switches."""

    def __init__(self, axes: Axes) -> None:
        self.axes = axes
        self.version = "0.30.2" if axes.new else "0.12.6"
        self.alive = True
        self.hung = False          # generations never answer; the slot's counters stop
        self.rate = 40.0
        self.text = ANSWER
        self.garbage = False       # embeddings of all zeros (what a faulted GPU returns)
        self.size_vram = 4_000_000_000
        self.present = True
        self.user = False          # a user's long answer holds the slot
        self.streams = True        # ... streamed: bytes flow to the user's connection
        self.loaded = False        # the model is loaded (its runner's /slots answers)
        self.evicted = False       # Ollama unloaded the model: /api/ps leaves it out
        self.runner_port = RUNNER
        self.on_load: Any = None   # the runner's start line, when it (re)loads the model
        self.decoded = self.prompted = 0
        self.task = 100            # the slot's task: the canary's requests take new ones
        self.in_slot = False
        self.sent = 0              # bytes the engine sent the user's connection
        self.thinks: list[Any] = []  # what each generation asked of `think`
        self.embeds = 0
        self.views = 0             # the kernel's view asked (no token signal)
        self.release = asyncio.Event()

    def restarted(self) -> None:
        """The unit (re)started: nothing loaded, the users' connections gone."""
        self.loaded = self.evicted = self.in_slot = self.user = False
        self.runner_port = RUNNER

    def evict(self) -> None:
        """Ollama unloads the model (keep_alive, or room for another): its runner exits."""
        self.evicted, self.loaded = True, False

    def wake(self) -> None:
        self.release.set()

    async def _wait(self) -> None:
        self.release.clear()
        await self.release.wait()

    async def _serve(self) -> None:
        """A request: queued behind the user's answer, then in the slot (stuck while hung)."""
        while self.user:
            await self._wait()
        self.task += 1  # a new task in the slot; a hung GPU stops it at its first kernel
        self.decoded, self.prompted, self.in_slot = 0, 0 if self.hung else 12, True
        try:
            while self.hung:
                await self._wait()
        finally:
            self.in_slot = False
        if self.evicted and self.on_load is not None:  # loaded again: a new runner
            self.runner_port += 1
            self.on_load(self.runner_port)
        self.loaded, self.evicted = True, False

    def _slots(self, request: httpx.Request) -> httpx.Response:
        if not self.new or self.evicted or request.url.port != self.runner_port:
            raise httpx.ConnectError("connection refused", request=request)  # no runner
        if not self.loaded and not self.user:
            return httpx.Response(503, json={"error": {"code": 503,
                                                       "message": "Loading model"}})
        if self.user and not self.hung:
            if self.axes.kind == "embedding":
                self.prompted += 25  # an embedding batch: prompt tokens processed
            else:
                self.decoded += 25
        return httpx.Response(200, json=[{
            "id": 0, "id_task": USER_TASK if self.user else self.task,
            "is_processing": self.user or self.in_slot,
            "n_prompt_tokens_processed": self.prompted,
            "next_token": [{"has_next_token": True, "n_remain": -1,
                            "n_decoded": self.decoded}]}])

    @property
    def new(self) -> bool:
        return self.axes.new

    async def view(self, engine: config.EngineConfig) -> Reading | None:
        """The kernel's view of the engine's clients (never the host's sockets): the user's
        connection while it lasts, its bytes growing while the answer streams."""
        self.views += 1
        if not self.user:
            return from_clients(Clients(()))
        if self.streams and not self.hung:
            self.sent += 4096
        return from_clients(Clients((Connection("127.0.0.1:50412", self.sent, 310, 7),)))

    def memory(self, pid: int) -> int | None:
        """The engine's processes' resident memory: steady (a load in the mock is at once,
        a hung one does not grow)."""
        return 5 << 30

    def _models(self, loaded: bool) -> list[dict[str, Any]]:
        own = {"name": MODEL, "model": MODEL, "digest": OWN_BLOB, "size": 4_000_000_000,
               "size_vram": self.size_vram}
        other = {"name": OTHER, "model": OTHER, "digest": OTHER_BLOB, "size": 300_000_000,
                 "size_vram": 0}  # on the CPU: never this engine's fault
        listed = [own] if self.present and not (loaded and self.evicted) else []
        return listed + ([other] if self.axes.models == "two" else [])

    def _missing(self, body: dict[str, Any]) -> httpx.Response | None:
        if self.present:
            return None
        return httpx.Response(404, json={"error": f"model '{body['model']}' not found"})

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.port != 11434:
            return self._slots(request)
        if path == "/":
            return httpx.Response(200 if self.alive else 500, text="Ollama is running")
        if path == "/api/version":
            return httpx.Response(200, json={"version": self.version})
        if path == "/api/ps":
            return httpx.Response(200, json={"models": self._models(loaded=True)})
        if path == "/api/tags":
            return httpx.Response(200, json={"models": self._models(loaded=False)})
        body = json.loads(request.content) if request.content else {}
        if path == "/api/show":
            return self._missing(body) or httpx.Response(200, json={
                "capabilities": CAPABILITIES[self.axes.kind], "details": {"format": "gguf"}})
        if path == "/api/generate":
            return await self._generate(body)
        if path == "/api/embed":
            return await self._embed(body)
        return httpx.Response(404)

    async def _generate(self, body: dict[str, Any]) -> httpx.Response:
        missing = self._missing(body)
        if missing is not None:
            return missing
        name = body["model"]
        if self.axes.kind == "embedding":
            return httpx.Response(400, json={"error": f'"{name}" does not support generate'})
        if "think" in body and self.axes.kind != "reasoning":
            return httpx.Response(400, json={"error": f'"{name}" does not support thinking'})
        self.thinks.append(body.get("think"))
        await self._serve()
        n = body["options"]["num_predict"]
        answer: dict[str, Any] = {"model": name, "response": self.text, "done": True,
                                  "eval_count": n, "eval_duration": int(n * 1e9 / self.rate)}
        if self.axes.kind == "reasoning" and body.get("think") is not False:
            answer.update(response="", thinking=self.text)  # it thinks unless told not to
        return httpx.Response(200, json=answer)

    async def _embed(self, body: dict[str, Any]) -> httpx.Response:
        missing = self._missing(body)
        if missing is not None:
            return missing
        self.embeds += 1
        await self._serve()
        inputs = body["input"]
        assert len(inputs) == 2 and inputs[0] != inputs[1]
        vectors = [[0.0, 0.0, 0.0]] * 2 if self.garbage else [[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]
        return httpx.Response(200, json={"model": body["model"], "embeddings": vectors})


class Units(FakeActuator):
    """The fake systemd, whose restarts restart the mock engine too."""

    def __init__(self, api: Ollama) -> None:
        super().__init__(["rocm", "vulkan", "cpu"])
        self.unit = dataclasses.replace(self.unit, main_pid=4242)  # its main process
        self.api = api

    async def switch(self, cfg: config.EngineConfig, tier: str, running: str | None,
                     kept: Tuning | None) -> Tuning:
        tuning = await super().switch(cfg, tier, running, kept)
        self.api.restarted()
        if self.unit.main_pid:  # systemd's restart: another main process
            self.unit = dataclasses.replace(self.unit, main_pid=self.unit.main_pid + 100)
        return tuning


class Systemd:
    """What the daemon's reconcile asks systemd: the unit as the fake actuator has it (no
    main PID: the host's processes are not read)."""

    on_change: Any = None

    def __init__(self, actuator: FakeActuator) -> None:
        self.actuator = actuator

    async def status(self, unit: str, fresh: bool = False) -> UnitStatus:
        return dataclasses.replace(self.actuator.unit, main_pid=0)


class Record:
    """The daemon's recorder and actuator, as far as reconcile and reload use them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.reloads = 0

    def save(self) -> None:
        pass

    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        self.events.append({"type": type, **fields})
        return self.events[-1]

    async def daemon_reload(self) -> None:
        self.reloads += 1


HOST = units.HostFacts(frozenset({"render", "video"}), cpu_count=8, mem_total=32 << 30)
PROBES = {t: ProbeResult(t, True, f"{t} present (test)", (), 0, "", 0.0, "2026-12-07T08:00:00Z")
          for t in ("rocm", "vulkan")}


@dataclass
class World:
    engine: Engine
    actuator: Units
    api: Ollama
    clock: Clock
    wall: Clock
    cfg: config.Config
    axes: Axes
    tmp: Path
    sup: Supervisor = dataclasses.field(init=False)
    extra: str = ""

    @property
    def h(self) -> config.HealthSection:
        return self.engine.checking

    @property
    def settings(self) -> str:
        return SETTINGS.format(extra=self.extra, tmp=self.tmp, cards=engine_cards(self.axes))

    def log(self, line: str) -> None:
        """One line of the engine's journal, through the daemon's sink for it."""
        self.sup.supervision.engine_line(self.engine)(line.replace("{models}", f"{self.tmp}/models"),
                                           "cursor", None)

    def kernel(self, line: str) -> None:
        self.sup.supervision.kernel_line(line, "cursor", None)

    def runners(self, *, other_first: bool = False) -> None:
        """Ollama >= 0.30 starts the model's runner (its port: where /slots answers); with
        two models, the other one's runner too, on the CPU (0 of its layers on the GPU)."""
        if not self.axes.new:
            return  # before 0.30 no runner has /slots: progress is the kernel's view
        own = [start_line(OWN_BLOB, RUNNER)]
        other = [start_line(OTHER_BLOB, OTHER_RUNNER, embedding=True),
                 "load_tensors: offloaded 0/13 layers to GPU"] if self.axes.models == "two" \
            else []
        for line in (other + own if other_first else own + other):
            self.log(line)

    async def step(self) -> None:
        """One check interval: tick, let the background canary run, move time on."""
        await self.engine.tick()
        for _ in range(4):
            await asyncio.sleep(0)
        self.api.wake()
        for _ in range(4):
            await asyncio.sleep(0)
        if self.engine.canary.task is not None and self.engine.canary.task.done():
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


def daemon(w: World) -> Supervisor:
    """A daemon holding the engine: its sinks, its reconcile and its reload, with systemd
    faked and the host's probe fixed (no GPU tool runs)."""
    setup = Setup(w.tmp / "llm-supervisor.toml", w.cfg, State(), HOST,
                  ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), boot_id="")
    sup = Supervisor(setup, systemd=Systemd(w.actuator))  # type: ignore[arg-type]
    sup.hostview.probes = dict(PROBES)
    sup.hostview.cards = CARDS

    async def keep(config: config.Config) -> None:
        pass

    sup.hostview.reprobe = keep  # type: ignore[method-assign]
    sup.recorder = sup.actuator = Record()  # type: ignore[assignment]
    sup.engines["main"] = w.engine
    return sup


def engine_cards(axes: Axes) -> str:
    return f'gpus = ["{OWN_CARD}"]' if axes.cards == "own" else ""


def world(tmp: Path, axes: Axes = DEFAULT, extra: str = "",
          memory: EngineMemory | None = None, settings: str = SETTINGS) -> World:
    """An engine behind the mock, on the matrix's settings (``settings``: another
    ``[health]``, e.g. the defaults, for dev/detection.py)."""
    models = tmp / "models"
    if not models.exists():
        manifest(models, MODEL, OWN_BLOB)
        manifest(models, OTHER, OTHER_BLOB)
    cfg = config.loads(settings.format(extra=extra, tmp=tmp, cards=engine_cards(axes)))
    api = Ollama(axes)
    actuator = Units(api)
    if axes.cards == "own":
        actuator.own_cards = (OWN_CARD,)
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    clock, wall = Clock(), Clock()
    engine = Engine(cfg, cfg.engines[0], memory or EngineMemory(), actuator, http,
                    clock=clock, wall=wall)
    engine.canary.view = api.view      # the kernel's view of its clients: the mock's
    engine.canary.memory = api.memory  # its processes' memory: the mock's, not the host's
    w = World(engine, actuator, api, clock, wall, cfg, axes, tmp, extra=extra)
    w.sup = daemon(w)
    api.on_load = lambda port: w.log(start_line(OWN_BLOB, port))
    return w


# --------------------------------------------------------------------------- phases

LOADS = ("first start", "model load", "promotion load")  # the canary loads the model


async def first_start(w: World, inject: Any) -> None:
    await w.engine.start_on("rocm", Cause.START)
    w.runners()
    inject(w)  # broken from its start, before it answers anything


async def model_load(w: World, inject: Any) -> None:
    w.api.hung = True  # the load takes its time
    await w.engine.start_on("rocm", Cause.START)
    w.runners(other_first=True)  # ours loads last: the other model was loaded before it
    await w.step()  # it answers; the first generation (the load) is under way
    assert w.engine.canary.phase == "load" and w.engine.canary.task is not None
    w.api.hung = False
    inject(w)


async def healthy_on(w: World, tier: str = "rocm") -> None:
    await w.engine.start_on(tier, Cause.START)
    w.runners()
    await w.until(lambda: w.engine.state == EngineState.HEALTHY, 20)
    if w.axes.models == "evicted":
        w.api.evict()  # the next canary pays the load: the load's deadline


async def serving_idle(w: World, inject: Any) -> None:
    await healthy_on(w)
    inject(w)


async def serving_busy(w: World, inject: Any) -> None:
    await healthy_on(w)
    w.api.user = True  # a long answer streams in the only slot: canaries queue behind it
    h = w.engine.checking
    deadline = h.load_deadline if w.axes.models == "evicted" else h.canary_timeout
    await w.until(lambda: (w.engine.canary.busy or "").startswith("busy:"),
                  h.canary_every * h.interval + deadline + 2 * h.interval)
    inject(w)


async def promotion(w: World, inject: Any) -> None:
    await healthy_on(w, "vulkan")
    w.wall.now = w.engine.memory.next_promotion_at or 0
    await w.step()  # promote_after elapsed: rocm is tried again
    assert w.engine.tier == "rocm" and w.engine.memory.promoted_from == "vulkan"
    w.runners()
    inject(w)


async def probation(w: World, inject: Any) -> None:
    await healthy_on(w, "vulkan")
    w.wall.now = w.engine.memory.next_promotion_at or 0
    await w.step()
    w.runners()
    await w.until(lambda: w.engine.state == EngineState.HEALTHY, 20)
    assert w.engine.memory.probation_until is not None
    inject(w)


async def daemon_restart(w: World, inject: Any) -> None:
    """A new daemon, the same state.json: it builds the engine and reconciles as startup
    does — the units the old one wrote are unchanged and the unit runs, so it adopts the
    engine (``Engine.adopt(running=True, …)``) instead of restarting it. Its journal reader
    goes on from its cursor: the runner lines read before are not read again."""
    await healthy_on(w)
    old = w.engine
    old.canary.task and old.canary.task.cancel()
    cfg = w.cfg
    units.write_files(cfg.supervisor.unit_dir, units.files_of(  # the old daemon's switch
        [units.render(cfg, cfg.engines[0], old.tier or "rocm", w.sup.hostfacts, old.tuning())]))
    switches = list(w.actuator.switches)
    w.engine = Engine(cfg, cfg.engines[0], old.memory, w.actuator, old.http,
                      clock=w.clock, wall=w.wall)
    w.engine.canary.view, w.engine.canary.memory = w.api.view, w.api.memory
    w.sup = daemon(w)
    w.engine.expire_facts(w.actuator.boot_id())
    assert await w.sup.reconcile() == {}  # nothing to (re)start: adopted
    assert w.actuator.switches == switches and w.engine.placing is None
    assert w.sup.actuator.reloads == 0  # type: ignore[attr-defined]  # its units unchanged
    assert w.engine.state == EngineState.HEALTHY and w.engine.canary.passed
    inject(w)


async def reload(w: World, inject: Any) -> None:
    """The daemon's reload (SIGHUP) of a config whose health settings changed: retuned,
    taken over without a restart."""
    await healthy_on(w)
    (w.tmp / "llm-supervisor.toml").write_text(w.settings.replace("failures = 3",
                                                                  "failures = 2"))
    ok, outcome = await w.sup._reload("SIGHUP")
    assert ok and outcome["diff"]["retuned"] == ["main"], outcome
    assert w.engine.checking.failures == 2 and w.actuator.switches == ["rocm"]
    w.cfg = w.sup.config
    inject(w)


PHASES = {"first start": first_start, "model load": model_load, "serving idle": serving_idle,
          "serving busy": serving_busy, "promotion load": promotion,
          "promotion probation": probation, "after a daemon restart": daemon_restart,
          "during a reload": reload}
AXIS_PHASES = ("serving idle", "serving busy", "model load", "after a daemon restart")

# --------------------------------------------------------------------------- faults


def crash(w: World) -> None:
    w.actuator.unit = UnitStatus("llm-main.service", "activating", "auto-restart", 1, 134, 0)


def hang(w: World) -> None:
    w.api.hung = True


def slow(w: World) -> None:
    w.api.rate = 2.0


def garbage(w: World) -> None:
    w.api.text = "GGGGGGGG"  # full speed, no text: what a faulted ROCm path answers
    w.api.garbage = True     # and, embedding, vectors of zeros


def cpu_speed(w: World) -> None:
    """Generation falls to the CPU's speed while /api/ps still says all in VRAM; the engine
    had learned its speed on this tier (kept in state.json, so after a daemon restart too)."""
    e = w.engine
    assert e.tier is not None
    e.speedbook.data["tiers"][e.tier] = {"samples": [40.0] * speed.LEARN, "low": [], "last": []}
    w.api.rate = 4.0


def gpu_errors(w: World) -> None:
    """llama.cpp's words in the engine's journal, as Ollama passes them through."""
    w.log("ggml_cuda_compute_forward: ROCm error: unspecified launch failure")
    w.log("  current device: 0, in function ggml_cuda_compute_forward at"
          " //ml/backend/ggml/ggml/src/ggml-cuda/ggml-cuda.cu:2478")


def silent_cpu(w: World) -> None:
    w.api.size_vram = 0


def backend_mismatch(w: World) -> None:
    """The engine says it computes on Vulkan on the rocm tier: Ollama's discovery line; with
    two models, where that line (logged once, at Ollama's start) cannot follow the other
    model's runner, its own runner reloading the model on Vulkan0 says so."""
    if w.axes.models == "two":
        w.log(start_line(OWN_BLOB, RUNNER))
        w.log("load_tensors: using device Vulkan0 (AMD Instinct MI50 (RADV VEGA20)) -"
              " 16368 MiB free")
    else:
        w.log('time=2026-12-03T08:00:00Z level=INFO source=types.go:42 msg="inference'
              ' compute" id=0 library=Vulkan compute=0.0 name=Vulkan0 description="AMD'
              ' Instinct MI50 (RADV VEGA20)" total="16.0 GiB" available="15.9 GiB"')
    w.clock.now += DEVICES_SETTLE  # the device lines have settled


def gpu_reset(w: World) -> None:
    w.kernel("amdgpu 0000:43:00.0: amdgpu: GPU reset begin!")


def failed_reset(w: World) -> None:
    w.kernel("amdgpu 0000:43:00.0: amdgpu: GPU Recovery Failed: -22")


def other_card_reset(w: World) -> None:
    w.kernel(f"amdgpu {OTHER_CARD}: amdgpu: GPU reset begin!")


def other_card_failed_reset(w: World) -> None:
    w.kernel(f"amdgpu {OTHER_CARD}: amdgpu: GPU Recovery Failed: -22")


def other_card(w: World) -> None:
    """Ollama says it computes on ROCm — on the other card, not the engine's own."""
    w.log('time=2026-12-03T08:00:00Z level=INFO source=types.go:42 msg="inference compute"'
          ' id=GPU-bb library=ROCm compute=gfx906 name=ROCm0 description="AMD Instinct MI50"'
          f' pci_id={OTHER_CARD} type=discrete total="32.0 GiB" available="31.9 GiB"')
    w.clock.now += DEVICES_SETTLE


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


def operator_stop(w: World) -> None:
    """`systemctl stop` of the engine's unit: SIGTERM, which systemd counts as clean."""
    w.actuator.unit = UnitStatus("llm-main.service", "inactive", "dead", 0, 15, 0, "success",
                                 raw={"ExecMainCode": "2"})
    w.api.hung = True  # nothing answers any more


def operator_restart(w: World) -> None:
    """`systemctl restart`: another main process, systemd's restart count unchanged."""
    w.actuator.unit = dataclasses.replace(w.actuator.unit, main_pid=w.actuator.unit.main_pid + 1)
    w.api.restarted()
    w.api.hung = False


FAULTS = {"crash at start": crash, "crash later": crash, "hang from the first generation": hang,
          "hang after serving": hang, "slow tokens": slow, "GPU error lines": gpu_errors,
          "silent CPU": silent_cpu, "backend mismatch": backend_mismatch,
          "garbage text": garbage, "speed like the CPU's": cpu_speed,
          "GPU reset": gpu_reset, "failed reset": failed_reset,
          "GPU reset on another card": other_card_reset,
          "failed reset on another card": other_card_failed_reset,
          "computing on another card": other_card,
          "model missing": model_missing, "port held": port_held, "none (busy)": nothing,
          "operator stop": operator_stop, "operator restart": operator_restart}

# --------------------------------------------------------------------------- the table


def bound(fault: str, phase: str, axes: Axes, h: config.HealthSection) -> float:
    """docs/decisions.md's worst case from the fault to the first action, in seconds."""
    i, n, k = h.interval, h.failures, h.canary_every
    # a canary's deadline: canary_timeout; one whose model Ollama unloaded pays the load
    deadline = h.load_deadline if axes.models == "evicted" else h.canary_timeout
    if fault in ("crash at start", "crash later"):
        return n * i + i
    if fault in ("hang from the first generation", "hang after serving"):
        if phase in LOADS:  # the load's deadline, then `failures` checks
            return i + h.load_deadline + n * i
        if axes.models == "evicted" and phase != "serving busy":
            # the next canary (canary_every) loads the model: the load's deadline
            return k * i + h.load_deadline + n * i
        if phase == "serving busy" and axes.tokens:
            return h.stall_after + n * i  # after the last token
        if phase == "serving busy":  # no token signal, another client connected
            return k * i + max(deadline, h.blind_timeout) + n * i
        # the next canary (canary_every), its deadline (S′ = stall_after: the canary holds
        # the only slot), then `failures` checks — with or without a token signal
        # (+ t: the progress read before the canary is sent waits on a silent endpoint)
        return k * i + h.timeout + max(h.canary_timeout, h.stall_after) + n * i
    if fault in ("slow tokens", "garbage text"):
        return k * i + n * i + i
    if fault == "speed like the CPU's":  # a run of low canaries, then at once
        return speed.LOW_RUN * k * i + 2 * i
    if fault == "silent CPU":
        return k * i + 2 * i
    if fault == "model missing":
        return k * i + 2 * i
    return 2 * i  # log findings and unit diagnoses act at the next check


Cell = tuple[str, str, Axes, str, str | None]  # (fault, phase, axes, action, cause)

# the cause each fault's first action carries (a rollback: promotion_failed, this one named
# in its reason)
CAUSES: dict[str, str | None] = {
    "crash at start": "crash", "crash later": "crash",
    "hang from the first generation": "hang", "hang after serving": "hang",
    "slow tokens": "slow", "GPU error lines": "gpu_fault", "silent CPU": "placement",
    "backend mismatch": "backend_mismatch", "garbage text": "degenerate",
    "speed like the CPU's": "placement", "GPU reset": "reset", "failed reset": "fatal_reset",
    "GPU reset on another card": "reset", "failed reset on another card": "fatal_reset",
    "computing on another card": "backend_mismatch",
    "model missing": "model_missing", "port held": "port_in_use", "none (busy)": None,
    "operator stop": "stopped", "operator restart": None}


def cause(fault: str, phase: str, axes: Axes = DEFAULT) -> str | None:
    """The cause a cell's first action must carry."""
    if fault in ELSEWHERE and not concerns(fault, axes):
        return None
    if fault == "hang after serving" and phase == "serving busy" and axes.tokens:
        return "stall"  # the user's request is in flight and its tokens stopped
    return CAUSES[fault]


# faults whose canary waits behind the busy user's request: no answer to judge, tokens flow
WAITS_BEHIND_USER = ("none (busy)", "slow tokens", "garbage text", "speed like the CPU's")
# the first action whatever the phase
FIXED_ACTIONS = {"model missing": "block", "port held": "block", "failed reset": "reboot",
                 "GPU reset": "restart", "operator stop": "stand down",
                 "failed reset on another card": "reboot",
                 "GPU reset on another card": "restart",
                 "operator restart": "fresh start"}
# taken off the tier at once: a finding no restart on the same tier can fix
DEMOTES = ("GPU error lines", "silent CPU", "backend mismatch", "speed like the CPU's",
           "computing on another card")


def axis_excludes(fault: str, phase: str, axes: Axes) -> bool:
    """Whether the axes rule the fault out in that phase."""
    if axes.kind == "embedding" and fault in ("slow tokens", "speed like the CPU's"):
        return True  # an embedding has no token rate: neither a floor nor a reference applies
    if axes.models == "evicted" and phase in LOADS:
        return True  # nothing is loaded yet: nothing to evict
    # another model's user holds the engine: ours is loaded nowhere
    return axes.models == "evicted" and fault == "silent CPU" and phase == "serving busy"


def phase_excludes(fault: str, phase: str) -> bool:
    """Whether the fault cannot happen in that phase, on any axes."""
    if fault == "none (busy)":
        return phase != "serving busy"
    if fault == "speed like the CPU's" and phase in LOADS:
        return True  # a tier's speed is learned while it serves: nothing to compare yet
    if fault == "crash at start" and phase not in ("first start", "promotion load"):
        return True
    if fault == "hang from the first generation" and phase not in LOADS:
        return True
    return fault in ("crash later", "hang after serving") and phase in LOADS


# a fault on another card than the engine's own: its own only when it names no card (it may
# use any), and a device on another card is no mismatch for an engine that names none
ELSEWHERE = ("GPU reset on another card", "failed reset on another card",
             "computing on another card")


def concerns(fault: str, axes: Axes) -> bool:
    if fault == "computing on another card":
        return axes.cards == "own"
    return axes.cards == "any"


def expected(fault: str, phase: str, axes: Axes = DEFAULT) -> str | None:
    """The action each cell must take; None where the fault cannot happen in that phase."""
    if axis_excludes(fault, phase, axes) or phase_excludes(fault, phase):
        return None
    if fault in ELSEWHERE and not concerns(fault, axes):
        return "unmoved"
    if phase == "serving busy" and fault in WAITS_BEHIND_USER:
        return "nothing"
    if fault in FIXED_ACTIONS:
        return FIXED_ACTIONS[fault]
    if phase.startswith("promotion"):
        return "rollback"
    if fault in DEMOTES:
        return "demote"
    return "restart"  # counted faults: `failures` checks, then a restart on the tier first


def cells() -> list[Cell]:
    grid = [(f, p, DEFAULT) for f in FAULTS for p in PHASES]
    grid += [(f, p, a) for a in VARIANTS for p in AXIS_PHASES for f in FAULTS]
    return [(f, p, a, e, None if e == "nothing" else cause(f, p, a)) for f, p, a in grid
            if (e := expected(f, p, a)) is not None]


CELLS = cells()
IDS = [f"{p}-{f}" if a == DEFAULT else f"{a.label}/{p}-{f}" for f, p, a, _, _ in CELLS]


def acted(w: World, switches: int) -> bool:
    e = w.engine
    return (len(w.actuator.switches) > switches or e.state in (EngineState.BLOCKED,
                                                               EngineState.STOPPED)
            or e.memory.reboot_required)


def assert_cause(w: World, action: str, want: str | None, events: int) -> None:
    """The first action's cause: in the engine's memory (what status shows) and in the state
    events that left serving (degraded, blocked) since the fault — a promotion that fails
    with a failed GPU reset is rolled back (promotion_failed), then taken off the GPU."""
    e = w.engine
    left = [ev for ev in w.actuator.events[events:]
            if ev["type"] == "state" and ev["to"] in ("degraded", "blocked", "stopped")]
    assert left, w.actuator.events[events:]
    assert want is not None
    if action == "rollback":  # the rollback's cause; the fault's, rendered in its reason
        said = Cause(want).description
        assert e.memory.cause == Cause.PROMOTION_FAILED.value, (e.memory.cause, e.reason)
        assert left[0]["cause"] == Cause.PROMOTION_FAILED.value and said in left[0]["reason"]
        assert said in e.memory.reason, (want, e.memory.reason)
        return
    assert e.memory.cause == want, (want, e.memory.cause, e.memory.reason)
    assert left[-1]["cause"] == want, (want, left)
    assert {ev["cause"] for ev in left} <= {want, Cause.PROMOTION_FAILED.value}, left


def assert_axes(w: World, phase: str, axes: Axes) -> None:
    """What each axis shows once the fault is in, whatever the cell."""
    e = w.engine
    if axes.kind == "reasoning":  # its canary asked it not to think, and nothing else did
        assert w.api.thinks and set(w.api.thinks) == {False}, w.api.thinks
    if axes.models == "two" and phase != "after a daemon restart":
        # the other model's runner is shown, never judged; progress is read from its own
        assert e.intake.others[f"sha256-{OTHER_BLOB}"]["offload"] == "0/13", e.intake.others
        assert e.memory.runner_port == RUNNER
    if not axes.new:  # no runner port, ever: the kernel's view of the clients stands in
        assert e.memory.runner_port is None and w.api.views


async def assert_nothing_done(w: World, axes: Axes, switches: int, events: int) -> None:
    """Busy for a long while: never a restart, never a demotion, and the status says why."""
    e = w.engine
    for _ in range(int(10 * e.checking.blind_timeout)):
        await w.step()
    assert len(w.actuator.switches) == switches and e.state == EngineState.HEALTHY
    assert e.canary.busy and e.canary.busy.startswith("busy: canary queued"), e.canary.busy
    moving = "tokens" if axes.tokens else "bytes streamed to other clients"
    assert f"{moving} in the last" in e.canary.busy and e.failures == 0, e.canary.busy
    assert not [ev for ev in w.actuator.events[events:] if ev["type"] == "state"]


def assert_deadline(w: World, phase: str, axes: Axes) -> None:
    """A hang or a stall is judged against the deadline its canary had: the load's when the
    canary loads the model."""
    e = w.engine
    assert e.last_failure is not None and e.last_failure.finding is not None
    evicted = axes.models == "evicted" or phase in LOADS
    assert e.last_failure.finding.evidence["deadline_s"] == (
        e.checking.load_deadline if evicted else e.checking.canary_timeout)


def assert_action(w: World, action: str, tier: str | None, switches: int) -> None:
    """The first action, as the switches since the fault and the engine's memory show it."""
    e = w.engine
    done = w.actuator.switches[switches:]
    if action == "restart":
        assert done == [tier], (done, e.memory.reason)
    elif action == "demote":
        assert done == ["vulkan"] and e.memory.demoted_from == "rocm", done
    elif action == "rollback":
        assert done == ["vulkan"], (done, e.memory.reason)
        assert e.memory.promote_wait == 120  # the next try waits promote_backoff times longer
    elif action == "block":
        assert done == [] and e.state == EngineState.BLOCKED and e.memory.fix
    elif action == "reboot":
        assert e.memory.reboot_required and done == ["cpu"], done
    elif action == "stand down":  # the operator's stop: held, nothing started or counted
        assert done == [] and e.state == EngineState.STOPPED and e.failures == 0
        assert e.memory.stopped_by and "systemctl stop" in e.memory.stopped_by


async def assert_fresh_start(w: World, phase: str, switches: int, events: int) -> None:
    """An operator's restart outside the daemon: no fault, healthy again on its tier, and
    said as a restart wherever the engine had seen the process it replaced."""
    e = w.engine
    await w.until(lambda: e.state == EngineState.HEALTHY and e.canary.passed
                  and not e.placing, e.checking.startup_grace + 10 * e.checking.interval)
    for _ in range(3 * e.checking.failures):
        await w.step()
    assert w.actuator.switches[switches:] == [] and e.state == EngineState.HEALTHY
    since = w.actuator.events[events:]
    assert not [ev for ev in since if ev["type"] == "state"
                and ev["to"] in ("degraded", "blocked", "failed", "stopped")], since
    if phase in ("serving idle", "serving busy", "model load", "promotion probation",
                 "during a reload"):
        said = [ev for ev in since if ev["type"] == "restart"]
        assert said and said[0]["cause"] == Cause.OPERATOR.value, since


async def assert_unmoved(w: World, switches: int, events: int) -> None:
    """Another card's trouble: the engine goes on as it would have without it (its start,
    its load, its promotion), and is never restarted, demoted or held for a reboot."""
    e = w.engine
    for _ in range(int(e.checking.startup_grace + e.checking.load_deadline
                       + 3 * e.checking.failures)):
        await w.step()
    assert w.actuator.switches[switches:] == [], (w.actuator.switches, e.memory.reason)
    assert e.state == EngineState.HEALTHY and not e.memory.reboot_required, e.memory.reason
    assert not [ev for ev in w.actuator.events[events:] if ev["type"] == "state"
                and ev["to"] in ("degraded", "blocked", "failed", "stopped")]


@pytest.mark.parametrize(("fault", "phase", "axes", "action", "want"), CELLS, ids=IDS)
async def test_matrix(fault: str, phase: str, axes: Axes, action: str, want: str | None,
                      tmp_path: Path) -> None:
    extra = "min_tokens_per_second = 10" if fault == "slow tokens" else ""
    w = world(tmp_path, axes, extra)
    await PHASES[phase](w, FAULTS[fault])
    e = w.engine
    tier, switches, events = e.tier, len(w.actuator.switches), len(w.actuator.events)
    limit = bound(fault, phase, axes, e.checking)
    assert_axes(w, phase, axes)
    if action == "nothing":
        await assert_nothing_done(w, axes, switches, events)
        return
    if action == "fresh start":
        await assert_fresh_start(w, phase, switches, events)
        return
    if action == "unmoved":
        await assert_unmoved(w, switches, events)
        return
    took = await w.until(lambda: acted(w, switches), limit)
    assert took <= limit
    if want in ("hang", "stall"):
        assert_deadline(w, phase, axes)
    assert_action(w, action, tier, switches)
    assert_cause(w, action, want, events)
    if action == "stand down":  # held: however long, never started, counted or demoted
        for _ in range(3 * e.checking.failures):
            await w.step()
        assert w.actuator.switches[switches:] == [] and e.state == EngineState.STOPPED
    if axes.kind == "embedding":  # asked for embeddings, never for a generation
        assert w.api.embeds and not w.api.thinks


async def test_a_stalled_user_answer_is_a_stall_after_stall_after(tmp_path: Path) -> None:
    """Busy, then the tokens stop with the user's request still in its slot: a stall —
    never before ``stall_after`` of silence, and acted on like a hang."""
    w = world(tmp_path)
    await serving_busy(w, nothing)
    w.api.hung = True
    silent = w.clock.now
    await w.until(lambda: w.engine.failures > 0, 20)
    assert w.clock.now - silent >= w.engine.checking.stall_after
    assert w.engine.last_check and w.engine.last_check["cause"] == "stall"
    await w.until(lambda: len(w.actuator.switches) > 1, 20)
    assert w.actuator.switches[-1] == "rocm"


async def test_without_a_token_signal_an_overdue_canary_waits_for_the_blind_bound(
        tmp_path: Path) -> None:
    """An Ollama before 0.30 (no runner /slots): a user's answer in front of the canary, not
    streamed (connected, nothing flowing), is invisible until it completes. Completed
    requests keep it busy; with none, the canary is a hang only after ``blind_timeout`` —
    never at ``canary_timeout`` alone."""
    w = world(tmp_path, Axes(version="0.12"))
    await healthy_on(w)
    assert w.engine.memory.runner_port is None
    w.api.user, w.api.streams = True, False
    start = w.clock.now
    for _ in range(12):
        await w.step()
        w.log('[GIN] 2026/12/03 - 08:51:00 | 200 |   41.2s |  127.0.0.1 | POST     "/api/chat"')
    assert w.actuator.switches == ["rocm"] and w.engine.canary.busy
    assert "request(s) completed" in w.engine.canary.busy
    took = await w.until(lambda: len(w.actuator.switches) > 1, 40)
    assert w.clock.now - start >= w.engine.checking.blind_timeout
    assert took <= w.engine.checking.blind_timeout + w.engine.checking.stall_after + 3 * 1 + 2


async def test_a_clean_liveness_never_clears_a_hung_load(tmp_path: Path) -> None:
    """The issue's first bug: a load that hangs, liveness clean on every tick."""
    w = world(tmp_path)
    await model_load(w, hang)
    await w.until(lambda: w.engine.failures >= 1, 20)
    for _ in range(2):
        before = w.engine.failures
        await w.step()
        assert w.engine.failures in (before + 1, 0) and w.engine.state != EngineState.HEALTHY
    await w.until(lambda: w.engine.tier == "vulkan", 60)  # restarted, then demoted
    assert [s for s in w.actuator.switches] == ["rocm", "rocm", "vulkan"]


def test_every_phase_and_fault_is_in_the_table() -> None:
    default = [(f, p) for f, p, a, _, _ in CELLS if a == DEFAULT]
    assert {p for _, p in default} == set(PHASES)
    assert {f for f, _ in default} == set(FAULTS)
    assert set(CAUSES) == set(FAULTS)
    for f, p, _, action, want in CELLS:  # every action names its cause; no fault has none
        assert (want is None) == (action in ("nothing", "fresh start", "unmoved")), (f, p)
        assert want is None or Cause(want).action.value != "none"
    for axes in VARIANTS:  # each axis meets every fault that applies to it
        faults = {f for f, _, a, _, _ in CELLS if a == axes}
        missing = set(FAULTS) - faults  # a crash at start is a crash: the same in any axis
        skipped = {"crash at start"}
        if axes.kind == "embedding":
            skipped |= {"slow tokens", "speed like the CPU's"}
        if axes.models == "evicted":  # no load phase; its every hang is a hung load
            skipped |= {"hang from the first generation"}
        assert missing == skipped, (axes, missing)
        phases = {p for _, p, a, _, _ in CELLS if a == axes}
        assert phases == set(AXIS_PHASES) - ({"model load"} if axes.models == "evicted"
                                             else set()), (axes, phases)


def test_cells_by_axis() -> None:
    """How many cells each value of each axis has (printed: ``pytest -s``)."""
    table: dict[str, Counter[str]] = {
        "kind": Counter(a.kind for _, _, a, _, _ in CELLS),
        "models": Counter(a.models for _, _, a, _, _ in CELLS),
        "version": Counter(f"{'>=' if a.new else '<'} 0.30" for _, _, a, _, _ in CELLS),
        "phase": Counter(p for _, p, _, _, _ in CELLS),
        "action": Counter(e for _, _, _, e, _ in CELLS),
        "cause": Counter(c or "-" for _, _, _, _, c in CELLS),
        "axes": Counter(a.label for _, _, a, _, _ in CELLS),
    }
    print(f"\n{len(CELLS)} cells")
    for axis, counts in table.items():
        print(f"{axis:8} " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    assert sum(table["axes"].values()) == len(CELLS) == len(set(IDS))
    assert table["axes"]["default"] == len([1 for f in FAULTS for p in PHASES
                                            if expected(f, p) is not None])


async def test_a_reload_that_changes_the_unit_drains_first_with_a_balancer(tmp_path: Path
                                                                           ) -> None:
    """With [agent] on, a reload that changes a serving engine's unit restarts it once its
    requests in flight are done (here none: after one agent interval), never at once."""
    agent = '\n[agent]\nenabled = true\ninterval = "2s"\n'
    w = world(tmp_path, extra=agent)
    await healthy_on(w)
    changed = w.settings.replace('OLLAMA_MODELS = "', 'OLLAMA_KEEP_ALIVE = "10m"\n'
                                 'OLLAMA_MODELS = "')
    (w.tmp / "llm-supervisor.toml").write_text(changed)
    ok, outcome = await w.sup._reload("SIGHUP")
    assert ok and outcome["diff"]["changed"] == ["main"], outcome
    assert w.actuator.switches == ["rocm"] and w.engine.drain is not None
    assert w.engine.drain.decision.finding is not None
    assert w.engine.drain.decision.finding.cause == Cause.RELOAD
    await w.until(lambda: len(w.actuator.switches) > 1, 10)
    assert w.actuator.switches == ["rocm", "rocm"] and w.engine.memory.cause == "reload"
    drains = [e["to"] for e in w.actuator.events if e["type"] == "drain"]
    assert drains == ["rocm", "done"], drains
