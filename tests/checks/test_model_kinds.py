"""The canary asks what the model can do: reasoning models answer in ``thinking``, embedding
models only embed; and a generation that fails on every try stands on every tick."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest
from fakes import Clock, FakeActuator

from llm_supervisor import config
from llm_supervisor.causes import Cause
from llm_supervisor.checks import health, model, output
from llm_supervisor.checks.model import Kind, ModelFacts
from llm_supervisor.checks.speed import SpeedBook
from llm_supervisor.engine import Engine
from llm_supervisor.records.memory import EngineMemory
from llm_supervisor.states import EngineState

SETTINGS = """
[health]
interval = "1s"
timeout = "1s"
failures = 3
startup_grace = "2s"
canary_every = 1
canary_timeout = "2s"
load_timeout = "4s"
[[engine]]
name = "main"
model = "{model}"
{extra}
"""


def vector(seed: int, n: int = 8) -> list[float]:
    raw = [math.sin(seed * 7 + i) for i in range(n)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


class Ollama:
    """An Ollama >= 0.12.4 serving one model of a given kind, as its API answers."""

    def __init__(self, kind: str = "completion", version: str = "0.33.0") -> None:
        self.kind = kind            # completion | reasoning | reasoning-always | embedding
        self.version = version
        self.digest = "a" * 64
        self.status = 200           # forced status of generations and embeddings
        self.body: dict[str, Any] = {}
        self.vectors: list[list[float]] | None = None
        self.asked: list[dict[str, Any]] = []

    def capabilities(self) -> list[str]:
        return {"completion": ["completion", "tools"],
                "reasoning": ["completion", "tools", "thinking"],
                "reasoning-always": ["completion", "thinking"],
                "embedding": ["embedding"]}[self.kind]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if path == "/":
            return httpx.Response(200, text="Ollama is running")
        if path == "/api/version":
            return httpx.Response(200, json={"version": self.version})
        if path == "/api/show":
            return httpx.Response(200, json={"capabilities": self.capabilities(),
                                             "details": {"family": "qwen3"}})
        if path == "/api/tags":
            return httpx.Response(200, json={"models": [
                {"name": "m:latest", "model": "m:latest", "digest": self.digest}]})
        if path == "/api/ps":
            return httpx.Response(200, json={"models": []})
        if path == "/api/generate":
            self.asked.append(body)
            if self.status != 200:
                return httpx.Response(self.status, json={"error": "llama runner process has"
                                                         " terminated: exit status 2"})
            if self.kind == "embedding":
                return httpx.Response(400, json={"error": '"m" does not support generate'})
            if "think" in body and "thinking" not in self.capabilities():
                return httpx.Response(400, json={"error": '"m" does not support thinking'})
            thinks = self.kind == "reasoning-always" or (
                self.kind == "reasoning" and body.get("think") is not False)
            n = body["options"]["num_predict"]
            text = " five, six, seven, eight"
            out = {"response": "", "thinking": "Okay, the user counts, so next is five"} \
                if thinks else {"response": text}
            return httpx.Response(200, json={"model": "m", **out, "done": True,
                                             "eval_count": n, "eval_duration": int(n * 25e6)})
        if path == "/api/embed":
            self.asked.append(body)
            if self.status != 200:
                return httpx.Response(self.status, json=self.body)
            vectors = self.vectors or [vector(i) for i, _ in enumerate(body["input"])]
            return httpx.Response(200, json={"model": "m", "embeddings": vectors})
        return httpx.Response(404)


def engine_for(api: Any, model_name: str = "m", extra: str = ""
               ) -> tuple[Engine, FakeActuator, Clock]:
    cfg = config.loads(SETTINGS.format(model=model_name, extra=extra))
    clock, wall = Clock(), Clock()
    actuator = FakeActuator(["rocm", "vulkan", "cpu"], clock)
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    engine = Engine(cfg, cfg.engines[0], EngineMemory(), actuator, http, clock=clock, wall=wall)
    return engine, actuator, clock


async def run_ticks(engine: Engine, clock: Clock, n: int) -> None:
    for _ in range(n):
        await engine.tick()
        for _ in range(5):
            await asyncio.sleep(0)
        if engine.canary.task is not None and engine.canary.task.done():
            await engine.tick()
        clock.now += 1
        engine.wall.now += 1  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the facts


def test_show_capabilities_say_the_kind():
    assert model.parse_show({"capabilities": ["embedding"]}) == (Kind.EMBEDDING, False)
    assert model.parse_show({"capabilities": ["completion", "thinking"]}) == (
        Kind.COMPLETION, True)
    assert model.parse_show({"capabilities": ["completion", "embedding"]}) == (
        Kind.COMPLETION, False)
    assert model.parse_show({"license": "x"}) == (None, False)  # before 0.6.4


def test_an_embedding_server_by_its_command_line():
    def kind(kind: str, exec: str, env: str = "") -> Kind | None:
        text = (f'[[engine]]\nname = "e"\nkind = "{kind}"\nexec = "{exec}"\nmodel = "m"\n'
                + env)
        return model.kind_from_command(config.loads(text).engines[0])

    assert kind("llama-server", "/bin/llama-server -m /m.gguf --embeddings") == Kind.EMBEDDING
    assert kind("llama-server", "/bin/llama-server -m /m.gguf") is None
    assert kind("llama-server", "/bin/llama-server -m /m.gguf",
                '[engine.environment]\nLLAMA_ARG_EMBEDDINGS = "1"\n') == Kind.EMBEDDING
    assert kind("vllm", "/opt/vllm/bin/vllm serve m --runner pooling") == Kind.EMBEDDING
    assert kind("vllm", "/opt/vllm/bin/vllm serve m --task=embed") == Kind.EMBEDDING
    assert kind("vllm", "/opt/vllm/bin/vllm serve m") is None


@pytest.mark.parametrize(("kind", "status", "body", "says"), [
    ("ollama", 400, '{"error":"\\"m\\" does not support generate"}', True),
    ("ollama", 400, '{"error":"invalid options"}', False),
    ("llama-server", 501, '{"error":{"code":501,"message":"This server does not support'
     ' completions. Start it without `--embeddings`"}}', True),
    ("vllm", 404, '{"detail":"Not Found"}', True),
    ("vllm", 404, '{"error":{"message":"The model `m` does not exist.","type":'
     '"NotFoundError"}}', False),
])
def test_a_refusal_that_says_the_model_only_embeds(kind: str, status: int, body: str,
                                                   says: bool):
    text = f'[[engine]]\nname = "e"\nkind = "{kind}"\nexec = "/bin/x -m /m"\nmodel = "m"\n'
    cfg = config.loads(text).engines[0]
    assert (model.embedding_refusal(cfg, status, body) is not None) == says


@pytest.mark.parametrize(("vectors", "why"), [
    ([vector(1), vector(2)], None),
    ([vector(1), vector(1)], "the same vector"),
    ([[0.0] * 8, vector(2)], "norm"),
    ([[None] * 8, vector(2)], "no numbers"),
    ([[float("nan")] * 8, vector(2)], "not finite"),
    ([vector(1)], "1 vectors for 2 inputs"),
    ("nope", "str vectors"),
    ([[], vector(1)], "empty"),
])
def test_embeddings_a_faulted_gpu_gives_are_degenerate(vectors: Any, why: str | None):
    said = output.bad_embeddings(vectors)
    assert (said is None) if why is None else (said is not None and why in said), said


def test_a_new_digest_or_version_starts_the_speed_afresh():
    data: dict[str, Any] = {}
    book = SpeedBook(data, "cfg")
    assert not book.identify("a@0.12.3")  # the first identity keeps what there is
    for _ in range(5):
        book.judge("rocm", 40.0, busy=False, gpu=True)
    assert book.reference("rocm") == 40.0
    assert not book.identify("a@0.12.3")
    assert SpeedBook(data, "cfg").reference("rocm") == 40.0  # the same: kept
    assert book.identify("b@0.12.3")  # `ollama pull` brought a new digest
    assert book.reference("rocm") is None


# --------------------------------------------------------------------------- the canary


@pytest.mark.parametrize("kind", ["completion", "reasoning", "reasoning-always"])
async def test_every_completion_model_passes_the_canary_with_text(kind: str):
    """A reasoning model's canary is a raw continuation with think: false where the model
    can think; what it thinks counts as text (gpt-oss cannot stop thinking)."""
    api = Ollama(kind)
    engine, actuator, clock = engine_for(api)
    await engine.start_on("rocm", Cause.START)
    await run_ticks(engine, clock, 3)
    assert engine.state == EngineState.HEALTHY, engine.memory.reason
    asked = api.asked[-1]
    assert asked["raw"] is True and asked["stream"] is False
    assert ("think" in asked) == (kind != "completion")
    assert engine.canary.facts is not None and engine.canary.facts.thinking == (
        kind != "completion")
    assert actuator.switches == ["rocm"]


async def test_an_embedding_model_is_asked_for_an_embedding():
    api = Ollama("embedding")
    engine, actuator, clock = engine_for(api)
    await engine.start_on("rocm", Cause.START)
    await run_ticks(engine, clock, 3)
    assert engine.state == EngineState.HEALTHY, engine.memory.reason
    assert api.asked and all("input" in a for a in api.asked)  # never a generate
    assert engine.canary.facts is not None and engine.canary.facts.kind == Kind.EMBEDDING


async def test_an_embedding_model_without_capabilities_is_found_by_its_refusal():
    """An Ollama that lists no capabilities: its 400 "does not support generate" turns the
    canary into an embedding at once, and no check fails for it."""
    api = Ollama("embedding")
    api.capabilities = lambda: []  # type: ignore[method-assign]
    engine, _, clock = engine_for(api)
    await engine.start_on("rocm", Cause.START)
    await run_ticks(engine, clock, 3)
    assert engine.state == EngineState.HEALTHY, engine.memory.reason
    assert engine.failures == 0 and "input" in api.asked[-1]
    facts = engine.canary.facts
    assert facts is not None and facts.kind == Kind.EMBEDDING and "generate" in facts.source


@pytest.mark.parametrize("fault", ["zeros", "constant", "nan-400"])
async def test_a_faulted_embedding_is_degenerate_and_stands(fault: str):
    api = Ollama("embedding")
    engine, actuator, clock = engine_for(api)
    await engine.start_on("rocm", Cause.START)
    await run_ticks(engine, clock, 3)
    assert engine.state == EngineState.HEALTHY
    if fault == "zeros":
        api.vectors = [[0.0] * 8, [0.0] * 8]
    elif fault == "constant":
        api.vectors = [vector(3), vector(3)]
    else:
        api.status, api.body = 400, {"error": "failed to encode response: json: unsupported"
                                     " value: NaN"}
    await run_ticks(engine, clock, 6)
    assert actuator.switches[1:2] == ["rocm"], (actuator.switches, engine.memory.reason)
    assert engine.memory.cause == Cause.DEGENERATE.value


async def test_a_generation_that_fails_on_every_try_is_acted_on():
    """HTTP 500 on every generation while ``/`` answers 200: a failed check on every tick —
    never alternating with clean ones — so `failures` in a row restart, then demote."""
    api = Ollama("completion")
    engine, actuator, clock = engine_for(api)
    await engine.start_on("rocm", Cause.START)
    await run_ticks(engine, clock, 3)
    assert engine.state == EngineState.HEALTHY
    api.status = 500
    seen: list[int] = []
    for _ in range(8):
        await run_ticks(engine, clock, 1)
        seen.append(engine.failures)
        if len(actuator.switches) > 1:
            break
    assert actuator.switches[1:] == ["rocm"], (seen, engine.memory.reason)
    assert 0 not in seen[: seen.index(max(seen))], seen  # never a clean tick in between
    assert engine.memory.cause == Cause.GENERATION.value
    await run_ticks(engine, clock, 12)
    assert "vulkan" in actuator.switches  # restarted once on the tier, then demoted


async def test_a_wake_during_a_check_is_not_lost():
    """A log finding that arrives while a check runs is acted on at once, not an
    ``interval`` later: the loop clears its wake-up before the check, not after."""
    api = Ollama("completion")
    engine, actuator, clock = engine_for(api)
    engine.checking = engine.checking.model_copy(update={"interval": 30.0, "canary_every": 0})
    await engine.start_on("rocm", Cause.START)
    ticks_seen = asyncio.Event()
    real_status = actuator.unit_status

    async def slow_status(e: Engine) -> Any:
        if engine.ticks == 1:  # during the second check: a GPU error line arrives
            engine.intake.finding(health.Observation.bad("log", Cause.GPU_FAULT, "HIP error"))
            ticks_seen.set()
        return await real_status(e)

    actuator.unit_status = slow_status  # type: ignore[method-assign]
    runner = asyncio.create_task(engine.run())
    try:
        async with asyncio.timeout(5):  # far less than the 30 s interval
            while engine.ticks < 1:
                await asyncio.sleep(0.01)
            engine.wake.set()
            await ticks_seen.wait()
            while "vulkan" not in actuator.switches:
                await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert actuator.switches == ["rocm", "vulkan"]


def test_facts_render_for_status():
    facts = ModelFacts(Kind.EMBEDDING, False, "sha256:" + "b" * 64, "0.33.0", "/api/show")
    shown = facts.to_dict()
    assert shown["kind"] == "embedding" and shown["version"] == "0.33.0"
    assert len(shown["digest"]) == 19


class SlowOllama(Ollama):
    """Generations wait for ``release``: a canary still running when a user's request ends."""

    def __init__(self) -> None:
        super().__init__("completion", "0.12.3")
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/generate":
            await self.release.wait()
        return await super().__call__(request)


async def test_a_canary_that_shared_an_ollama_without_tokens_is_not_learned():
    """Ollama before 0.30: a request completed while the canary ran — its rate is not the
    engine's own: neither learned nor judged."""
    api = SlowOllama()
    engine, actuator, clock = engine_for(api)

    async def nobody(cfg: Any) -> Any:
        return None
    engine.canary.view = nobody
    await engine.start_on("rocm", Cause.START)
    await run_ticks(engine, clock, 3)
    learned = len(engine.speedbook.data["tiers"]["rocm"]["samples"])
    assert learned >= 1  # unshared canaries are learned
    api.release.clear()
    await run_ticks(engine, clock, 1)  # a canary is under way, held
    assert engine.canary.task is not None and not engine.canary.task.done()
    engine.canary.completed()  # its own request's line, read before its answer: still its own
    api.release.set()
    await run_ticks(engine, clock, 1)
    assert len(engine.speedbook.data["tiers"]["rocm"]["samples"]) == learned + 1
    api.release.clear()
    await run_ticks(engine, clock, 1)
    assert engine.canary.task is not None and not engine.canary.task.done()
    engine.canary.completed()  # a user's request ended meanwhile (its gin line) ...
    engine.canary.completed()  # ... and the canary's own
    api.release.set()
    await run_ticks(engine, clock, 1)
    assert len(engine.speedbook.data["tiers"]["rocm"]["samples"]) == learned + 1  # not learned
    assert len(engine.speedbook.data["tiers"]["rocm"]["last"]) == min(learned + 2, 5)  # shown


async def test_a_model_pulled_anew_while_the_engine_runs_starts_its_speed_afresh():
    """`ollama pull` brings a new digest under the same name; Ollama loads it at the next
    use. The canary that finds the model unloaded reads the facts again: a new identity, a
    speed learned afresh (a `speed` event `reset`)."""
    api = Ollama("completion")  # its /api/ps lists nothing: every canary loads the model
    engine, actuator, clock = engine_for(api)
    await engine.start_on("rocm", Cause.START)
    await run_ticks(engine, clock, 4)
    assert engine.speedbook.data["tiers"]["rocm"]["samples"]
    assert not [e for e in actuator.events if e["type"] == "speed"]
    api.digest = "b" * 64
    await run_ticks(engine, clock, 2)
    resets = [e for e in actuator.events if e["type"] == "speed" and e["to"] == "reset"]
    assert len(resets) == 1 and engine.canary.facts is not None
    assert engine.canary.facts.digest == "b" * 64
    assert len(engine.speedbook.data["tiers"]["rocm"]["samples"]) <= 2  # learning afresh
