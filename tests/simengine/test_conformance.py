"""The same OpenAI-compatible requests to the real llama-server (the tiny model, on the CPU) and
to the simulated vLLM: status codes, and the OpenAI fields of every answer (names and types,
not values). Where the two engines really differ (llama-server serves any model name, allows
one choice, answers a bad body with 500), the table says so; everything else must agree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai.types
import openai.types.chat
import pytest
from llamaserver import LlamaServer
from test_simengine import INHERITED, VLLM_MODEL, Sim, free_port
from tinymodel import write_tiny_model

# The fields OpenAI's API defines for each answer: both engines must have them, same types.
MODEL_FIELDS = {"id": 0, "object": 0, "created": 0, "owned_by": 0}
USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
COMPLETION = {"id": 0, "object": 0, "created": 0, "model": 0, "usage": USAGE,
              "choices": [{"index": 0, "text": 0, "logprobs": 0, "finish_reason": 0}]}
CHAT = {"id": 0, "object": 0, "created": 0, "model": 0, "usage": USAGE,
        "choices": [{"index": 0, "finish_reason": 0,
                     "message": {"role": 0, "content": 0}}]}
ERROR = {"error": {"message": 0, "type": 0, "code": 0}}
VALIDATORS = {"completion": openai.types.Completion.model_validate,
              "chat": openai.types.chat.ChatCompletion.model_validate,
              "models": lambda body: [openai.types.Model.model_validate(m) for m in body["data"]]}
HI = [{"role": "user", "content": "hi"}]

# name: (method, path, body, (llama-server status, vLLM status), template or None, validator)
REQUESTS: dict[str, tuple[str, str, Any, tuple[int, int], Any, str | None]] = {
    "models": ("GET", "/v1/models", None, (200, 200),
               {"object": 0, "data": [MODEL_FIELDS]}, "models"),
    "completion": ("POST", "/v1/completions", {"model": "M", "prompt": "hi", "max_tokens": 2},
                   (200, 200), COMPLETION, "completion"),
    "completion-one-token": ("POST", "/v1/completions",
                             {"model": "M", "prompt": "hi", "max_tokens": 1},
                             (200, 200), COMPLETION, "completion"),
    "chat": ("POST", "/v1/chat/completions", {"model": "M", "max_tokens": 2, "messages": HI},
             (200, 200), CHAT, "chat"),
    "chat-max-completion-tokens": ("POST", "/v1/chat/completions",
                                   {"model": "M", "max_completion_tokens": 1, "messages": HI},
                                   (200, 200), CHAT, "chat"),
    # llama-server serves its one model under any name; vLLM refuses a name it does not serve
    "unknown-model": ("POST", "/v1/completions",
                      {"model": "gpt-4", "prompt": "hi", "max_tokens": 1}, (200, 404), None,
                      None),
    "unknown-path": ("GET", "/v1/nothing", None, (404, 404), None, None),
    "retrieve-model": ("GET", "/v1/models/M", None, (404, 404), None, None),
    # a body that is not an object, or no messages: 500 from llama-server, 400 from vLLM
    "body-not-an-object": ("POST", "/v1/completions", [1, 2], (500, 400), ERROR, None),
    "chat-without-messages": ("POST", "/v1/chat/completions", {"model": "M"}, (500, 400),
                              ERROR, None),
    "completion-without-prompt": ("POST", "/v1/completions", {"model": "M", "max_tokens": 1},
                                  (500, 400), ERROR, None),
    # llama-server allows one choice only; vLLM answers n of them
    "n-choices": ("POST", "/v1/completions",
                  {"model": "M", "prompt": "hi", "max_tokens": 1, "n": 2}, (500, 200), None,
                  None),
}


def shape(value: Any, template: Any) -> Any:
    """The value's types, kept to the template's fields; a missing field shows as 'missing'."""
    if isinstance(template, dict):
        if not isinstance(value, dict):
            return type(value).__name__
        return {k: shape(value[k], t) if k in value else "missing" for k, t in template.items()}
    if isinstance(template, list):
        if not isinstance(value, list) or not value:
            return type(value).__name__
        return [shape(v, template[0]) for v in value]
    return "number" if type(value) in (int, float) else type(value).__name__


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, str]]]:
    """Both engines, started once: name -> (base URL, the model name it serves)."""
    model = write_tiny_model(tmp_path_factory.mktemp("conformance") / "tiny.gguf")
    llama = LlamaServer(model, "--device", "none")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not INHERITED.match(k)}
    sim = Sim(["serve", "--kind", "vllm", "--listen", f"127.0.0.1:{port}"], env, "vllm", port)
    try:
        llama.wait_ready()
        sim.ready()
        yield {"llama-server": (llama.url, Path(model).name), "vllm": (sim.url, VLLM_MODEL)}
    finally:
        llama.stop()
        sim.proc.terminate()
        sim.wait_exit()
        if sim.proc.stderr:
            sim.proc.stderr.close()


def ask(base: str, model: str, method: str, path: str, body: Any) -> httpx.Response:
    path = path.replace("/M", "/" + model)
    if isinstance(body, dict) and "model" in body and body["model"] == "M":
        body = {**body, "model": model}
    return httpx.request(method, base + path, json=body, timeout=60)


@pytest.mark.parametrize("name", REQUESTS)
def test_the_simulated_vllm_answers_like_the_real_llama_server(engines, name: str) -> None:
    method, path, body, statuses, template, validator = REQUESTS[name]
    answers = {engine: ask(base, model, method, path, body)
               for engine, (base, model) in engines.items()}
    got = (answers["llama-server"].status_code, answers["vllm"].status_code)
    assert got == statuses, {e: r.text[:300] for e, r in answers.items()}
    if template is not None:
        shapes = {e: shape(r.json(), template) for e, r in answers.items()}
        assert shapes["llama-server"] == shapes["vllm"], shapes
        assert "missing" not in repr(shapes), shapes
    if validator is not None:
        for response in answers.values():
            VALIDATORS[validator](response.json())  # the official client's own types accept it


def test_both_count_tokens_in_their_usage(engines) -> None:
    for base, model in engines.values():
        body = ask(base, model, "POST", "/v1/completions",
                   {"model": model, "prompt": "hi", "max_tokens": 3}).json()
        usage = body["usage"]
        assert usage["completion_tokens"] == 3 and body["choices"][0]["finish_reason"] == "length"
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
