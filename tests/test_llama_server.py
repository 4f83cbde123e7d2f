"""The real llama.cpp llama-server (built by dev/bootstrap) with the tiny real model: it loads,
generates real tokens on the CPU (``--device none``) and on Mesa's llvmpipe through Vulkan
(``--device Vulkan0``), and refuses a Vulkan device when the Vulkan driver is gone. The files
under tests/data/llama-server/ (dev/record-llama-server-fixtures) are checked against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import gguf
import pytest
from llamaserver import BUILD_SCRIPT, LLVMPIPE, NO_VULKAN_DRIVER, binary, run
from tinymodel import N_LAYER, N_VOCAB, write_tiny_model

DATA = Path(__file__).resolve().parent / "data" / "llama-server"
DEVICE_LINE = re.compile(r"^  (\w+): (.+) \((\d+) MiB, (\d+) MiB free\)$", re.M)
VERBOSE = ("-lv", "4")  # the default verbosity logs nothing about devices on the CPU


def devices(listing: str) -> list[tuple[str, str]]:
    """``--list-devices`` output -> [(name, description)]."""
    return [(m[1], m[2]) for m in DEVICE_LINE.finditer(listing)]


def test_the_tiny_model_is_a_few_hundred_kb_of_llama(tiny_model: Path, tmp_path: Path) -> None:
    assert 300_000 < tiny_model.stat().st_size < 600_000
    reader = gguf.GGUFReader(tiny_model)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    assert int(reader.fields["llama.block_count"].parts[-1][0]) == N_LAYER
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == N_VOCAB
    again = write_tiny_model(tmp_path / "again.gguf")
    assert again.read_bytes() == tiny_model.read_bytes()  # the same seed, the same bytes


def test_the_build_is_cached_and_knows_its_version() -> None:
    path = binary()
    assert path.is_file() and os.access(path, os.X_OK)
    assert (path.parent.parent / "BUILD-INFO").read_text().startswith("llama-cpp-python ")
    out = run(["--version"])
    assert out.returncode == 0 and "version: " in out.stderr + out.stdout


def test_health_answers_503_while_the_model_loads(tiny_model: Path, tmp_path: Path,
                                                   llama_server) -> None:
    """The model path is a FIFO nobody writes yet: loading blocks, so /health stays 503."""
    fifo = tmp_path / "loading.gguf"
    os.mkfifo(fifo)
    server = llama_server(fifo)
    for _ in range(3):
        health = server.get("/health")
        assert health.status_code == 503
        assert health.json() == {"error": {"code": 503, "message": "Loading model",
                                           "type": "unavailable_error"}}
        time.sleep(0.1)
    assert server.proc.poll() is None
    assert server.post("/completion", {"prompt": "hi", "n_predict": 1}).status_code == 503


def test_the_cpu_runs_the_tiny_model(tiny_model: Path, llama_server) -> None:
    server = llama_server(tiny_model, "--device", "none", "--metrics", *VERBOSE)
    seen = server.wait_ready()
    assert set(seen) <= {503, 200} and seen[-1] == 200  # 503 while loading, then 200
    assert server.get("/health").json() == {"status": "ok"}
    server.wait_line(r"load_tensors: offloaded 0/3 layers to GPU")
    server.wait_line(r"load_tensors: +CPU(_Mapped)? model buffer size")
    assert "Vulkan0 model buffer size" not in server.log

    out = server.post("/completion", {"prompt": "Hello", "n_predict": 8}).json()
    assert out["tokens_predicted"] == 8 and isinstance(out["content"], str)
    assert out["timings"]["predicted_n"] == 8 and out["timings"]["predicted_per_second"] > 0
    one = server.post("/completion", {"prompt": "Hi", "n_predict": 1}).json()
    assert one["tokens_predicted"] == 1 and one["timings"]["predicted_per_second"] > 0

    props = server.get("/props").json()
    assert props["total_slots"] == 1 and props["model_path"] == str(tiny_model)
    assert "build_info" in props
    metrics = server.get("/metrics").text
    assert re.search(r"^llamacpp:tokens_predicted_total 9$", metrics, re.M), metrics
    for name in ("prompt_tokens_total", "requests_processing", "requests_deferred"):
        assert re.search(rf"^llamacpp:{name} \d", metrics, re.M), name


def test_vulkan0_offloads_every_layer_to_llvmpipe(tiny_model: Path, llama_server) -> None:
    """Mesa's software Vulkan device is a real Vulkan0 when chosen explicitly. The first run on
    a machine compiles its shaders (40 s here); Mesa caches them for the next."""
    server = llama_server(tiny_model, "--device", "Vulkan0", "-ngl", "99", *VERBOSE,
                          env=LLVMPIPE)
    assert server.wait_ready(timeout=300)[-1] == 200
    server.wait_line(r"using device Vulkan0 \(llvmpipe")
    server.wait_line(r"load_tensors: offloaded 3/3 layers to GPU")
    server.wait_line(r"load_tensors: +Vulkan0 model buffer size")
    assert "Device type is CPU" in server.log  # llvmpipe is software: not a GPU tier on a host
    out = server.post("/completion", {"prompt": "Hello", "n_predict": 4}, timeout=300).json()
    assert out["tokens_predicted"] == 4 and out["timings"]["predicted_per_second"] > 0


def test_without_the_vulkan_driver_vulkan0_is_an_invalid_device(tiny_model: Path) -> None:
    out = run(["-m", str(tiny_model), "--port", "0", "--device", "Vulkan0"], NO_VULKAN_DRIVER)
    assert out.returncode == 1
    assert 'error while handling argument "--device": invalid device: Vulkan0' in out.stderr
    assert devices(run(["--list-devices"], NO_VULKAN_DRIVER).stdout) == []
    cpu = run(["--device", "CPU", "-m", str(tiny_model), "--port", "0"])
    assert cpu.returncode == 1 and "invalid device: CPU" in cpu.stderr  # CPU is no device name


@pytest.mark.parametrize(("env", "expected"), [
    ({}, [("Vulkan0", "llvmpipe")]),  # this llama.cpp lists llvmpipe (with a warning) by default
    (LLVMPIPE, [("Vulkan0", "llvmpipe")]),
    ({"GGML_VK_VISIBLE_DEVICES": ""}, []),  # hides every Vulkan device: CPU only
    (NO_VULKAN_DRIVER, []),
])
def test_list_devices(env: dict[str, str], expected: list[tuple[str, str]]) -> None:
    out = run(["--list-devices"], env)
    assert out.returncode == 0 and out.stdout.startswith("Available devices:\n")
    assert [(name, desc.split()[0]) for name, desc in devices(out.stdout)] == expected


def test_hiding_vulkan_devices_with_minus_one_aborts_this_build() -> None:
    """Ollama's way of hiding Vulkan devices (GGML_VK_VISIBLE_DEVICES=-1) kills this
    llama-server: the llama-server CPU tier must use ``--device none`` and leave it unset."""
    out = run(["--list-devices"], {"GGML_VK_VISIBLE_DEVICES": "-1"})
    assert out.returncode < 0 or out.returncode == 134
    assert "Invalid Vulkan device index" in out.stderr


# The recorded fixtures are this build's own words


def test_the_recorded_device_lists_are_the_live_ones() -> None:
    for name, env in (("list-devices-default", {}), ("list-devices-llvmpipe", LLVMPIPE),
                      ("list-devices-cpu-only", {"GGML_VK_VISIBLE_DEVICES": ""}),
                      ("list-devices-no-vulkan-driver", NO_VULKAN_DRIVER)):
        recorded = (DATA / f"{name}.txt").read_text()
        assert devices(recorded) == devices(run(["--list-devices"], env).stdout), name


def test_the_recorded_startups_have_the_device_lines() -> None:
    none = (DATA / "startup-device-none.log").read_text()
    assert "offloaded 0/3 layers to GPU" in none and "Vulkan0 model buffer" not in none
    vulkan = (DATA / "startup-device-vulkan0.log").read_text()
    assert "using device Vulkan0 (llvmpipe" in vulkan
    assert "offloaded 3/3 layers to GPU" in vulkan and "Vulkan0 model buffer size" in vulkan
    for log in (none, vulkan):
        assert "HTTP server is listening" in log and "starting the main loop" in log
    bad = (DATA / "startup-vulkan0-without-driver.log").read_text()
    assert "# exit status 1\n" in bad and "invalid device: Vulkan0" in bad
    assert json.loads((DATA / "health-loading.json").read_text())["error"]["code"] == 503
    assert json.loads((DATA / "health-ok.json").read_text()) == {"status": "ok"}
    assert json.loads((DATA / "props.json").read_text())["total_slots"] == 1
    assert "llamacpp:tokens_predicted_total" in (DATA / "metrics.txt").read_text()


# The build script: cached, and loud when it fails


def test_a_cached_build_is_found_without_building() -> None:
    started = time.monotonic()
    out = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=30,
                         check=True)
    assert Path(out.stdout.strip()) == binary() and out.stderr == ""
    assert time.monotonic() - started < 5


def test_a_failed_build_fails_loudly(tmp_path: Path) -> None:
    """No sdist and a pip that cannot fetch it: exit 1, say what failed, show the log's tail."""
    pip = tmp_path / "venv" / "bin" / "pip"
    pip.parent.mkdir(parents=True)
    pip.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found' >&2\nexit 1\n")
    pip.chmod(0o755)
    env = {**os.environ, "LLAMA_SERVER_ROOT": str(tmp_path / "root"),
           "LLM_SUPERVISOR_VENV": str(tmp_path / "venv")}
    out = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=120,
                         env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and out.stdout == ""
    assert "FAILED: pip download" in out.stderr and "No matching distribution" in out.stderr
    assert not list((tmp_path / "root").glob("*/bin/llama-server"))


def test_slots_show_progress_and_the_simulated_runner_speaks_the_same(tiny_model: Path,
                                                                       llama_server) -> None:
    """``/slots`` of the real llama-server, turned on the way the engine unit does
    (``LLAMA_ARG_ENDPOINT_SLOTS=1``): a long generation's decoded tokens advance between two
    reads, which the progress rule reads as work; the simulated Ollama's runner serves the
    same shape (the fields the rule reads, with their types)."""
    import threading

    from llm_supervisor.checks.progress import Watch, parse_slots
    from llm_supervisor.simengine.engine import Engine as SimEngine
    from llm_supervisor.simengine.logs import Log
    from llm_supervisor.simengine.plan import Faults

    server = llama_server(tiny_model, "--device", "none", "-c", "8192", "-np", "1",
                          env={"LLAMA_ARG_ENDPOINT_SLOTS": "1"})
    server.wait_ready()
    idle = server.get("/slots")
    assert idle.status_code == 200 and parse_slots(idle.json()) is not None
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(server.post(
        "/completion", {"prompt": "hello", "n_predict": 6000, "ignore_eos": True},
        timeout=300).status_code))
    thread.start()
    watch = Watch(0.0, "generate")
    readings = []
    try:
        for i in range(20):
            reading = parse_slots(server.get("/slots").json())
            assert reading is not None
            readings.append(reading)
            watch.add(float(i), reading)
            time.sleep(0.1)
    finally:
        thread.join()
    assert done == [200]
    assert any(r.in_flight == 1 for r in readings), readings
    tokens, _, _, _ = watch.since(0.0)
    assert tokens > 0, readings
    real = server.get("/slots").json()[0]
    sim = SimEngine(kind="ollama", model="m", library="rocm", faults=Faults(),
                    log=Log("ollama")).slots_document()[0]
    for key in ("id", "id_task", "is_processing", "n_ctx"):
        assert type(sim[key]) is type(real[key]), key
    if "n_prompt_tokens_processed" in real:  # newer builds; this one may predate it
        assert type(sim["n_prompt_tokens_processed"]) is type(real["n_prompt_tokens_processed"])
    # newer llama.cpp (Ollama's runner) wraps next_token in a one-element list; this build
    # has the object alone: the rule reads both
    real_next = real["next_token"][0] if isinstance(real["next_token"], list) else \
        real["next_token"]
    assert isinstance(sim["next_token"], list) and len(sim["next_token"]) == 1
    for key in ("n_decoded", "n_remain", "has_next_token"):
        assert type(sim["next_token"][0][key]) is type(real_next[key]), key
