"""Lines and progress belong to a model: on an Ollama with several models, each runner's
lines are attributed to the model whose manifest names its blob; only the engine's own model
judges placement and progress."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
from fakes import Clock, FakeActuator, FakeOllama

from llm_supervisor import config
from llm_supervisor.causes import Cause
from llm_supervisor.checks.observations import DEVICES_SETTLE
from llm_supervisor.checks.runners import RunnerLog, parse_start
from llm_supervisor.daemon import Setup, Supervisor
from llm_supervisor.engine import Engine
from llm_supervisor.records.memory import EngineMemory, State
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.units import HostFacts

CHAT, EMBED = "1" * 64, "2" * 64


def start_line(blob: str, port: int, embedding: bool = False, version: str = "0.30") -> str:
    extra = " --embedding" if embedding else ""
    if version == "0.30":
        return ('time=2026-12-07T08:00:00.000Z level=INFO source=llama_server.go:431'
                ' msg="starting llama-server" cmd="/usr/lib/ollama/llama-server --model'
                f' /srv/models/blobs/sha256-{blob} --port {port} -c 4096{extra}"')
    return ('time=2026-12-07T08:00:00.000Z level=INFO source=server.go:398 msg="starting'
            f' runner" cmd="/usr/local/bin/ollama runner --model /srv/models/blobs/sha256-{blob}'
            f' --port {port}"')


def manifest(models: Path, name: str, tag: str, blob: str) -> None:
    path = models / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{blob}",
         "size": 1}]}))


def test_a_runner_start_line_names_its_blob_port_and_kind():
    r = parse_start(start_line(EMBED, 41001, embedding=True))
    assert r is not None and r.blob == f"sha256-{EMBED}" and r.port == 41001 and r.embedding
    old = parse_start(start_line(CHAT, 39001, version="0.12"))
    assert old is not None and old.blob == f"sha256-{CHAT}" and old.port == 39001
    assert parse_start('msg="starting runner" cmd="/x/ollama runner --port 1"') is not None
    assert parse_start("offloaded 0/13 layers to GPU") is None


def test_lines_follow_the_runner_that_started_last():
    log = RunnerLog(lambda: f"sha256-{CHAT}")
    assert log.line("inference compute library=ROCm") == (None, True)  # discovery: own
    runner, own = log.line(start_line(EMBED, 41001, embedding=True))
    assert runner is not None and not own
    assert log.line("load_tensors: offloaded 0/13 layers to GPU")[1] is False
    assert log.line(start_line(CHAT, 41002))[1] is True
    assert log.line("offloaded 29/29 layers to GPU")[1] is True
    unknown = RunnerLog(lambda: None)  # no manifest to read: every runner is its own
    assert unknown.line(start_line(EMBED, 41001))[1] is True


def engine_with_models(tmp_path: Path) -> tuple[Engine, FakeActuator, Supervisor, Clock]:
    models = tmp_path / "models"
    manifest(models, "qwen3", "8b", CHAT)
    manifest(models, "nomic-embed-text", "latest", EMBED)
    cfg = config.loads(f'[[engine]]\nname = "main"\nmodel = "qwen3:8b"\n'
                       f'[engine.environment]\nOLLAMA_MODELS = "{models}"\n')
    clock = Clock()
    actuator = FakeActuator(["rocm", "vulkan", "cpu"], clock)
    http = httpx.AsyncClient(transport=httpx.MockTransport(FakeOllama()))
    engine = Engine(cfg, cfg.engines[0], EngineMemory(), actuator, http, clock=clock,
                    wall=Clock())
    sup = Supervisor(Setup(tmp_path / "none.toml", cfg, State(), HostFacts(frozenset()),
                           ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), boot_id=""))
    return engine, actuator, sup, clock


async def test_another_models_cpu_placement_is_shown_never_a_fault(tmp_path: Path):
    """A RAG set-up: the chat model on the GPU, Ollama put the embedding model on the CPU.
    Its "offloaded 0/13 layers" is shown under other_models; the engine stays on rocm and
    reads progress from its own model's runner."""
    engine, actuator, sup, clock = engine_with_models(tmp_path)
    await engine.start_on("rocm", Cause.START)
    sink = sup.supervision.engine_line(engine)
    for line in [start_line(CHAT, 41002), "using device ROCm0 (AMD Instinct MI50)",
                 "load_tensors: offloaded 37/37 layers to GPU",
                 start_line(EMBED, 41001, embedding=True),
                 "load_tensors: offloaded 0/13 layers to GPU"]:
        sink(line, "c", None)
    assert engine.intake.runner_port == 41002  # its own runner's /slots, not the last one
    assert engine.intake.offloads == [(37, 37)]  # its own model's, not the other's
    assert engine.intake.others[f"sha256-{EMBED}"]["offload"] == "0/13"
    assert engine.intake.others[f"sha256-{EMBED}"]["embedding"] is True
    clock.now += DEVICES_SETTLE + 11
    for _ in range(3):
        await engine.tick()
    assert engine.memory.runner_port == 41002 and engine.memory.offload == "37/37"
    assert actuator.switches == ["rocm"] and engine.state != EngineState.DEGRADED
    assert not any(o.cause == Cause.PLACEMENT for o in engine._backend())


async def test_its_own_models_cpu_placement_still_demotes(tmp_path: Path):
    engine, actuator, sup, clock = engine_with_models(tmp_path)
    await engine.start_on("rocm", Cause.START)
    sink = sup.supervision.engine_line(engine)
    for line in [start_line(EMBED, 41001, embedding=True), "offloaded 13/13 layers to GPU",
                 start_line(CHAT, 41002), "load_tensors: offloaded 0/37 layers to GPU"]:
        sink(line, "c", None)
    clock.now += DEVICES_SETTLE + 11
    await engine.tick()
    assert actuator.switches == ["rocm", "vulkan"] and engine.memory.cause == "placement"
