"""The engines' life stories on stderr: start-up, discovery, crash, ready, model loads, shutdown.

Each kind tells the same events with its own real lines (Ollama: server/routes.go,
discover/runner.go, discover/types.go LogDetails, llm/llama_server.go or, before 0.30,
llm/server.go; vLLM: api_server.py, gpu_model_runner.py, uvicorn). Source line numbers are
plausible, not pinned to a release. A model's load is told by its runner: the command it is
started with, then llama.cpp's own lines unprefixed (the device, ``load_tensors:`` as the load
goes on), then how long it took.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from datetime import datetime

from llm_supervisor.simengine.api import VLLM_VERSION, RunnerServer
from llm_supervisor.simengine.cards import Card, card_for, host_cards
from llm_supervisor.simengine.engine import LLAMA_SERVER_RUNNER, RUNNER_LINE, Engine
from llm_supervisor.simengine.logs import CPU_MEMORY, error_lines, inference_compute
from llm_supervisor.simengine.models import Model
from llm_supervisor.simengine.placement import go_false, host_gpus

LIBDIR = "/usr/local/lib/ollama"
STOCK_MODELS = "/usr/share/ollama/.ollama/models"
EMBEDDING_BATCH = 2048  # llm/llama_server.go DefaultEmbeddingNumBatch

SERVER_CONFIG_VARS = ("GGML_VK_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "HSA_OVERRIDE_GFX_VERSION",
                      "OLLAMA_HOST", "OLLAMA_LLM_LIBRARY", "OLLAMA_VULKAN", "ROCR_VISIBLE_DEVICES")
OVERRIDE_VARS = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES",
                 "HSA_OVERRIDE_GFX_VERSION")
GO_ABORT = ("SIGABRT: abort", "PC=0x7f1c2a0969fc m=5 sigcode=18446744073709551610",
            "signal arrived during cgo execution")


class Ollama:
    def __init__(self, engine: Engine, env: Mapping[str, str], reason: str) -> None:
        self.engine, self.env, self.reason = engine, env, reason
        self.log = engine.log

    def starting(self, url: str) -> None:
        values = {name: self.env.get(name, "") for name in SERVER_CONFIG_VARS}
        values["OLLAMA_HOST"] = url
        values["OLLAMA_VULKAN"] = "false" if go_false(values["OLLAMA_VULKAN"]) else "true"
        env = " ".join(f"{k}:{v}" for k, v in values.items())
        self.log.slog("INFO", "routes.go:1727", "server config", env=f"map[{env}]")

    def listening(self, address: str) -> None:
        self.log.slog("INFO", "routes.go:1833",
                      f"Listening on {address} (version {self.engine.version})")
        self.log.slog("INFO", "simengine.py", "simulated host", gpus=",".join(
            host_gpus(self.env)), library=self.engine.library, reason=self.reason,
                      OLLAMA_GPU_DRIVER=self.env.get("OLLAMA_GPU_DRIVER", ""))
        self.log.slog("INFO", "runner.go:67", "discovering available GPUs...")
        if RUNNER_LINE <= self.engine.release < LLAMA_SERVER_RUNNER:
            # 0.12-0.29 discover GPUs with short-lived runners: no --model, gone at once
            port = random.randint(32768, 60999)
            self.log.slog("INFO", "server.go:399", "starting runner",
                          cmd=f"/usr/local/bin/ollama runner --ollama-engine --port {port}")
        faults = self.engine.faults
        if faults.drops_igpu and self.engine.library == "rocm":
            self._dropping("1", "gfx1103")  # an APU's iGPU beside the card
        if faults.drops_rocm and self.engine.library == "rocm":
            self._dropping("0", faults.drops_rocm)
        overrides = {k: self.env[k] for k in OVERRIDE_VARS if self.env.get(k)}
        for name, value in overrides.items():
            self.log.slog("WARN", "runner.go:487", "user overrode visible devices",
                          **{name: value})
        if overrides:
            self.log.slog("WARN", "runner.go:491",
                          "if GPUs are not correctly discovered, unset and try again")

    def _dropping(self, device: str, target: str) -> None:
        """discover/amd.go: this build ships no rocBLAS/Tensile kernels for the target."""
        self.log.slog("WARN", "amd.go:117", "dropping ROCm device — no rocblas support for gfx"
                      " target", device=device, gfx_target=target,
                      supported="[gfx908 gfx90a gfx942 gfx950 gfx1030 gfx1100 gfx1101 gfx1102"
                      " gfx1200 gfx1201]", hint="see https://docs.ollama.com/gpu")

    def crashed(self, lines: tuple[str, ...], on_start: bool) -> None:
        self.log.lines(lines + GO_ABORT)

    def _device(self, library: str) -> tuple[Card, int]:
        """The card it computes on with ``library``, and its number among the devices the
        library sees: the one the selection variables leave, or the library's first when
        ``--library`` forced a library they hide."""
        cards = host_cards(self.env)
        found = card_for(cards, library, self.env) or card_for(cards, library, {})
        assert found is not None, "every simulated host has a card each library lists"
        return found

    def ready(self) -> None:
        engine = self.engine
        if engine.faults.cpu_fallback and engine.library != "cpu":
            libdir = f"/usr/local/lib/ollama/{engine.library}"
            self.log.slog("INFO", "runner.go:545", "failure during GPU discovery",
                          OLLAMA_LIBRARY_PATH=f"[/usr/local/lib/ollama {libdir}]",
                          extra_envs="map[GGML_CUDA_INIT:1 ROCR_VISIBLE_DEVICES:0]",
                          error="runner crashed")
        if engine.on_gpu:
            device = inference_compute(engine.placement, *self._device(engine.placement))
            total = device["total"]
            self.log.slog("INFO", "types.go:42", "inference compute", **device)
        else:
            total, available = CPU_MEMORY
            self.log.slog("INFO", "types.go:60", "inference compute", id="cpu", library="cpu",
                          compute="", name="cpu", description="cpu", libdirs="ollama",
                          driver="", pci_id="", type="", total=total, available=available)
            total = "0 B"
        self.log.slog("INFO", "routes.go:1768", "vram-based default context", total_vram=total,
                      default_num_ctx=4096)

    def runner(self, model: Model) -> RunnerStart:
        """A model starts loading: its runner is started on a loopback port of its own and
        says so (Ollama >= 0.30: an upstream llama-server, llm/llama_server.go; 0.12-0.29
        "starting runner", 0.9-0.11 "starting llama server": ``ollama runner``)."""
        engine = self.engine
        server = RunnerServer(engine, model, llama=engine.llama_server_runners)
        model.runner = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         name=f"runner {model.name}", daemon=True).start()
        port = int(server.server_address[1])
        models = str(engine.models_dir) if engine.models_dir else STOCK_MODELS
        blob = f"{models}/blobs/sha256-{model.blob}"
        if engine.llama_server_runners:
            self.log.slog("INFO", "llama_server.go:431", "starting llama-server",
                          cmd=self._llama_server_cmd(model, blob, port))
            self.log.slog("INFO", "llama_server.go:470", "loading model via llama-server",
                          model=blob)
            self.log.slog("INFO", "llama_server.go:583",
                          "waiting for llama-server to start responding")
        else:
            if engine.release >= RUNNER_LINE:
                self.log.slog("INFO", "server.go:399", "starting runner",
                              cmd=f"/usr/local/bin/ollama runner --model {blob} --port {port}")
            else:
                layers = model.profile.layers if engine.model_offloaded(model) else 0
                self.log.slog("INFO", "server.go:438", "starting llama server",
                              cmd=f"/usr/local/bin/ollama runner --model {blob} --ctx-size "
                                  f"{4096 * engine.parallel} --batch-size 512 --n-gpu-layers "
                                  f"{layers} --threads 8 --parallel {engine.parallel}"
                                  f" --port {port}")
            self.log.slog("INFO", "server.go:1250",
                          "waiting for llama runner to start responding")
        return RunnerStart(self, server, self._llama_lines(model))

    def _llama_server_cmd(self, model: Model, blob: str, port: int) -> str:
        parallel = self.engine.parallel
        cmd = (f"{LIBDIR}/llama-server --model {blob} --port {port} --host 127.0.0.1"
               f" --no-webui --offline -c {4096 * parallel} -np {parallel}"
               " --log-verbosity 4 --no-log-prefix --no-log-timestamps --flash-attn auto")
        if model.embeds_only:  # appendBatchArgs
            cmd += f" --embedding -b {EMBEDDING_BATCH} -ub {EMBEDDING_BATCH}"
        return cmd

    def _llama_lines(self, model: Model) -> tuple[str, ...]:
        """What the runner (llama.cpp) says about where the model went: the device, the
        layers on it, the buffers (llama-model.cpp, llama-context.cpp, ggml-opencl.cpp)."""
        engine, p = self.engine, model.profile
        layers = p.layers
        lines: list[str] = []
        if engine.faults.opencl_unsupported and engine.library == "opencl":
            name = inference_compute("opencl", *self._device("opencl"))["description"]
            lines += ["ggml_opencl: selected platform: 'rusticl'",
                      f"ggml_opencl: device: '{name}'",
                      f"ggml_opencl: unsupported GPU '{name}'",
                      "ggml_opencl: drop unsupported device."]
        loading = "load_tensors: loading model tensors, this can take a while... (mmap = true)"
        if engine.model_offloaded(model):
            card, number = self._device(engine.placement)
            device = inference_compute(engine.placement, card, number)
            # llama.cpp names the device's PCI address since the release Ollama 0.30 runs
            where = f" ({card.pci})" if engine.llama_server_runners else ""
            lines += [f"llama_model_load_from_file_impl: using device {device['name']}"
                      f" ({device['description']}){where} - {card.free_mib} MiB free", loading,
                      f"load_tensors: offloading {layers - 1} repeating layers to GPU",
                      "load_tensors: offloading output layer to GPU",
                      f"load_tensors: offloaded {layers}/{layers} layers to GPU",
                      f"load_tensors: {device['name']} model buffer size = {p.buffer_mib:8.2f}"
                      " MiB"]
            if p.kv_mib:
                lines.append(f"llama_kv_cache: {device['name']} KV buffer size ="
                             f" {p.kv_mib:8.2f} MiB")
        else:
            lines += [loading, f"load_tensors: offloaded 0/{layers} layers to GPU",
                      f"load_tensors:   CPU_Mapped model buffer size = "
                      f"{p.size / 2**20:8.2f} MiB"]
            if p.kv_mib:
                lines.append(f"llama_kv_cache:        CPU KV buffer size = {p.kv_mib:8.2f} MiB")
        return tuple(lines)

    def stopping(self, signame: str) -> None:
        self.log.slog("INFO", "simengine.py", f"received {signame}, shutting down")


class Vllm:
    def __init__(self, engine: Engine, env: Mapping[str, str], reason: str) -> None:
        self.engine, self.log, self.url = engine, engine.log, ""
        self.device = "CPU" if engine.placement == "cpu" else "GPU"

    def starting(self, url: str) -> None:
        now = datetime.now().strftime("%m-%d %H:%M:%S")
        self.log.line(f"INFO {now} [__init__.py:216] Automatically detected platform "
                      f"{self.engine.placement}.")
        self.log.vllm("INFO", "api_server.py:1839", f"vLLM API server version {VLLM_VERSION}")
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.log.vllm("INFO", "utils.py:233", f"non-default args: {{'model_tag': "
                      f"'{self.engine.model}', 'host': '{host}', 'port': {port}}}")
        self.url = url

    def listening(self, address: str) -> None:
        self.log.vllm("INFO", "core.py:77", f"Initializing a V1 LLM engine (v{VLLM_VERSION}) "
                      f"with config: model='{self.engine.model}', device_config={self.device}",
                      proc="EngineCore_DP0")
        self.log.vllm("INFO", "gpu_model_runner.py:2338",
                      f"Starting to load model {self.engine.model}...", proc="EngineCore_DP0")

    def crashed(self, lines: tuple[str, ...], on_start: bool) -> None:
        if on_start:
            self.log.vllm("ERROR", "core.py:708", "EngineCore failed to start.",
                          proc="EngineCore_DP0")
            self.log.lines(lines, prefix=self.log.engine_core)
            self.log.line("RuntimeError: Engine core initialization failed. See root cause "
                          "above. Failed core proc(s): {}")
            return
        self.log.vllm("ERROR", "core.py:710", "EngineCore encountered a fatal error.",
                      proc="EngineCore_DP0")
        self.log.lines(lines, prefix=self.log.engine_core)
        self.log.vllm("ERROR", "async_llm.py:480", "AsyncLLM output_handler failed.")
        self.log.line("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an "
                      "issue. See stack trace (above) for the root cause.")

    def ready(self) -> None:
        delay = self.engine.faults.start_delay
        self.log.vllm("INFO", "gpu_model_runner.py:2370",
                      f"Model loading took 14.2474 GiB and {delay:.2f} seconds",
                      proc="EngineCore_DP0")
        self.log.vllm("INFO", "kv_cache_utils.py:1087", f"{self.device} KV cache size: "
                      "49,152 tokens", proc="EngineCore_DP0")
        self.log.vllm("INFO", "api_server.py:1971", f"Starting vLLM API server 0 on {self.url}")
        self.log.uvicorn(f"Started server process [{self.log.pid}]")
        self.log.uvicorn("Waiting for application startup.")
        self.log.uvicorn("Application startup complete.")

    def stopping(self, signame: str) -> None:
        self.log.uvicorn("Shutting down")
        self.log.uvicorn(f"Finished server process [{self.log.pid}]")


class RunnerStart:
    """One model's load as its runner tells it: llama.cpp's lines before ``load_tensors:`` at
    once, the rest spread across the load's steps, then "started in N seconds"."""

    def __init__(self, story: Ollama, server: RunnerServer, lines: tuple[str, ...]) -> None:
        self.log, self.server, self.llama = story.log, server, server.llama
        first = next((i for i, line in enumerate(lines) if line.startswith("load_tensors:")),
                     len(lines))
        self.log.lines(lines[:first])
        self.lines, self.shown = lines[first:], 0

    def step(self, done: int, steps: int) -> None:
        upto = round(len(self.lines) * done / steps)
        self.log.lines(self.lines[self.shown:upto])
        self.shown = max(self.shown, upto)

    def finished(self, seconds: float) -> None:
        self.log.lines(self.lines[self.shown:])
        self.shown = len(self.lines)
        self.server.loading = False
        if self.llama:
            self.log.slog("INFO", "llama_server.go:640",
                          f"llama-server started in {seconds:0.2f} seconds")
        else:
            self.log.slog("INFO", "server.go:1288", f"llama runner started in {seconds:0.2f}"
                          " seconds")


def narrator(engine: Engine, env: Mapping[str, str], reason: str) -> Ollama | Vllm:
    return (Ollama if engine.kind == "ollama" else Vllm)(engine, env, reason)


def gpu_error_lines(engine: Engine) -> tuple[str, ...]:
    return error_lines(engine.kind, engine.placement, engine.faults.error_lines)
