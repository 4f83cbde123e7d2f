"""The deployments people run, under a real systemd with the simulated Ollama: a reasoning
model with an embedding model beside it on the CPU, an embedding-only engine, an Ollama
before 0.30 (no token signal, real client connections), a runner failing every generation."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import httpx
from sandbox import FAST, configure, events, free_port, install, start_daemon, status, wait_engine

REASONING, EMBEDDING = "qwen3:8b", "nomic-embed-text:latest"
MODELS = "/usr/share/ollama/models"


def ollama_toml(c, port: int, model: str, *, args: str = "", faults: dict | None = None,
                models_dir: bool = False) -> str:
    env = {}
    if faults is not None:
        c.write("/etc/llm-supervisor/faults-main.json", json.dumps(faults))
        env["SIMENGINE_FAULTS"] = "/etc/llm-supervisor/faults-main.json"
    if models_dir:
        c.run(["install", "-d", "-o", "ollama", "-g", "ollama", MODELS])
        env["OLLAMA_MODELS"] = MODELS
    environment = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    return (f'[[engine]]\nname = "main"\nkind = "ollama"\n'
            f'exec = "/usr/bin/llm-supervisor-simengine serve {args}"\n'
            f'listen = "127.0.0.1:{port}"\nmodel = "{model}"\n'
            f'environment = {{ {environment} }}\n')


def engine_events(c, type_: str | None = None) -> list[dict]:
    return [e for e in events(c) if e.get("engine") == "main"
            and (type_ is None or e["type"] == type_)]


def counted(c) -> list[dict]:
    """The verdicts a healthy engine must never get: tier changes, restarts, exits from
    healthy."""
    return [e for e in engine_events(c) if e["type"] == "tier" and e.get("cause") != "start"
            or e["type"] == "state" and e.get("from") == "healthy"]


def test_a_reasoning_model_with_an_embedding_model_on_the_cpu_beside_it(fresh_container):
    """qwen3 (thinks by default) as the engine's model, an embedding model that Ollama put on
    the CPU beside it (a RAG set-up). The canary passes on the reasoning model; the other
    model's "offloaded 0/N layers" is shown under other_models, never a demotion."""
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, ollama_toml(c, port, REASONING, models_dir=True, faults={
        "*": {"cpu_models": [EMBEDDING]}},
        args=f"--model {REASONING}=reasoning --model {EMBEDDING}=embedding"))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
    with httpx.Client(trust_env=False, timeout=60) as client:
        for text in ("retrieval one", "retrieval two", "retrieval three"):
            r = client.post(f"http://127.0.0.1:{port}/api/embed",
                            json={"model": EMBEDDING, "input": text})
            assert r.status_code == 200, r.text
        r = client.post(f"http://127.0.0.1:{port}/api/chat", json={
            "model": REASONING, "stream": False,
            "messages": [{"role": "user", "content": "why is the sky blue?"}]})
        assert r.status_code == 200 and r.json()["message"].get("thinking"), r.text
    deadline = time.monotonic() + 15
    doc = status(c, "main")
    while time.monotonic() < deadline and not doc.get("other_models"):
        time.sleep(0.5)
        doc = status(c, "main")
    others = doc.get("other_models") or []
    assert others and others[0]["embedding"] and others[0]["offload"].startswith("0/"), doc
    time.sleep(8)  # several canaries and checks with the CPU runner beside it
    doc = status(c, "main")
    assert doc["state"] == "healthy" and doc["tier"] == "rocm", doc["reason"]
    assert doc["model_facts"]["thinking"] is True and doc["model_facts"]["kind"] == "completion"
    assert not counted(c), counted(c)


def test_an_embedding_engine_is_checked_with_embeddings_and_zeros_are_garbage(
        fresh_container):
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, ollama_toml(c, port, EMBEDDING, args=f"--model {EMBEDDING}=embedding",
                             faults={"rocm": {"embed_zeros": True}}))
    start_daemon(c)
    doc = wait_engine(c, "main", state="healthy", tier="vulkan", timeout=90)
    assert doc["model_facts"]["kind"] == "embedding", doc
    switches = engine_events(c, "tier")
    assert [e["to"] for e in switches] == ["rocm", "vulkan"], switches
    assert switches[-1]["cause"] == "degenerate" and "norm" in switches[-1]["reason"]


def test_a_runner_that_fails_every_generation_is_restarted_then_demoted(fresh_container):
    """HTTP 500 "llama runner process has terminated" on every generation while / answers
    200: a failed check on every tick — restarted on the tier, then demoted."""
    c = fresh_container
    install(c)
    port = free_port()
    configure(c, ollama_toml(c, port, "qwen2.5:7b-instruct",
                             faults={"rocm": {"generation_errors_after": 8}}))
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
    wait_engine(c, "main", state="healthy", tier="vulkan", timeout=90)
    restarts = [e for e in engine_events(c, "state")
                if "restarting on rocm" in (e.get("reason") or "")]
    assert restarts and restarts[0]["cause"] == "generation", restarts
    demoted = engine_events(c, "tier")[-1]
    assert demoted["to"] == "vulkan" and demoted["cause"] == "generation", demoted


def test_an_ollama_without_a_token_signal_hung_while_idle_is_caught_like_one_with_it(
        fresh_container):
    """Ollama 0.12.3 (no runner /slots): the GPU hangs while nobody else is connected. The
    kernel shows no other client, so nothing can be ahead of the canary: the first action
    comes within the idle bound k·i + C + n·i, not after blind_timeout (60 s here). Before
    that, a user's streamed answer in front of a canary is busy, not a hang."""
    c = fresh_container
    install(c)
    port = free_port()
    hang_after = 30.0
    settings = FAST.replace('blind_timeout = "10s"', 'blind_timeout = "60s"').replace(
        'stall_after = "2s"', 'stall_after = "3s"')
    configure(c, ollama_toml(c, port, "qwen2.5:7b-instruct", args="--ollama-version 0.12.3",
                             faults={"rocm": {"hang_after": hang_after}}), settings)
    start_daemon(c)
    wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
    shown = c.run(["systemctl", "show", "-P", "ExecMainStartTimestamp",
                   "llm-main.service"]).stdout.strip()  # "Mon 2026-12-07 08:00:00 UTC"
    started = datetime.strptime(shown, "%a %Y-%m-%d %H:%M:%S %Z").replace(
        tzinfo=UTC).timestamp()
    # a user's long streamed answer while the engine still works: busy, never a verdict
    samples: list[dict] = []
    stop = threading.Event()

    def user() -> None:
        with httpx.Client(trust_env=False, timeout=60) as client, client.stream(
                "POST", f"http://127.0.0.1:{port}/api/generate", json={
                    "model": "qwen2.5:7b-instruct", "prompt": "a long story",
                    "options": {"num_predict": 300}}) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    break

    thread = threading.Thread(target=user)
    thread.start()
    while thread.is_alive() and time.time() < started + hang_after - 3:
        samples.append(status(c, "main"))
        time.sleep(0.5)
    stop.set()
    thread.join(timeout=30)
    assert {d["state"] for d in samples} == {"healthy"}, [d["reason"] for d in samples]
    assert not counted(c), counted(c)
    # then the GPU hangs with nobody connected
    restart = c.wait_for(lambda: next((e for e in engine_events(c, "state")
                                       if "restarting on rocm" in (e.get("reason") or "")),
                                      None), timeout=60, what="the restart")
    took = datetime.fromisoformat(restart["ts"]).timestamp() - (started + hang_after)
    interval, k, canary_timeout, failures = 1, 2, 2, 3
    bound = k * interval + canary_timeout + failures * interval
    assert took <= bound + 2, (took, bound)  # + the engine's start and a tick of slack
    assert restart["cause"] == "hang" and "nobody else connected" in restart["reason"], restart
