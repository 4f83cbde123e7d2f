"""The simulated engine driven by the official clients: the ``ollama`` and ``openai`` packages.

Whatever these clients send (keep-alive connections, bodies on every request, the routes they
call) the simulated Ollama and vLLM must answer as the real ones do.
"""

# ruff: noqa: F811  (``start``, the simulated-engine fixture, is imported and then requested)
from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterator

import httpx
import ollama
import openai
import pytest
from test_simengine import MODEL, VLLM_MODEL, Sim, start  # noqa: F401


@pytest.fixture
def clients() -> Iterator[list]:
    """Clients to close after the test (their pools would leak sockets otherwise)."""
    made: list = []
    yield made
    for client in made:
        client.close()


@pytest.fixture
def ollama_client(clients) -> Callable[[Sim], ollama.Client]:
    def make(sim: Sim) -> ollama.Client:
        clients.append(ollama.Client(host=sim.url, timeout=10))
        return clients[-1]
    return make


@pytest.fixture
def openai_client(clients) -> Callable[[Sim], openai.OpenAI]:
    def make(sim: Sim) -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=sim.url + "/v1", api_key="unused",
                                     max_retries=0, timeout=10))
        return clients[-1]
    return make


def test_the_ollama_client_generates_chats_and_streams(start, ollama_client) -> None:
    client = ollama_client(start().ready())
    out = client.generate(model=MODEL, prompt="Say hi", options={"num_predict": 2})
    assert out.done and out.done_reason == "length" and out.eval_count == 2 and out.response
    assert out.eval_duration and out.eval_count / out.eval_duration * 1e9 > 0

    chat = client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert chat.message.role == "assistant" and chat.message.content and chat.done

    parts = list(client.generate(model=MODEL, prompt="hi", stream=True,
                                 options={"num_predict": 3}))
    assert [p.done for p in parts] == [False, False, False, True]
    assert "".join(p.response for p in parts) and parts[-1].eval_count == 3
    chat_parts = list(client.chat(model=MODEL, stream=True, options={"num_predict": 2},
                                  messages=[{"role": "user", "content": "hi"}]))
    assert [p.done for p in chat_parts] == [False, False, True]
    assert all(p.message.role == "assistant" for p in chat_parts)

    pulled = [p.status for p in client.pull(MODEL, stream=True)]
    assert pulled[0] == "pulling manifest" and pulled[-1] == "success"
    assert client.pull(MODEL).status == "success"


def test_the_ollama_client_lists_shows_embeds_and_deletes(start, ollama_client) -> None:
    client = ollama_client(start().ready())
    (listed,) = client.list().models
    assert listed.model == MODEL and listed.size and listed.details.family == "qwen2"
    assert client.ps().models == []

    shown = client.show(MODEL)
    assert shown.details.family == "qwen2" and "completion" in shown.capabilities
    assert shown.modelinfo["general.architecture"] == "qwen2" and shown.modelfile
    assert shown.modified_at is not None

    one = client.embed(model=MODEL, input="hello")
    (vector,) = one.embeddings
    assert len(vector) == 3584 and math.isclose(math.fsum(x * x for x in vector), 1, rel_tol=1e-3)
    two = client.embed(model=MODEL, input=["hello", "world"])
    assert len(two.embeddings) == 2 and two.embeddings[0] == vector != two.embeddings[1]
    assert two.prompt_eval_count == 2 and two.load_duration is not None
    assert client.ps().models[0].model == MODEL  # embedding loaded the model

    assert client.delete(MODEL).status == "success"
    for call in (lambda: client.show("llama3:8b"), lambda: client.delete("llama3:8b"),
                 lambda: client.embed(model="llama3:8b", input="hi"),
                 lambda: client.generate(model="llama3:8b", prompt="hi")):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 404 and e.value.error == "model 'llama3:8b' not found"


def test_a_404_keeps_the_keep_alive_connection_usable(start) -> None:
    sim = start().ready()
    with httpx.Client(base_url=sim.url, timeout=5) as client:
        for _ in range(3):  # one connection, reused: each 404 body must have been read
            assert client.post("/api/nothing", json={"model": MODEL, "pad": "x" * 5000}
                               ).status_code == 404
            assert client.get("/", headers={"X-Probe": "1"}).text == "Ollama is running"
    vllm = start(kind="vllm").ready()
    with socket.create_connection(("127.0.0.1", int(vllm.url.rsplit(":", 1)[1])), 5) as s:
        body = b'{"model": "x"}'
        s.sendall(b"POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body) +
                  b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = b""
        while seen.count(b"HTTP/1.1 ") < 2:
            chunk = s.recv(4096)
            assert chunk, seen
            seen += chunk
    assert seen.startswith(b"HTTP/1.1 404 ") and b"HTTP/1.1 200 " in seen


def test_the_ollama_openai_layer_retrieves_one_model(start, openai_client) -> None:
    client = openai_client(start().ready())
    assert [m.id for m in client.models.list()] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "library")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("llama3:8b")
    out = client.completions.create(model=MODEL, prompt="hi", max_tokens=1, n=3)
    assert len(out.choices) == 1  # Ollama answers one choice whatever n asks


def test_the_openai_client_drives_the_simulated_vllm(start, openai_client) -> None:
    client = openai_client(start(kind="vllm").ready())
    (model,) = client.models.list()
    assert model.id == VLLM_MODEL and model.owned_by == "vllm"
    with pytest.raises(openai.NotFoundError):  # vLLM has no GET /v1/models/{id}
        client.models.retrieve("gpt-4")

    out = client.completions.create(model=VLLM_MODEL, prompt="hi", max_tokens=2)
    (choice,) = out.choices
    assert choice.finish_reason == "length" and choice.text and out.usage
    assert out.usage.completion_tokens == 2

    many = client.completions.create(model=VLLM_MODEL, prompt="hi", max_tokens=1, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert many.usage and many.usage.completion_tokens == 3
    chats = client.chat.completions.create(model=VLLM_MODEL, max_tokens=1, n=2,
                                           messages=[{"role": "user", "content": "hi"}])
    assert [c.index for c in chats.choices] == [0, 1]
    assert all(c.message.role == "assistant" and c.message.content for c in chats.choices)

    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=1)
    assert e.value.status_code == 404
    with pytest.raises(openai.BadRequestError):
        client.post("/completions", cast_to=object, body=["not", "an", "object"])
    # the connection pool survived every error: one more request on it
    assert client.completions.create(model=VLLM_MODEL, prompt="hi", max_tokens=1).choices


KINDS = ("--model", MODEL, "--model", "qwen3:8b=reasoning", "--model",
         "gpt-oss:20b=reasoning-always", "--model", "nomic-embed-text=embedding")


def test_the_ollama_client_with_reasoning_and_embedding_models(start, ollama_client) -> None:
    client = ollama_client(start(*KINDS).ready())
    off = client.generate(model="qwen3:8b", prompt="Say hi", think=False)
    assert off.response.startswith("Hello") and not off.thinking
    on = client.generate(model="qwen3:8b", prompt="Say hi", options={"num_predict": 8})
    assert on.response == "" and on.thinking and on.eval_count == 8
    always = client.generate(model="gpt-oss:20b", prompt="Say hi", think=False,
                             options={"num_predict": 8})
    assert always.thinking and always.response == ""  # gpt-oss cannot stop thinking
    chat = client.chat(model="gpt-oss:20b", messages=[{"role": "user", "content": "hi"}])
    assert chat.message.thinking and chat.message.content
    parts = list(client.chat(model="qwen3:8b", stream=True, options={"num_predict": 30},
                             messages=[{"role": "user", "content": "hi"}]))
    assert parts[0].message.thinking and parts[-2].message.content and parts[-1].done

    shown = client.show("nomic-embed-text")
    assert shown.capabilities == ["embedding"]
    vectors = client.embed(model="nomic-embed-text", input=["hello", "world"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 768 and vectors[0] != vectors[1]
    assert math.isclose(math.fsum(x * x for x in vectors[0]), 1, rel_tol=1e-3)
    for call in (lambda: client.generate(model="nomic-embed-text", prompt="hi"),
                 lambda: client.chat(model="nomic-embed-text",
                                     messages=[{"role": "user", "content": "hi"}])):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 400 and "does not support" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=MODEL, prompt="hi", think=True)
    assert e.value.status_code == 400 and e.value.error == f'"{MODEL}" does not support thinking'
    assert {m.model for m in client.ps().models} == {"qwen3:8b", "gpt-oss:20b",
                                                     "nomic-embed-text"}


def test_the_ollama_client_sees_a_failing_runner(start, ollama_client) -> None:
    client = ollama_client(start(*KINDS, plan={"*": {"generation_errors_after": 0}}).ready())
    for call in (lambda: client.generate(model=MODEL, prompt="hi"),
                 lambda: client.embed(model="nomic-embed-text", input="hi")):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 500 and "exit status 2" in e.value.error
    assert client.list().models  # the server itself answers


def test_the_openai_client_on_ollama_reasoning_and_embeddings(start, openai_client) -> None:
    client = openai_client(start(*KINDS).ready())
    thought = client.chat.completions.create(model="qwen3:8b", max_tokens=8,
                                             messages=[{"role": "user", "content": "hi"}])
    (choice,) = thought.choices
    assert choice.message.content == "" and choice.finish_reason == "length"
    assert (choice.message.model_extra or {}).get("reasoning", "").startswith("Okay")
    answered = client.chat.completions.create(model="qwen3:8b", max_tokens=4,
                                              reasoning_effort="none",
                                              messages=[{"role": "user", "content": "hi"}])
    assert answered.choices[0].message.content == "Hello! I am"

    hello = {}
    for model in ("nomic-embed-text", MODEL):  # Ollama embeds with any model it can load
        out = client.embeddings.create(model=model, input=["hello", "world"])  # base64
        hello[model], world = (d.embedding for d in out.data)
        assert hello[model] != world
        assert math.isclose(math.fsum(x * x for x in hello[model]), 1, rel_tol=1e-3)
    assert (len(hello["nomic-embed-text"]), len(hello[MODEL])) == (768, 3584)
    floats = client.embeddings.create(model="nomic-embed-text", input="hello",
                                      encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(hello["nomic-embed-text"], abs=1e-6)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="nomic-embed-text",
                                       messages=[{"role": "user", "content": "hi"}])
    assert "does not support chat" in str(e.value)


def test_the_openai_client_on_a_vllm_pooling_model(start, openai_client) -> None:
    client = openai_client(start("--model", "BAAI/bge-m3=embedding", kind="vllm").ready())
    out = client.embeddings.create(model="BAAI/bge-m3", input="hello")
    assert len(out.data[0].embedding) == 768 and out.usage.prompt_tokens == 1
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="BAAI/bge-m3", prompt="hi", max_tokens=1)
