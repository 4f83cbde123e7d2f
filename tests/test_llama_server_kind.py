"""``kind = "llama-server"``: config, units, health checks (httpx.MockTransport), the device
it loaded on read from its log (the recorded start-up logs of the real binary), and its
``--list-devices`` as a per-engine tier probe (the real binary, and fakes of it)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import Clock, FakeActuator, settle

from llm_supervisor import config
from llm_supervisor.causes import Cause
from llm_supervisor.checks import classify as logwatch
from llm_supervisor.checks import health
from llm_supervisor.control import handlers
from llm_supervisor.engine import Engine
from llm_supervisor.host import devicelist, tiers
from llm_supervisor.records.memory import EngineMemory
from llm_supervisor.states import EngineState
from llm_supervisor.systemd import units
from llm_supervisor.systemd.systemctl import UnitStatus

DATA = Path(__file__).parent / "data" / "llama-server"
HOST = units.HostFacts(frozenset({"render", "video"}), cpu_count=8, mem_total=64 << 30)


def engine_config(extra: str = "", settings: str = "") -> config.Config:
    return config.loads(f"""{settings}
[[engine]]
name = "llama"
kind = "llama-server"
exec = "/opt/llama/bin/llama-server -m /var/lib/llama/tiny.gguf -c 256"
listen = "127.0.0.1:18080"
{extra}""")


# --------------------------------------------------------------------------- config, units

def test_the_kind_needs_exec_and_has_its_defaults():
    with pytest.raises(config.ConfigError, match="llama-server engine needs `exec`"):
        config.loads('[[engine]]\nname = "x"\nkind = "llama-server"\n')
    engine = config.loads('[[engine]]\nname = "x"\nkind = "llama-server"\n'
                          'exec = "/usr/bin/llama-server -m /m.gguf"\n').engines[0]
    assert (engine.listen, engine.user, engine.group, engine.writable) == (
        "127.0.0.1:8080", "llama", "llama", ("/var/lib/llama",))


@pytest.mark.parametrize("flag", ["--port 9", "--host=0.0.0.0", "--device Vulkan0", "-dev none"])
def test_address_and_device_flags_are_refused_in_exec(flag):
    with pytest.raises(config.ConfigError, match="leave .* out of a llama-server `exec`"):
        engine_config(f'[engine.tiers.rocm]\nexec = "/opt/gfx906/llama-server {flag}"\n')


def test_the_tier_picks_the_device_and_listen_the_address():
    cfg = engine_config()
    engine = cfg.engines[0]
    env = {t: tiers.tier_environment(engine, t) for t in ("rocm", "vulkan", "cpu")}
    assert env["rocm"]["LLAMA_ARG_DEVICE"] == "ROCm0"
    assert env["vulkan"]["LLAMA_ARG_DEVICE"] == "Vulkan0"
    assert env["vulkan"]["LLAMA_ARG_N_GPU_LAYERS"] == "999"  # else it offloads no layer
    assert env["cpu"]["LLAMA_ARG_DEVICE"] == "none"
    assert "GGML_VK_VISIBLE_DEVICES" not in env["cpu"]  # "-1" aborts this build
    assert not tiers.kind_supports(engine, "opencl")[0]
    rendered = units.render(cfg, engine, "vulkan", HOST)
    unit = rendered.unit_text
    for line in ('Environment="LLAMA_ARG_HOST=127.0.0.1"', 'Environment="LLAMA_ARG_PORT=18080"',
                 'Environment="LLAMA_ARG_ENDPOINT_METRICS=1"',
                 'Environment="XDG_CACHE_HOME=/var/cache/llm-llama"',
                 "CacheDirectory=llm-llama", "User=llama"):
        assert line in unit.splitlines(), unit
    assert "OLLAMA_HOST" not in unit
    assert 'Environment="LLAMA_ARG_DEVICE=Vulkan0"' in rendered.dropin_text


# --------------------------------------------------------------------------- health checks

class FakeLlamaServer:
    """llama-server's answers, as recorded from the real one (tests/data/llama-server)."""

    def __init__(self) -> None:
        self.loading = False
        self.hang = False
        self.status = 200
        self.key: str | None = None
        self.rate = 29.0
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/health":
            if self.loading:
                return httpx.Response(503, text=(DATA / "health-loading.json").read_text())
            return httpx.Response(200, text=(DATA / "health-ok.json").read_text())
        if request.url.path == "/completion":
            if self.hang:
                await asyncio.sleep(10)
            if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
                return httpx.Response(401, json={"error": {"code": 401, "message":
                                                           "Invalid API Key"}})
            if self.status != 200:
                return httpx.Response(self.status, json={"error": {"code": self.status}})
            body = json.loads(request.content)
            return httpx.Response(200, json={
                "content": "abcd", "tokens_predicted": body["n_predict"], "stop": True,
                "timings": {"predicted_n": body["n_predict"],
                            "predicted_per_second": self.rate}})
        return httpx.Response(404, json={"error": {"code": 404, "message": "File Not Found"}})


def client(api: FakeLlamaServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(api))


async def test_liveness_is_get_health_and_503_while_loading_says_so():
    api = FakeLlamaServer()
    engine = engine_config().engines[0]
    async with client(api) as http:
        assert (await health.liveness(http, engine, 1)).ok
        assert api.requests[-1].url.path == "/health"
        api.loading = True
        loading = await health.liveness(http, engine, 1)
    assert not loading.ok and loading.cause == Cause.UNRESPONSIVE
    assert "HTTP 503 (Loading model)" in loading.reason


async def test_the_canary_generates_and_reads_its_rate_from_timings():
    api = FakeLlamaServer()
    engine = engine_config().engines[0]
    async with client(api) as http:
        done = await health.canary(http, engine, 1)
        assert done.ok and done.tokens_per_second == 29.0
        body = json.loads(api.requests[-1].content)
        assert api.requests[-1].url.path == "/completion"
        assert body["n_predict"] == health.CANARY_TOKENS and body["ignore_eos"] is True
        slow = await health.canary(http, engine, 1, min_tokens_per_second=100)
        assert slow.cause == Cause.SLOW and "29.0 tokens/s" in slow.reason
        api.hang = True
        hung = await health.canary(http, engine, 0.2, cap=0.2)  # no deadline: a cap
    assert hung.cause == Cause.HANG


async def test_the_canary_sends_the_key_and_maps_401_and_404(tmp_path):
    key = tmp_path / "key"
    key.write_text("secret\n")
    api = FakeLlamaServer()
    api.key = "secret"
    with_key = engine_config(f'api_key_file = "{key}"').engines[0]
    without = engine_config().engines[0]
    async with client(api) as http:
        assert (await health.canary(http, with_key, 1)).ok
        refused = await health.canary(http, without, 1)
        assert refused.cause == Cause.AUTH and "set api_key_file" in refused.finding.fix
        api.key, api.status = None, 404
        missing = await health.canary(http, without, 1)
    assert missing.cause == Cause.MODEL_MISSING and "-m in `exec`" in missing.finding.fix


def make(usable=("vulkan", "cpu"), grace="10s", load=""):
    cfg = engine_config(settings=f"""
[health]
interval = "1s"
timeout = "1s"
failures = 3
startup_grace = "{grace}"
{f'load_timeout = "{load}"' if load else ""}
canary_every = 1
canary_timeout = "200ms"
[fallback]
restarts_per_tier = 1
promote_after = "0"
""")
    clock, wall = Clock(), Clock()
    actuator = FakeActuator(list(usable), clock)
    api = FakeLlamaServer()
    engine = Engine(cfg, cfg.engines[0], EngineMemory(), actuator, client(api), clock=clock,
                    wall=wall)
    return engine, actuator, api, clock


async def test_503_while_loading_is_no_failure_within_the_grace_but_is_after_it():
    engine, actuator, api, clock = make()
    await engine.start_on("vulkan", Cause.START)
    api.loading = True
    await settle(engine, 8)  # 8 s of "Loading model"
    assert engine.state == EngineState.STARTING and actuator.switches == ["vulkan"]
    api.loading = False
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY and engine.canary.tokens_per_second == 29.0
    # a load that outlasts the grace is an unresponsive engine: restart, then demote
    await engine.start_on("vulkan", Cause.START)
    api.loading = True
    clock.now += 11
    await settle(engine, 3)
    assert actuator.switches == ["vulkan", "vulkan", "vulkan"]
    assert engine.cause == Cause.UNRESPONSIVE
    assert "GET /health: HTTP 503 (Loading model) (3 checks in a row)" in engine.memory.reason


async def test_a_long_load_that_says_so_has_the_loads_deadline_not_the_grace():
    """A 40 GB model from a slow disk: llama-server answers 503 "Loading model" past the
    start-up grace. Within load_timeout that is a load, no failure; past it, a failure."""
    engine, actuator, api, clock = make(load="60s")
    await engine.start_on("vulkan", Cause.START)
    api.loading = True
    clock.now += 40  # far past the 10 s grace, within the 60 s load
    await settle(engine, 5)
    assert engine.failures == 0 and actuator.switches == ["vulkan"]
    clock.now += 20
    await settle(engine, 3)
    assert actuator.switches == ["vulkan", "vulkan"] and engine.cause == Cause.UNRESPONSIVE


# --------------------------------------------------------------------------- its devices

def journal(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def devices_of(path: Path) -> list[logwatch.Device]:
    return [d for d in map(logwatch.parse_device, journal(path)) if d is not None]


def test_the_device_lines_of_a_real_start_up_log():
    vulkan = devices_of(DATA / "startup-device-vulkan0.log")
    assert [(d.used, d.library, d.name, d.description) for d in vulkan] == [
        (True, "Vulkan", "Vulkan0", "llvmpipe (LLVM 15.0.6, 256 bits)")]
    cpu = devices_of(DATA / "startup-device-none.log")
    assert [(d.library, d.reason, d.supersedes) for d in cpu] == [
        ("cpu", "offloaded 0/3 layers to the GPU", True)]
    line = "llama_model_load_from_file_impl: using device ROCm0 (AMD Instinct MI50) - 16304 MiB free"
    rocm = logwatch.parse_device(line)
    assert rocm is not None and (rocm.library, rocm.name, rocm.label()) == (
        "ROCm", "ROCm0", "ROCm: AMD Instinct MI50")


async def feed(engine: Engine, lines: list[str]) -> None:
    for line in lines:
        device = logwatch.parse_device(line)
        if device is not None:
            engine.intake.device(device)


async def test_loaded_on_its_tiers_device_is_healthy_with_that_backend():
    engine, actuator, _, clock = make()
    await engine.start_on("vulkan", Cause.START)
    await feed(engine, journal(DATA / "startup-device-vulkan0.log"))
    clock.now += 11
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY
    assert engine.memory.backend == "Vulkan: llvmpipe (LLVM 15.0.6, 256 bits)"


async def test_no_layer_on_the_gpu_on_a_gpu_tier_is_placement():
    engine, actuator, _, clock = make()
    await engine.start_on("vulkan", Cause.START)
    vulkan = journal(DATA / "startup-device-vulkan0.log")
    # the device was chosen, but -ngl 0 (in `exec`) put every layer on the CPU
    await feed(engine, [line.replace("offloaded 3/3", "offloaded 0/3") for line in vulkan])
    clock.now += 11
    await settle(engine)
    assert actuator.switches == ["vulkan", "cpu"], engine.memory.reason
    assert engine.cause == Cause.PLACEMENT
    assert "offloaded 0/3 layers to the GPU on the vulkan tier" in engine.memory.reason


async def test_a_rocm_tier_computing_on_vulkan_is_a_backend_mismatch():
    engine, actuator, _, clock = make(usable=("rocm", "vulkan", "cpu"))
    await engine.start_on("rocm", Cause.START)
    await feed(engine, journal(DATA / "startup-device-vulkan0.log"))
    clock.now += 11
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan"]
    assert engine.cause == Cause.BACKEND_MISMATCH and "rocm" in engine.memory.skipped


def test_invalid_device_is_discovery_and_a_missing_model_blocks():
    rules = logwatch.rules_for(config.LogsSection())[0]
    failed = (DATA / "startup-vulkan0-without-driver.log").read_text().splitlines()
    found = [logwatch.classify(rules, line, tier="vulkan") for line in failed]
    assert [f.cause for f in found if f] == [Cause.DISCOVERY]
    missing = logwatch.classify(rules, "gguf_init_from_file: failed to open GGUF file"
                                " '/var/lib/llama/x.gguf'", tier="cpu")
    assert missing is not None and missing.cause == Cause.MODEL_MISSING
    by_env = 'error while handling environment variable "LLAMA_ARG_DEVICE": invalid device: ROCm0'
    assert logwatch.classify(rules, by_env, tier="rocm").cause == Cause.DISCOVERY
    bad = 'error while handling environment variable "LLAMA_ARG_CTX_SIZE": stoi'
    assert logwatch.classify(rules, bad, tier="cpu").cause == Cause.CONFIG


async def test_a_missing_model_file_stops_the_unit_while_blocked():
    engine, actuator, _, _ = make()
    await engine.start_on("cpu", Cause.START)
    rules = logwatch.rules_for(config.LogsSection())[0]
    found = logwatch.classify(rules, "gguf_init_from_file: failed to open GGUF file 'x'",
                              tier="cpu")
    assert found is not None
    engine.intake.finding(found)
    # llama-server exits without its model: a failed start, which the line explains
    actuator.unit = UnitStatus("llm-llama.service", "activating", "auto-restart", 1, 1, 0)
    await engine.tick()
    assert engine.state == EngineState.BLOCKED and actuator.stops == 1
    assert engine.memory.cause == "model_missing"
    actuator.is_cleared = True  # the daemon: the -m file exists now
    await engine.tick()
    assert engine.state == EngineState.STARTING and actuator.switches == ["cpu", "cpu"]


def test_the_model_file_is_read_from_exec():
    from llm_supervisor.checks.diagnosis import model_of

    assert str(model_of("/bin/llama-server -c 9 -m /m/a.gguf")) == "/m/a.gguf"
    assert str(model_of("/bin/llama-server --model=/m/b.gguf")) == "/m/b.gguf"
    assert model_of("/bin/llama-server --hf-repo x/y") is None


# --------------------------------------------------------------------------- --list-devices

def test_list_devices_output_parses():
    text = (DATA / "list-devices-default.txt").read_text()
    stdout = text.split("# stdout:\n", 1)[1].split("# stderr:", 1)[0]
    assert devicelist.parse(stdout) == {
        "Vulkan0": "llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, 2048 MiB free)"}
    assert devicelist.parse("Available devices:\n") == {}
    assert devicelist.parse("Available devices:\n  (none)\n") == {}
    assert devicelist.parse("") is None


def fake_build(tmp_path: Path, listing: str, status: int = 0) -> Path:
    tool = tmp_path / "llama-server"
    tool.write_text(f"#!/bin/sh\nprintf '{listing}'\nenv > {tmp_path}/env\nexit {status}\n")
    tool.chmod(0o755)
    return tool


async def test_a_tier_whose_device_this_build_lacks_is_skipped(tmp_path):
    tool = fake_build(tmp_path, "Available devices:\\n  Vulkan0: RADV VEGA20 (16368 MiB,"
                      " 16000 MiB free)\\n")
    engine = config.loads(f'[[engine]]\nname = "x"\nkind = "llama-server"\nexec = "{tool}'
                          ' -m /m.gguf"\nenvironment = { LLAMA_ARG_CTX_SIZE = "9" }\n').engines[0]
    skipped, listings = await devicelist.skipped_tiers(engine, ["rocm", "vulkan", "cpu"], 5)
    assert list(skipped) == ["rocm"]
    assert "does not list ROCm0 (it lists: Vulkan0)" in skipped["rocm"]
    assert [x.tier for x in listings] == ["rocm", "vulkan"]  # cpu names no device
    env = (tmp_path / "env").read_text()
    assert "LLAMA_ARG_" not in env  # its flags stay out of the listing


async def test_a_listing_that_fails_or_hangs_skips_the_tier(tmp_path):
    broken = fake_build(tmp_path, "boom\\n", status=134)
    engine = config.loads(f'[[engine]]\nname = "x"\nkind = "llama-server"\n'
                          f'exec = "{broken}"\n').engines[0]
    skipped, _ = await devicelist.skipped_tiers(engine, ["vulkan"], 5)
    assert "failed: exit status 134" in skipped["vulkan"]
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nsleep 30\n")
    hang.chmod(0o755)
    engine = engine.model_copy(update={"exec": str(hang)})
    skipped, _ = await devicelist.skipped_tiers(engine, ["vulkan"], 0.3)
    assert "timed out after 0.3s" in skipped["vulkan"]


async def test_the_real_build_lists_llvmpipe_and_nothing_without_a_vulkan_driver(tmp_path):
    from llamaserver import binary

    engine = config.loads(f'[[engine]]\nname = "x"\nkind = "llama-server"\n'
                          f'exec = "{binary()} -m /m.gguf"\n').engines[0]
    skipped, listings = await devicelist.skipped_tiers(engine, ["rocm", "vulkan", "cpu"], 30)
    assert list(skipped) == ["rocm"] and "Vulkan0" in listings[1].devices
    gone = engine.model_copy(update={"tiers": {"vulkan": config.TierOverride(
        environment={"VK_ICD_FILENAMES": "/nonexistent.json"})}})
    skipped, _ = await devicelist.skipped_tiers(gone, ["vulkan"], 30)
    assert "does not list Vulkan0 (it lists: no device)" in skipped["vulkan"]


# --------------------------------------------------------------------------- status

class _Sup:
    def __init__(self, cfg: config.Config) -> None:
        self.config = cfg
        self.hostfacts = HOST

    def choices(self, engine: Engine) -> list[Any]:
        return tiers.choices(self.config, engine.cfg, {}, skipped={})


def test_status_names_its_metrics_endpoint():
    cfg = engine_config()
    engine = Engine(cfg, cfg.engines[0], EngineMemory(), FakeActuator(["cpu"]),
                    httpx.AsyncClient())
    doc = handlers.engine_document(_Sup(cfg), engine)  # type: ignore[arg-type]
    assert doc["metrics_url"] == "http://127.0.0.1:18080/metrics"
    assert os.path.basename(doc["unit"]) == "llm-llama.service"
