"""The simulated engine, run for real: subprocesses on loopback ports, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llm_supervisor.simengine.placement import choose_library, parse_listen
from llm_supervisor.simengine.plan import Faults, PlanError, parse_plan

MODEL = "qwen2.5:7b-instruct"
VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct"
READY = {"ollama": 'msg="vram-based default context"', "vllm": "Application startup complete."}
INHERITED = re.compile(r"^(OLLAMA_|ROCR_|HIP_|GGML_|SIMENGINE_)")
VULKAN_TIER = {"OLLAMA_GPU_DRIVER": "vulkan", "OLLAMA_VULKAN": "1",
               "OLLAMA_LLM_LIBRARY": "vulkan", "ROCR_VISIBLE_DEVICES": "-1"}
CPU_TIER = {"OLLAMA_GPU_DRIVER": "cpu", "OLLAMA_VULKAN": "0", "OLLAMA_LLM_LIBRARY": "cpu",
            "ROCR_VISIBLE_DEVICES": "-1", "HIP_VISIBLE_DEVICES": "-1",
            "GGML_VK_VISIBLE_DEVICES": "-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sim:
    """One engine process; its stderr is collected line by line as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str], kind: str, port: int) -> None:
        self.kind, self.url = kind, f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "llm_supervisor.simengine", *argv],
                                     env=env, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, fragment: str, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if fragment in line]
            if found:
                return found[0]
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(f"no line with {fragment!r} in:\n{self.log}")

    def ready(self) -> Sim:
        self.wait_line(READY[self.kind])
        return self

    def wait_exit(self, timeout: float = 5) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def get(self, path: str, timeout: float = 5) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def post(self, path: str, body: dict, timeout: float = 5) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout)

    def generate(self, num_predict: int = 1, timeout: float = 5, **extra: object) -> httpx.Response:
        return self.post("/api/generate", {"model": MODEL, "prompt": "Say hi", "stream": False,
                                           "options": {"num_predict": num_predict}, **extra},
                         timeout)


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    sims: list[Sim] = []

    def _start(*args: str, kind: str = "ollama", env: dict[str, str] | None = None,
               plan: object = None, listen: bool = True) -> Sim:
        port = free_port()
        argv = ["serve", "--kind", kind, *args]
        if listen:
            argv += ["--listen", f"127.0.0.1:{port}"]
        if plan is not None:
            path = tmp_path / f"plan{len(sims)}.json"
            path.write_text(json.dumps(plan))
            argv += ["--faults", str(path)]
        clean = {k: v for k, v in os.environ.items() if not INHERITED.match(k)}
        sim = Sim(argv, {**clean, **(env or {})}, kind, port)
        sims.append(sim)
        return sim

    yield _start
    for sim in sims:
        if sim.proc.poll() is None:
            sim.proc.kill()
        sim.proc.wait(5)
        sim._reader.join(5)
        if sim.proc.stderr:
            sim.proc.stderr.close()
        assert "Traceback" not in sim.log, sim.log  # no thread died along the way


def slog_attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line)}


# Response shapes


def test_ollama_answers_with_the_real_shapes(start) -> None:
    sim = start().ready()
    root = sim.get("/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert httpx.head(sim.url + "/").status_code == 200
    assert sim.get("/api/version").json() == {"version": "0.33.0"}
    (tag,) = sim.get("/api/tags").json()["models"]
    assert tag["name"] == tag["model"] == MODEL
    assert set(tag) == {"name", "model", "modified_at", "size", "digest", "details"}
    assert {"format", "family", "families", "parameter_size", "quantization_level"} <= \
        set(tag["details"])
    assert sim.get("/api/ps").json() == {"models": []}  # nothing loaded before a generation

    out = sim.generate(num_predict=2).json()
    assert [k for k in out] == ["model", "created_at", "response", "done", "done_reason",
                                "context", "total_duration", "load_duration",
                                "prompt_eval_count", "prompt_eval_duration", "eval_count",
                                "eval_duration"]
    assert (out["done"], out["done_reason"], out["eval_count"]) == (True, "length", 2)
    assert out["total_duration"] >= out["eval_duration"] > 0 and out["load_duration"] > 0

    (loaded,) = sim.get("/api/ps").json()["models"]
    assert set(loaded) == {"name", "model", "size", "digest", "details", "expires_at",
                           "size_vram", "context_length"}
    assert loaded["size_vram"] == loaded["size"] > 0 and loaded["digest"] == tag["digest"]

    chat = sim.post("/api/chat", {"model": MODEL, "stream": False,
                                  "messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["message"]["role"] == "assistant" and chat["message"]["content"]
    assert chat["done_reason"] == "stop" and "context" not in chat

    with httpx.stream("POST", sim.url + "/api/generate", timeout=5,
                      json={"model": MODEL, "prompt": "hi", "options": {"num_predict": 3}}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        chunks = [json.loads(line) for line in r.iter_lines() if line]
    assert [c["done"] for c in chunks] == [False, False, False, True]
    assert chunks[-1]["eval_count"] == 3 and chunks[-1]["response"] == ""

    missing = sim.post("/api/generate", {"model": "llama3:8b", "prompt": "hi"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'llama3:8b' not found"})
    assert sim.get("/v1/models").json()["data"][0]["id"] == MODEL
    pulled = [json.loads(x) for x in sim.post("/api/pull", {"model": MODEL}).text.splitlines()]
    assert pulled[0] == {"status": "pulling manifest"} and pulled[-1] == {"status": "success"}


def test_vllm_answers_with_the_real_shapes(start) -> None:
    sim = start(kind="vllm").ready()
    health = sim.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    assert sim.get("/ping").status_code == 200
    assert "version" in sim.get("/version").json()
    assert sim.get("/v1/models").json()["data"][0]["id"] == VLLM_MODEL

    out = sim.post("/v1/completions", {"model": VLLM_MODEL, "prompt": "hi", "max_tokens": 1})
    body = out.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    (choice,) = body["choices"]
    assert set(choice) >= {"index", "text", "logprobs", "finish_reason"}
    assert choice["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 1
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    chat = sim.post("/v1/chat/completions", {"model": VLLM_MODEL, "max_tokens": 2,
                                             "messages": [{"role": "user", "content": "hi"}]})
    assert chat.json()["object"] == "chat.completion"
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    missing = sim.post("/v1/completions", {"model": "gpt-4", "prompt": "hi"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404

    metrics = sim.get("/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_count"):
        assert re.search(rf"^{name}\{{.*\}} \d", metrics, re.M), name
    assert re.search(r"^vllm:generation_tokens_total\{.*\} 3\.0$", metrics, re.M)
    sim.wait_line("Starting vLLM API server 0 on http://127.0.0.1:")


# Which library it runs on


@pytest.mark.parametrize(("env", "library"), [
    ({}, "rocm"),
    ({"SIMENGINE_GPUS": "vulkan"}, "vulkan"),
    (VULKAN_TIER, "vulkan"),
    (CPU_TIER, "cpu"),
    ({"OLLAMA_GPU_DRIVER": "vulkan"}, "vulkan"),
    ({"OLLAMA_GPU_DRIVER": "cpu"}, "cpu"),
    ({"OLLAMA_GPU_DRIVER": "rocm", "SIMENGINE_GPUS": "vulkan"}, "cpu"),
    ({"OLLAMA_GPU_DRIVER": "cpu", "OLLAMA_LLM_LIBRARY": "vulkan"}, "vulkan"),  # real vars win
    ({"OLLAMA_LLM_LIBRARY": "rocm_v7_2"}, "rocm"),
    ({"OLLAMA_VULKAN": "false", "ROCR_VISIBLE_DEVICES": "-1"}, "cpu"),
    ({"HIP_VISIBLE_DEVICES": "-1"}, "vulkan"),
    ({"GGML_VK_VISIBLE_DEVICES": "-1", "SIMENGINE_GPUS": "vulkan"}, "cpu"),
])
def test_the_library_is_chosen_like_ollama_does(env: dict[str, str], library: str) -> None:
    assert choose_library(env)[0] == library


@pytest.mark.parametrize(("env", "library", "size_vram"), [
    ({}, "library=ROCm compute=gfx906", True),
    ({"ROCR_VISIBLE_DEVICES": "-1", "OLLAMA_LLM_LIBRARY": "vulkan"}, "library=Vulkan", True),
    (CPU_TIER, "id=cpu library=cpu", False),
    ({"OLLAMA_GPU_DRIVER": "vulkan"}, "library=Vulkan", True),
])
def test_the_chosen_library_shows_in_the_log_and_in_ps(start, env, library, size_vram) -> None:
    sim = start(env=env).ready()
    assert library in sim.wait_line('msg="inference compute"')
    assert sim.generate().status_code == 200
    (loaded,) = sim.get("/api/ps").json()["models"]
    assert loaded["size_vram"] == (loaded["size"] if size_vram else 0)


def test_the_inference_compute_line_is_ollamas(start) -> None:
    sim = start().ready()
    line = sim.wait_line('msg="inference compute"')
    assert re.match(r"^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d) level=INFO "
                    r"source=types\.go:\d+ msg=\"inference compute\" ", line)
    attrs = slog_attrs(line)
    assert {k: attrs[k] for k in ("library", "compute", "description", "type", "total")} == {
        "library": "ROCm", "compute": "gfx906", "description": "AMD Instinct MI50",
        "type": "discrete", "total": "16.0 GiB"}
    assert "Listening on 127.0.0.1:" in sim.wait_line("Listening on")
    cpu = start(env=CPU_TIER).ready().wait_line('msg="inference compute"')
    assert 'id=cpu library=cpu compute="" name=cpu' in cpu


def test_listen_addresses_are_read_like_ollama_host() -> None:
    assert parse_listen("", 11434) == ("127.0.0.1", 11434)
    assert parse_listen("0.0.0.0", 11434) == ("0.0.0.0", 11434)
    assert parse_listen("http://10.0.0.1:9000", 11434) == ("10.0.0.1", 9000)
    assert parse_listen("http://10.0.0.1", 11434) == ("10.0.0.1", 80)
    assert parse_listen("[::1]:9000", 8000) == ("::1", 9000)
    assert parse_listen(":9000", 8000) == ("", 9000)
    with pytest.raises(ValueError):
        parse_listen("127.0.0.1:http", 11434)


def test_ollama_host_is_the_default_listen_address(start) -> None:
    port = free_port()
    sim = start(env={"OLLAMA_HOST": f"http://127.0.0.1:{port}"}, listen=False).ready()
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "Ollama is running"
    sim.wait_line(f"Listening on 127.0.0.1:{port} (version 0.33.0)")


# Faults


def test_crash_on_start_prints_gpu_errors_and_exits_1(start) -> None:
    sim = start(plan={"rocm": {"crash_on_start": True}})
    assert sim.wait_exit() == 1
    assert "reason :GPU Hang" in sim.log and "ROCm error" in sim.log
    assert 'msg="inference compute"' not in sim.log


def test_faults_apply_to_their_own_library_only(start) -> None:
    sim = start(env=VULKAN_TIER, plan={"rocm": {"crash_on_start": True}}).ready()
    assert sim.generate().status_code == 200


def test_vllm_crash_on_start(start) -> None:
    sim = start(kind="vllm", plan={"*": {"crash_on_start": True}})
    assert sim.wait_exit() == 1
    assert "HIP error" in sim.log and "Engine core initialization failed" in sim.log


@pytest.mark.parametrize(("kind", "liveness", "path", "body"), [
    ("ollama", "/", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False}),
    ("vllm", "/health", "/v1/completions", {"model": VLLM_MODEL, "prompt": "hi"}),
])
def test_a_hang_keeps_liveness_up_but_generations_never_return(start, kind, liveness, path,
                                                                body) -> None:
    sim = start(kind=kind, plan={"*": {"hang_after": 0}}).ready()
    with pytest.raises(httpx.ReadTimeout):
        sim.post(path, body, timeout=0.5)
    assert sim.get(liveness).status_code == 200


def test_cpu_fallback_answers_but_runs_on_the_cpu(start) -> None:
    sim = start(plan={"rocm": {"cpu_fallback": True}}).ready()
    assert "failure during GPU discovery" in sim.log
    assert "id=cpu library=cpu" in sim.wait_line('msg="inference compute"')
    out = sim.generate(num_predict=2).json()
    assert out["eval_count"] / out["eval_duration"] * 1e9 == pytest.approx(8.0)  # CPU speed
    assert sim.get("/").status_code == 200
    (loaded,) = sim.get("/api/ps").json()["models"]
    assert loaded["size_vram"] == 0 and loaded["size"] > 0


def test_gpu_errors_print_lines_and_answer_500(start) -> None:
    sim = start(plan={"rocm": {"gpu_errors_after": 0,
                               "error_lines": ["rocBLAS error: Cannot read TensileLibrary.dat"]}})
    out = sim.ready().generate()
    assert out.status_code == 500 and "rocBLAS error" in out.json()["error"]
    sim.wait_line("rocBLAS error: Cannot read TensileLibrary.dat")
    assert sim.get("/").status_code == 200

    default = start(plan={"*": {"gpu_errors_after": 0}}).ready()
    assert default.generate().status_code == 500
    default.wait_line("ROCm error: ")


def test_vllm_gpu_errors_kill_the_engine(start) -> None:
    sim = start(kind="vllm", plan={"rocm": {"gpu_errors_after": 0}}).ready()
    assert sim.get("/health").status_code == 200
    out = sim.post("/v1/completions", {"model": VLLM_MODEL, "prompt": "hi", "max_tokens": 1})
    assert out.status_code == 500 and "EngineCore" in out.json()["error"]["message"]
    assert sim.get("/health").status_code == 503
    sim.wait_line("HIP error: ")


def test_blips_fail_every_nth_request(start) -> None:
    sim = start(plan={"*": {"blip_every": 3}}).ready()
    assert [sim.get("/").status_code for _ in range(6)] == [200, 200, 500, 200, 200, 500]
    assert [sim.generate().status_code for _ in range(3)] == [200, 200, 500]


def test_start_delay_holds_http_back(start) -> None:
    sim = start(plan={"*": {"start_delay": 1.0}})
    sim.wait_line("Listening on")
    with pytest.raises(httpx.TimeoutException):  # connected, but no answer yet
        sim.get("/", timeout=0.3)
    assert 'msg="inference compute"' not in sim.log
    sim.ready()
    assert sim.get("/").status_code == 200
    assert time.monotonic() - sim.started >= 1.0


def test_tokens_per_second_sets_the_speed(start) -> None:
    sim = start(plan={"rocm": {"tokens_per_second": 20}}).ready()
    began = time.monotonic()
    out = sim.generate(num_predict=4).json()
    assert time.monotonic() - began >= 4 / 20
    assert out["eval_count"] == 4
    assert out["eval_count"] / out["eval_duration"] * 1e9 == pytest.approx(20.0)


def test_a_one_token_canary_is_quick_by_default(start) -> None:
    sim = start().ready()
    sim.generate()  # loads the model
    began = time.monotonic()
    out = sim.generate().json()
    assert time.monotonic() - began < 0.3
    assert out["eval_count"] / out["eval_duration"] * 1e9 == pytest.approx(45.0)


def test_crash_after_serves_then_exits_2(start) -> None:
    sim = start(plan={"*": {"crash_after": 0.5}}).ready()
    assert sim.get("/").status_code == 200
    assert sim.wait_exit() == 2
    assert time.monotonic() - sim.started >= 0.5
    assert "ROCm error" in sim.log and "SIGABRT: abort" in sim.log


def test_sigterm_is_a_clean_exit(start) -> None:
    sim = start().ready()
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.wait_exit() == 0
    assert 'msg="received SIGTERM, shutting down"' in sim.log


# Bad plans


@pytest.mark.parametrize(("plan", "complaint"), [
    ({"rocm": {"explode": True}}, "unknown fault 'explode'"),
    ({"metal": {}}, "unknown library 'metal'"),
    ({"rocm": {"hang_after": "soon"}}, 'rocm.hang_after = "soon": must be a number'),
    ({"*": {"blip_every": 0}}, "must be an integer >= 1"),
    (["rocm"], "must be a JSON object"),
])
def test_a_bad_plan_exits_2_and_says_why(start, plan, complaint) -> None:
    sim = start(plan=plan)
    assert sim.wait_exit() == 2
    assert complaint in sim.log


def test_a_missing_plan_exits_2(start, tmp_path: Path) -> None:
    sim = start("--faults", str(tmp_path / "nope.json"))
    assert sim.wait_exit() == 2
    assert "nope.json: cannot read it" in sim.log


def test_the_library_entry_overrides_the_star_entry() -> None:
    plan = parse_plan({"*": {"blip_every": 5, "hang_after": 1}, "rocm": {"hang_after": 9}})
    assert plan.faults_for("rocm") == Faults(blip_every=5, hang_after=9)
    assert plan.faults_for("cpu") == Faults(blip_every=5, hang_after=1)
    assert parse_plan({}).faults_for("vulkan") == Faults()
    with pytest.raises(PlanError, match="error_lines"):
        parse_plan({"rocm": {"error_lines": "ROCm error"}})


# What the supervisor tells apart: faults a tier change cannot fix, and the backend in use


def test_a_missing_model_is_404_until_pulled_with_streamed_progress(start) -> None:
    sim = start(plan={"*": {"missing_model": True, "pull_seconds": 0.4}}).ready()
    assert sim.get("/api/tags").json() == {"models": []}
    missing = sim.generate()
    assert missing.status_code == 404
    assert missing.json() == {"error": f"model '{MODEL}' not found"}
    with httpx.stream("POST", sim.url + "/api/pull", json={"model": "qwen2.5:7b-instruct"},
                      timeout=5) as r:
        parts = [json.loads(line) for line in r.iter_lines() if line]
    assert parts[0] == {"status": "pulling manifest"} and parts[-1] == {"status": "success"}
    progress = [p["completed"] for p in parts if "completed" in p]
    assert progress == sorted(progress) and progress[-1] == parts[1]["total"]
    assert sim.generate().status_code == 200
    assert [m["name"] for m in sim.get("/api/tags").json()["models"]] == [MODEL]


def test_names_are_normalised_like_ollama(start) -> None:
    sim = start("--model", "qwen2.5").ready()
    for name in ("qwen2.5", "qwen2.5:latest", "library/qwen2.5", "registry.ollama.ai/library/"
                 "QWEN2.5:latest"):
        assert sim.generate(model=name).status_code == 200, name
    assert sim.generate(model="qwen2.5:7b").status_code == 404


def test_a_build_without_gfx906_kernels_drops_rocm_and_runs_on_vulkan(start) -> None:
    sim = start(env={"OLLAMA_GPU_DRIVER": "rocm"}, plan={"rocm": {"drops_rocm": "gfx906"}})
    sim.ready()
    dropped = slog_attrs(sim.wait_line("dropping ROCm device"))
    assert dropped["gfx_target"] == "gfx906" and dropped["level"] == "WARN"
    compute = slog_attrs(sim.wait_line('msg="inference compute"'))
    assert compute["library"] == "Vulkan"
    assert sim.generate().status_code == 200
    ps = sim.get("/api/ps").json()["models"][0]
    assert ps["size_vram"] == ps["size"]  # on a GPU: only the log tells which one


def test_a_dropped_igpu_beside_the_card_leaves_rocm_in_use(start) -> None:
    sim = start(env={"OLLAMA_GPU_DRIVER": "rocm"}, plan={"rocm": {"drops_igpu": True}}).ready()
    assert slog_attrs(sim.wait_line("dropping ROCm device"))["gfx_target"] == "gfx1103"
    assert slog_attrs(sim.wait_line('msg="inference compute"'))["library"] == "ROCm"


def test_a_port_in_use_is_ollamas_bind_error(start) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        sim = start("--listen", f"127.0.0.1:{port}", listen=False)
        assert sim.wait_exit() == 1
        assert f"Error: listen tcp 127.0.0.1:{port}: bind: address already in use" in sim.log


def test_vllm_api_key_is_required_on_v1_only(start) -> None:
    sim = start("--api-key", "s3cret", kind="vllm").ready()
    body = {"model": VLLM_MODEL, "prompt": "hi", "max_tokens": 1}
    with httpx.Client(base_url=sim.url) as client:  # one keep-alive connection throughout
        assert client.post("/v1/completions", json=body).status_code == 401
        assert client.get("/health").status_code == 200
        ok = client.post("/v1/completions", json=body,
                         headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("chat", [False, True])
def test_openai_streaming_is_server_sent_events_ending_in_done(start, chat) -> None:
    sim = start(kind="vllm").ready()
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body: dict = {"model": VLLM_MODEL, "max_tokens": 3, "stream": True,
                  "stream_options": {"include_usage": True}}
    body.update({"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"})
    with httpx.stream("POST", sim.url + path, json=body, timeout=5) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content") if chat else c["choices"][0]["text"]
              for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) == 3
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert {c["object"] for c in chunks} == {"chat.completion.chunk" if chat
                                              else "text_completion"}
