"""The simulated engine's models, runners, versions and the faults a supervisor must tell apart,
run for real (subprocesses on loopback ports) and spoken to over HTTP."""

# ruff: noqa: F811  (``start``, the simulated-engine fixture, is imported and then requested)
from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_simengine import MODEL, VLLM_MODEL, Sim, slog_attrs, start  # noqa: F401

from llm_supervisor.names import manifest_relpath
from llm_supervisor.simengine.engine import THINKING

REASONING, ALWAYS, EMBED = "qwen3:8b", "gpt-oss:20b", "nomic-embed-text"
KINDS = ("--model", MODEL, "--model", f"{REASONING}=reasoning",
         "--model", f"{ALWAYS}=reasoning-always", "--model", f"{EMBED}=embedding")
THOUGHT = "".join(THINKING)


def ask(sim: Sim, model: str, chat: bool = False, **extra: object) -> httpx.Response:
    if chat:
        return sim.post("/api/chat", {"model": model, "stream": False, "messages": [
            {"role": "user", "content": "Say hi"}], **extra})
    return sim.post("/api/generate", {"model": model, "prompt": "Say hi", "stream": False,
                                      **extra})


def runner_lines(sim: Sim) -> list[dict[str, str]]:
    return [slog_attrs(line) for line in sim.lines
            if 'msg="starting llama-server"' in line or 'msg="starting runner"' in line
            or 'msg="starting llama server"' in line]


def runner_port(attrs: dict[str, str]) -> int:
    found = re.search(r"--port (\d+)", attrs["cmd"])
    assert found, attrs
    return int(found.group(1))


def runner_get(port: int, path: str, timeout: float = 5) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)


# Model kinds


def test_every_model_is_listed_and_shown_with_its_own_kind(start) -> None:
    sim = start(*KINDS).ready()
    tags = {m["name"]: m for m in sim.get("/api/tags").json()["models"]}
    assert list(tags) == [MODEL, REASONING, ALWAYS, EMBED]
    assert len({m["digest"] for m in tags.values()}) == 4
    shown = {name: sim.post("/api/show", {"model": name}).json() for name in tags}
    assert shown[MODEL]["capabilities"] == ["completion", "tools"]
    assert shown[REASONING]["capabilities"] == ["completion", "tools", "thinking"]
    assert shown[ALWAYS]["capabilities"] == ["completion", "tools", "thinking"]
    assert shown[ALWAYS]["details"]["family"] == "gptoss"
    assert shown[EMBED]["capabilities"] == ["embedding"]
    assert [m["id"] for m in sim.get("/v1/models").json()["data"]] == list(tags)
    assert sim.get("/api/ps").json() == {"models": []}  # nothing loads before its first use


def test_a_reasoning_model_spends_a_short_num_predict_thinking(start) -> None:
    sim = start(*KINDS).ready()
    out = ask(sim, REASONING, options={"num_predict": 8}).json()
    assert out["response"] == "" and out["eval_count"] == 8  # ollama#14793
    assert out["thinking"] == "".join(THINKING[:8]) and " wants" in out["thinking"]
    full = ask(sim, REASONING).json()
    assert full["thinking"] == THOUGHT and full["response"].startswith("Hello")
    assert full["eval_count"] == len(THINKING) + 12  # thinking tokens count as generated
    assert full["eval_count"] / full["eval_duration"] * 1e9 == pytest.approx(45.0)
    chat = ask(sim, REASONING, chat=True).json()["message"]
    assert chat["thinking"] == THOUGHT and chat["content"].startswith("Hello")


def test_think_false_turns_thinking_off_except_where_it_cannot_be(start) -> None:
    sim = start(*KINDS).ready()
    off = ask(sim, REASONING, think=False, options={"num_predict": 4}).json()
    assert off["response"] == "Hello! I am" and "thinking" not in off
    always = ask(sim, ALWAYS, think=False, options={"num_predict": 4}).json()
    assert always["response"] == "" and always["thinking"] == "Okay, the user"
    plain = ask(sim, MODEL, think=False, options={"num_predict": 2}).json()
    assert plain["response"] == "Hello!"  # think false on a model without thinking: fine


def test_think_on_a_model_without_thinking_is_400(start) -> None:
    sim = start(*KINDS).ready()
    refused = ask(sim, MODEL, think=True)
    assert refused.status_code == 400
    assert refused.json() == {"error": f'"{MODEL}" does not support thinking'}
    assert ask(sim, MODEL, chat=True, think="high").status_code == 400
    assert sim.get("/api/ps").json() == {"models": []}  # refused before loading anything


def test_think_inside_options_is_ignored_with_a_warning(start) -> None:
    sim = start(*KINDS).ready()
    out = ask(sim, REASONING, options={"think": False, "num_predict": 3}).json()
    assert out["response"] == "" and out["thinking"] == "Okay, the"  # still thinking
    warn = slog_attrs(sim.wait_line('msg="invalid option provided"'))
    assert (warn["level"], warn["option"]) == ("WARN", "think")


def test_raw_skips_the_template_but_a_thinking_model_still_thinks(start) -> None:
    sim = start(*KINDS).ready()
    templated = ask(sim, REASONING, options={"num_predict": 2}).json()
    raw = ask(sim, REASONING, raw=True, options={"num_predict": 2}).json()
    assert raw["thinking"] == "Okay," and raw["response"] == ""
    assert "context" not in raw and "context" in templated
    assert raw["prompt_eval_count"] < templated["prompt_eval_count"]


@pytest.mark.parametrize("chat", [False, True])
def test_streamed_thinking_comes_before_the_answer(start, chat) -> None:
    sim = start(*KINDS).ready()
    path = "/api/chat" if chat else "/api/generate"
    body: dict = {"model": REASONING, "options": {"num_predict": len(THINKING) + 3}}
    body.update({"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"})
    with httpx.stream("POST", sim.url + path, json=body, timeout=10) as r:
        chunks = [json.loads(line) for line in r.iter_lines() if line]
    parts = [c["message"] if chat else c for c in chunks[:-1]]
    answer = "content" if chat else "response"
    kinds = ["thinking" if p.get("thinking") else answer for p in parts]
    assert kinds == ["thinking"] * len(THINKING) + [answer] * 3
    assert all(p[answer] == "" for p in parts[:len(THINKING)])
    assert "".join(p.get("thinking", "") for p in parts) == THOUGHT
    assert "".join(p[answer] for p in parts) == "Hello! I"
    assert chunks[-1]["done"] and chunks[-1]["eval_count"] == len(THINKING) + 3


def test_an_embedding_model_embeds_and_refuses_to_generate(start) -> None:
    sim = start(*KINDS).ready()
    generate, chat = ask(sim, EMBED), ask(sim, EMBED, chat=True)
    assert (generate.status_code, generate.json()) == (
        400, {"error": f'"{EMBED}" does not support generate'})
    assert (chat.status_code, chat.json()) == (400, {"error": f'"{EMBED}" does not support chat'})
    out = sim.post("/api/embed", {"model": EMBED, "input": ["hello", "world", "hello"]}).json()
    first, second, again = out["embeddings"]
    assert len(first) == 768 and math.isclose(math.fsum(x * x for x in first), 1, rel_tol=1e-3)
    assert first == again != second  # it depends on the text, and only on it
    think = ask(sim, EMBED, think=True)  # the thinking check comes first, as in routes.go
    assert think.json() == {"error": f'"{EMBED}" does not support thinking'}


def test_every_loaded_model_is_in_ps_with_its_own_runner(start) -> None:
    sim = start(*KINDS).ready()
    assert ask(sim, REASONING, think=False, options={"num_predict": 1}).status_code == 200
    assert sim.post("/api/embed", {"model": EMBED, "input": "x"}).status_code == 200
    loaded = {m["name"]: m for m in sim.get("/api/ps").json()["models"]}
    assert list(loaded) == [EMBED, REASONING]  # the most recently used first
    tags = {m["name"]: m["digest"] for m in sim.get("/api/tags").json()["models"]}
    for name, entry in loaded.items():
        assert entry["digest"] == tags[name] and entry["size_vram"] == entry["size"] > 0
        assert entry["expires_at"] and entry["context_length"] > 0
    assert loaded[EMBED]["size"] < loaded[REASONING]["size"]
    assert loaded[EMBED]["context_length"] == 2048
    runners = runner_lines(sim)
    assert len(runners) == 2 and len({runner_port(r) for r in runners}) == 2
    assert "--embedding" not in runners[0]["cmd"] and "--embedding" in runners[1]["cmd"]
    for attrs in runners:
        assert runner_get(runner_port(attrs), "/health").json() == {"status": "ok"}
        (slot,) = runner_get(runner_port(attrs), "/slots").json()
        assert slot["is_processing"] is False and slot["id_task"] == 1
    assert len([line for line in sim.lines if "llama-server started in" in line]) == 2
    assert len([line for line in sim.lines if "offloaded 37/37 layers to GPU" in line]) == 1
    assert len([line for line in sim.lines if "offloaded 13/13 layers to GPU" in line]) == 1


def test_manifests_in_ollama_models_name_the_runners_blobs(start, tmp_path: Path) -> None:
    models = tmp_path / "models"
    sim = start("--model", MODEL, "--model", f"{EMBED}=embedding",
                env={"OLLAMA_MODELS": str(models)}).ready()
    tags = {m["name"]: m["digest"] for m in sim.get("/api/tags").json()["models"]}
    assert sim.post("/api/embed", {"model": EMBED, "input": "x"}).status_code == 200
    (runner,) = runner_lines(sim)
    for name in (MODEL, EMBED):
        manifest = (models / manifest_relpath(name)).read_bytes()
        assert hashlib.sha256(manifest).hexdigest() == tags[name]  # Ollama's digest
        (layer,) = [layer for layer in json.loads(manifest)["layers"]
                    if layer["mediaType"] == "application/vnd.ollama.image.model"]
        assert layer["digest"].startswith("sha256:") and layer["size"] > 0
        if name == EMBED:
            assert f"{models}/blobs/sha256-{layer['digest'][7:]} " in runner["cmd"]
    assert not (models / "blobs").exists()  # no fake multi-GB blob
    # a deleted model's manifest goes, a pull brings it back
    assert httpx.request("DELETE", sim.url + "/api/delete", json={"model": MODEL}).status_code \
        == 200
    assert not (models / manifest_relpath(MODEL)).exists()
    assert sim.post("/api/pull", {"model": MODEL, "stream": False}).json()["status"] == \
        "success"
    assert (models / manifest_relpath(MODEL)).exists()


def test_a_manifest_already_there_is_used_as_it_is(start, tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = models / manifest_relpath(MODEL)
    path.parent.mkdir(parents=True)
    blob = "ab" * 32
    path.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{blob}",
         "size": 5}]}))
    before = path.read_bytes()
    sim = start(env={"OLLAMA_MODELS": str(models)}).ready()
    (tag,) = sim.get("/api/tags").json()["models"]
    assert tag["digest"] == hashlib.sha256(before).hexdigest()
    assert sim.generate().status_code == 200
    assert f"/blobs/sha256-{blob} " in runner_lines(sim)[0]["cmd"]
    assert path.read_bytes() == before


def test_cpu_models_run_on_the_cpu_beside_models_on_the_gpu(start) -> None:
    sim = start(*KINDS, plan={"*": {"cpu_models": [EMBED]}}).ready()
    assert sim.generate().status_code == 200
    assert sim.post("/api/embed", {"model": EMBED, "input": "x"}).status_code == 200
    loaded = {m["name"]: m for m in sim.get("/api/ps").json()["models"]}
    assert loaded[MODEL]["size_vram"] == loaded[MODEL]["size"] > 0
    assert loaded[EMBED]["size_vram"] == 0 and loaded[EMBED]["size"] > 0
    offloads = [line for line in sim.lines if "layers to GPU" in line and "offloaded" in line]
    assert offloads == ["load_tensors: offloaded 29/29 layers to GPU",
                        "load_tensors: offloaded 0/13 layers to GPU"]
    slow = sim.post("/api/generate", {"model": MODEL, "prompt": "x", "stream": False,
                                      "options": {"num_predict": 2}}).json()
    assert slow["eval_count"] / slow["eval_duration"] * 1e9 == pytest.approx(45.0)


def test_a_plan_naming_a_model_not_served_exits_2(start) -> None:
    sim = start(plan={"*": {"cpu_models": ["llama3:8b"]}})
    assert sim.wait_exit() == 2
    assert "cpu_models names 'llama3:8b', not served" in sim.log


@pytest.mark.parametrize(("args", "complaint"), [
    (("--model", "m=vision"), "unknown kind 'vision'"),
    (("--ollama-version", "0.33"), "expected X.Y.Z"),
    (("--ollama-version", "0.5.7"), "simulated from 0.9.0 on"),
])
def test_bad_models_and_versions_exit_2(start, args, complaint) -> None:
    sim = start(*args)
    assert sim.wait_exit() == 2
    assert complaint in sim.log


@pytest.mark.parametrize(("plan", "complaint"), [
    ({"*": {"generation_errors_after": -1}}, "must be a number of seconds >= 0"),
    ({"*": {"embed_nan": "yes"}}, "must be true or false"),
    ({"*": {"prefill_tokens_per_second": 0}}, "must be a number > 0"),
    ({"*": {"load_memory_mb": 1.5}}, "must be an integer of megabytes"),
    ({"*": {"cpu_models": "nomic-embed-text"}}, "must be a list of model names"),
])
def test_bad_values_of_the_new_keys_exit_2(start, plan, complaint) -> None:
    sim = start(plan=plan)
    assert sim.wait_exit() == 2
    assert complaint in sim.log


# Ollama versions


def test_before_0_30_the_runner_is_ollamas_own_without_slots(start) -> None:
    sim = start(*KINDS, "--ollama-version", "0.20.1").ready()
    assert sim.get("/api/version").json() == {"version": "0.20.1"}
    sim.wait_line("Listening on 127.0.0.1:")
    assert "(version 0.20.1)" in sim.wait_line("Listening on")
    (discovery,) = runner_lines(sim)  # a GPU-discovery runner: no model, no port to ask
    assert "--model" not in discovery["cmd"] and "--port" in discovery["cmd"]
    assert sim.generate().status_code == 200
    (runner,) = [r for r in runner_lines(sim) if "--model" in r["cmd"]]
    assert runner["msg"] == "starting runner"
    assert re.fullmatch(r"/usr/local/bin/ollama runner --model \S+/blobs/sha256-[0-9a-f]{64}"
                        r" --port \d+", runner["cmd"])
    assert "llama-server" not in sim.log
    sim.wait_line("llama runner started in")
    slots = runner_get(runner_port(runner), "/slots")
    assert (slots.status_code, slots.text) == (404, "404 page not found")
    assert runner_get(runner_port(runner), "/health").json()["status"] == "ok"
    assert re.search(r'^\[GIN\] .* \| 200 \| .* \| +127\.0\.0\.1 \| POST +"/api/generate"$',
                     sim.log, re.M)


def test_0_9_to_0_11_say_starting_llama_server(start) -> None:
    sim = start("--ollama-version", "0.10.0").ready()
    assert sim.generate().status_code == 200
    (runner,) = runner_lines(sim)
    assert runner["msg"] == "starting llama server"
    assert "ollama runner --model " in runner["cmd"] and "--n-gpu-layers 29" in runner["cmd"]


def test_before_0_12_4_a_reasoning_model_thinks_inline_unless_asked(start) -> None:
    sim = start(*KINDS, "--ollama-version", "0.12.3").ready()
    out = ask(sim, REASONING).json()
    assert "thinking" not in out and out["response"].startswith("<think>Okay,")
    assert "</think>" in out["response"] and out["response"].endswith("fine")
    asked = ask(sim, REASONING, think=True).json()
    assert asked["thinking"] == THOUGHT and asked["response"].startswith("Hello")


def test_0_12_4_refuses_any_think_on_a_model_without_thinking(start) -> None:
    sim = start(*KINDS, "--ollama-version", "0.12.4").ready()
    assert ask(sim, MODEL, think=False).status_code == 400
    assert ask(sim, REASONING, options={"num_predict": 2}).json()["thinking"] == "Okay,"
    later = start(*KINDS, "--ollama-version", "0.12.5").ready()
    assert ask(later, MODEL, think=False).status_code == 200


def test_the_no_runner_fault_still_starts_no_runner(start) -> None:
    sim = start(plan={"*": {"no_runner": True}}).ready()
    assert sim.generate().status_code == 200
    assert runner_lines(sim) == [] and "/slots" not in sim.log


# Faults


def test_generation_errors_fail_every_request_at_once_without_gpu_lines(start) -> None:
    sim = start(*KINDS, plan={"*": {"generation_errors_after": 0}}).ready()
    began = time.monotonic()
    for out in (sim.generate(), ask(sim, REASONING, chat=True),
                sim.post("/api/embed", {"model": EMBED, "input": "x"})):
        assert (out.status_code, out.json()) == (
            500, {"error": "llama runner process has terminated: exit status 2"})
    assert time.monotonic() - began < 1.0
    assert sim.get("/").status_code == 200
    assert "ROCm error" not in sim.log and "GPU Hang" not in sim.log
    sim.wait_line('| 500 |')


def test_a_hang_silences_the_runners_slots_but_not_its_health(start) -> None:
    sim = start(plan={"*": {"hang_after": 1.0}}).ready()
    assert sim.generate().status_code == 200
    port = runner_port(runner_lines(sim)[0])
    assert runner_get(port, "/slots").status_code == 200
    time.sleep(1.1)
    with pytest.raises(httpx.ReadTimeout):
        runner_get(port, "/slots", timeout=0.5)
    assert runner_get(port, "/health").json() == {"status": "ok"}
    assert sim.get("/").status_code == 200


def test_a_hung_vllm_still_answers_metrics(start) -> None:
    sim = start(kind="vllm", plan={"*": {"hang_after": 0}}).ready()
    with pytest.raises(httpx.ReadTimeout):
        sim.post("/v1/completions", {"model": VLLM_MODEL, "prompt": "hi"}, timeout=0.5)
    metrics = sim.get("/metrics", timeout=2)
    assert metrics.status_code == 200 and "vllm:num_requests_running" in metrics.text


@pytest.mark.parametrize(("version", "status"), [("0.33.0", 200), ("0.20.0", 500)])
def test_nan_embeddings_per_version(start, version, status) -> None:
    sim = start(*KINDS, "--ollama-version", version, plan={"*": {"embed_nan": True}}).ready()
    out = sim.post("/api/embed", {"model": EMBED, "input": ["a", "b"]})
    assert out.status_code == status
    if status == 200:  # llama-server writes NaN as null, read back as 0
        assert all(x == 0 for vector in out.json()["embeddings"] for x in vector)
    else:
        assert out.json() == {"error": "failed to encode response: json: unsupported value:"
                                       " NaN"}
        sim.wait_line("llm embedding error: failed to encode response")
    normal = sim.post("/api/embed", {"model": MODEL, "input": "a"}).json()["embeddings"][0]
    assert math.isclose(math.fsum(x * x for x in normal), 1, rel_tol=1e-3)  # not an embedder


def test_zero_and_constant_embeddings_answer_200(start) -> None:
    zeros = start(*KINDS, plan={"*": {"embed_zeros": True}}).ready()
    out = zeros.post("/api/embed", {"model": EMBED, "input": "a"})
    assert out.status_code == 200 and set(out.json()["embeddings"][0]) == {0}
    constant = start(*KINDS, plan={"*": {"embed_constant": True}}).ready()
    a, b = constant.post("/api/embed", {"model": EMBED, "input": ["a", "b"]}).json()[
        "embeddings"]
    assert a == b and math.isclose(math.fsum(x * x for x in a), 1, rel_tol=1e-3)


def test_a_long_prompt_shows_its_progress_batch_by_batch(start) -> None:
    sim = start(plan={"*": {"prefill_tokens_per_second": 1000}}).ready()
    assert sim.generate().status_code == 200  # loads the model: its runner is up
    port = runner_port(runner_lines(sim)[0])
    prompt = " ".join(["word"] * 2038)  # 2048 tokens with the template's
    done: list[dict] = []
    thread = threading.Thread(target=lambda: done.append(sim.post("/api/generate", {
        "model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": 1}},
        timeout=20).json()))
    began = time.monotonic()
    thread.start()
    seen = []
    while thread.is_alive():
        (slot,) = runner_get(port, "/slots").json()
        if slot["is_processing"]:
            seen.append((slot["n_prompt_tokens"], slot["n_prompt_tokens_processed"]))
        time.sleep(0.05)
    thread.join()
    assert time.monotonic() - began >= 2.0
    assert {total for total, _ in seen} == {2048}
    progress = sorted({processed for _, processed in seen})
    assert {512, 1024, 1536} <= set(progress), progress  # batch by batch, as it went
    assert all(p % 512 == 0 for p in progress)
    assert done[0]["prompt_eval_count"] == 2048
    assert done[0]["prompt_eval_duration"] == pytest.approx(2.048e9, rel=0.01)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert found
    return int(found.group(1)) / 1024


def test_a_slow_load_grows_memory_step_by_step_and_tells_its_progress(start) -> None:
    sim = start(plan={"*": {"load_seconds": 2.0, "load_memory_mb": 200}}).ready()
    base = rss_mb(sim.proc.pid)
    thread = threading.Thread(target=lambda: sim.generate(timeout=10))
    thread.start()
    port = runner_port(slog_attrs(sim.wait_line('msg="starting llama-server"')))
    sim.wait_line('msg="waiting for llama-server to start responding"')
    loading = runner_get(port, "/health")
    assert loading.status_code == 503 and loading.json()["error"]["message"] == "Loading model"
    readings, lines_during = [], []
    while not any("llama-server started in" in line for line in sim.lines):
        readings.append(rss_mb(sim.proc.pid) - base)
        lines_during.append(len([line for line in sim.lines if "load_tensors:" in line]))
        time.sleep(0.05)
    thread.join()
    grown = rss_mb(sim.proc.pid) - base
    assert grown >= 180, (base, readings)
    steps = sorted({round(r / 20) for r in readings if r > 5})
    assert len(steps) >= 4, readings  # it grew in steps, not at once
    assert 0 < min(n for n in lines_during if n) < max(lines_during)  # lines during the load
    started = sim.wait_line("llama-server started in")
    assert 1.9 <= float(re.search(r"started in ([\d.]+) seconds", started).group(1)) < 4
    assert runner_get(port, "/health").json() == {"status": "ok"}
    assert sim.generate().status_code == 200
    assert rss_mb(sim.proc.pid) - base >= 180  # held while the model stays loaded


# vLLM


def test_a_vllm_pooling_model_embeds_and_has_no_completion_routes(start) -> None:
    sim = start("--model", "BAAI/bge-m3=embedding", kind="vllm").ready()
    out = sim.post("/v1/embeddings", {"model": "BAAI/bge-m3", "input": ["a", "b"],
                                      "encoding_format": "base64"}).json()
    assert out["object"] == "list" and out["id"].startswith("embd-")
    vector = struct.unpack("<768f", base64.b64decode(out["data"][0]["embedding"]))
    assert math.isclose(math.fsum(x * x for x in vector), 1, rel_tol=1e-3)
    gone = sim.post("/v1/completions", {"model": "BAAI/bge-m3", "prompt": "hi"})
    assert (gone.status_code, gone.json()) == (404, {"detail": "Not Found"})
    generating = start(kind="vllm").ready()
    assert generating.post("/v1/embeddings", {"model": VLLM_MODEL, "input": "a"}
                           ).status_code == 404


@pytest.mark.parametrize(("args", "complaint"), [
    (("--model", "a", "--model", "b"), "vllm serves one model"),
    (("--model", "a=reasoning"), "completion and embedding models only"),
])
def test_vllm_serves_one_model_of_the_kinds_it_simulates(start, args, complaint) -> None:
    sim = start(*args, kind="vllm")
    assert sim.wait_exit() == 2
    assert complaint in sim.log
