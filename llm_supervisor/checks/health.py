"""Health checks against an engine's HTTP API. Each takes an injected ``httpx.AsyncClient`` and
returns an ``Observation`` whose finding names its cause (``llm_supervisor.causes``).

- liveness: ``GET /`` (ollama) or ``GET /health`` (vllm, llama-server) within ``timeout``;
  llama-server answers 503 "Loading model" until its model is loaded: a failed check like any
  other, which the start-up grace excuses (after the grace it is ``unresponsive``);
- canary: a real generation — a hung GPU shows here while liveness still answers. Its wait
  is judged against ``canary_timeout`` (``load_timeout`` for the first after a start) and the
  engine's progress (``progress``: its ``/slots`` or ``/metrics``), not cut off. Ollama
  reports its own rate (``eval_count / eval_duration``); for vLLM a few tokens are streamed
  and the rate is taken between the first and the last token, so it measures generation,
  not the request's latency; llama-server's ``POST /completion`` reports
  its own rate (``timings.predicted_per_second``) over a few tokens (over one token it
  measures only the sampling of the first). Every engine is asked the same few tokens
  (``output.PROMPT``, a fixed seed, temperature 0) and the text is judged
  (``output.degenerate``): garbage at full speed is ``degenerate``. 404 means the model is
  missing, 401/403 a wrong or missing API key: causes no tier change can fix;
- placement (ollama): the model loaded with ``size_vram == 0`` while on a GPU tier means the
  engine silently runs on the CPU. Model names are compared as Ollama normalises them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks import output
from llm_supervisor.checks import progress as progress_rule
from llm_supervisor.checks.model import Kind as ModelKind
from llm_supervisor.checks.model import ModelFacts, embedding_refusal
from llm_supervisor.checks.progress import Reading
from llm_supervisor.config import EngineConfig, split_listen
from llm_supervisor.host import clients
from llm_supervisor.names import normalise_model, same_model

__all__ = ["canary", "liveness", "normalise_model", "placement", "progress",
           "same_model"]

CANARY_TOKENS = output.TOKENS  # a rate over several decode steps, and text to judge
GENERATION_CAP = 3600.0  # s: a canary nothing else ends (the engine restarted...) ends here


def describe_error(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


def read_api_key(engine: EngineConfig) -> str | None:
    """The engine's API key from ``api_key_file`` (read at every canary: rotation works)."""
    if not engine.api_key_file:
        return None
    return Path(engine.api_key_file).read_text().strip()


async def liveness(client: httpx.AsyncClient, engine: EngineConfig, timeout: float
                   ) -> Observation:
    path = "/" if engine.kind == "ollama" else "/health"
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):  # a total deadline: httpx's are per operation
            response = await client.get(engine.endpoint + path, timeout=timeout)
    except TimeoutError:
        return Observation.bad("liveness", Cause.UNRESPONSIVE,
                               f"GET {path} timed out after {timeout:g}s")
    except httpx.HTTPError as exc:
        return Observation.bad("liveness", Cause.UNRESPONSIVE, f"GET {path}: {describe_error(exc)}")
    latency = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        detail = f"GET {path}: HTTP {response.status_code}"
        said = _error_message(response) if engine.kind == "llama-server" else ""
        if engine.kind == "llama-server" and response.status_code == 503:
            detail += f" ({said or 'not ready'})"  # "Loading model"
        # llama-server loading its model says so: the load's deadline judges it, not the
        # start-up grace (a 40 GB model from a slow disk takes minutes)
        loading = response.status_code == 503 and "loading" in said.lower()
        return Observation.bad("liveness", Cause.UNRESPONSIVE, detail,
                               evidence=response.text[:500], latency_ms=latency,
                               facts={"loading": True} if loading else {})
    return Observation(True, "liveness", latency_ms=latency)


def _error_message(response: httpx.Response) -> str:
    """llama.cpp's ``{"error": {"code": 503, "message": "Loading model"}}``."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return str(error.get("message") or "") if isinstance(error, dict) else ""


def _http_finding(engine: EngineConfig, response: httpx.Response, latency_ms: float
                  ) -> Observation:
    """A canary answered with an error status: what it means."""
    code, body = response.status_code, response.text[:500]
    if code == 404:
        fix = {"ollama": f"ollama pull {engine.model} (or set pull = true on the engine)",
               "llama-server": "give llama-server its model (-m in `exec`)"}.get(
            engine.kind, f"serve {engine.model!r} (the engine's --model / served name), or fix"
            " `model`")
        return Observation.bad("canary", Cause.MODEL_MISSING,
                               f"{engine.model} is not on the engine (HTTP 404)", fix=fix,
                               evidence=body, facts={"model": engine.model},
                               latency_ms=latency_ms)
    if code in (401, 403):
        fix = ("set api_key_file to the key the engine was started with" if
               not engine.api_key_file else f"put the engine's key in {engine.api_key_file}")
        return Observation.bad("canary", Cause.AUTH, f"the engine answered HTTP {code}",
                               fix=fix, evidence=body, latency_ms=latency_ms)
    refusal = embedding_refusal(engine, code, body)
    if refusal is not None:  # the model only embeds: the canary asks for an embedding next
        return Observation.bad("canary", Cause.GENERATION, f"HTTP {code}: {refusal}",
                               evidence=body, latency_ms=latency_ms,
                               facts={"embedding_only": refusal})
    if "NaN" in body and "embed" in response.request.url.path:
        # Ollama >= 0.14 refuses to encode a NaN embedding: the GPU's garbage, not an error
        return Observation.bad("canary", Cause.DEGENERATE, f"embeddings: HTTP {code}, NaN in"
                               " the vectors", evidence=body, latency_ms=latency_ms)
    return Observation.bad("canary", Cause.GENERATION, f"HTTP {code}", evidence=body,
                           latency_ms=latency_ms)


def auth_headers(engine: EngineConfig) -> dict[str, str]:
    """``Authorization: Bearer`` with the engine's key (``api_key_file``), when it has one;
    raises OSError when the file cannot be read."""
    key = read_api_key(engine)
    return {"Authorization": f"Bearer {key}"} if key else {}


async def canary(client: httpx.AsyncClient, engine: EngineConfig, connect_timeout: float,
                 min_tokens_per_second: float = 0.0, cap: float = GENERATION_CAP,
                 facts: ModelFacts | None = None) -> Observation:
    """One generation — or, for an embedding-only model (``facts``), one embedding. It has no
    deadline of its own: it may wait in the engine's queue, and whether waiting is a hang is
    judged from the engine's progress (``llm_supervisor.checks.progress``) while it runs. ``cap``
    only bounds a request that nothing else ends."""
    try:
        headers = auth_headers(engine)
    except OSError as exc:
        return Observation.bad("canary", Cause.CONFIG, f"cannot read api_key_file: "
                               f"{exc.strerror or exc}", fix=f"check {engine.api_key_file}")
    timeout = httpx.Timeout(connect_timeout, read=cap)
    started = time.monotonic()
    try:
        async with asyncio.timeout(cap):
            done = await _ask(client, engine, headers, timeout, facts or ModelFacts())
    except (TimeoutError, httpx.ReadTimeout, httpx.PoolTimeout):
        return Observation.bad("canary", Cause.HANG, f"no answer within {cap:g}s")
    except httpx.HTTPError as exc:
        return Observation.bad("canary", Cause.GENERATION, describe_error(exc))
    elapsed_ms = (time.monotonic() - started) * 1000
    if isinstance(done, httpx.Response):
        return _http_finding(engine, done, elapsed_ms)
    if isinstance(done, str):
        return Observation.bad("canary", Cause.GENERATION, done, latency_ms=elapsed_ms)
    if isinstance(done, Embedded):
        return _judge_embedding(done, elapsed_ms)
    return _judge_generation(done, elapsed_ms, min_tokens_per_second)


async def _ask(client: httpx.AsyncClient, engine: EngineConfig, headers: dict[str, str],
               timeout: httpx.Timeout, facts: ModelFacts
               ) -> httpx.Response | str | Generated | Embedded:
    """The canary's one request, in the engine's dialect: an embedding for an embedding-only
    model, else a generation."""
    if facts.kind == ModelKind.EMBEDDING:
        return await _embed(client, engine, headers, timeout)
    if engine.kind == "vllm":
        return await _vllm_generate(client, engine, headers, timeout)
    if engine.kind == "llama-server":
        return await _llama_generate(client, engine, headers, timeout)
    return await _ollama_generate(client, engine, headers, timeout, facts)


def _judge_embedding(done: Embedded, elapsed_ms: float) -> Observation:
    """An embedding canary's vectors: ``degenerate`` when they are what a faulted GPU produces
    (``output.bad_embeddings``), else healthy."""
    garbage = output.bad_embeddings(done.vectors)
    if garbage:
        return Observation.bad("canary", Cause.DEGENERATE, f"embeddings: {garbage}",
                               latency_ms=elapsed_ms, evidence={
                                   "inputs": list(output.EMBED_INPUTS),
                                   "head": [v[:4] if isinstance(v, list) else v
                                            for v in (done.vectors or [])][:2]})
    return Observation(True, "canary", latency_ms=elapsed_ms)


def _judge_generation(done: Generated, elapsed_ms: float, min_tokens_per_second: float
                      ) -> Observation:
    """A generation canary's text and rate: ``degenerate`` when the text is garbage, ``slow``
    when the rate is below ``min_tokens_per_second`` (0: no floor), else healthy."""
    rate = done.rate
    garbage = output.degenerate(done.text, done.tokens)
    if garbage:
        return Observation.bad("canary", Cause.DEGENERATE, garbage, latency_ms=elapsed_ms,
                               tokens_per_second=rate, evidence={
                                   "text": done.text[:500], "tokens": done.tokens,
                                   "prompt": output.PROMPT})
    if min_tokens_per_second and rate is not None and rate < min_tokens_per_second:
        return Observation.bad("canary", Cause.SLOW,
                               f"{rate:.1f} tokens/s, below {min_tokens_per_second:g}",
                               latency_ms=elapsed_ms, tokens_per_second=rate)
    return Observation(True, "canary", latency_ms=elapsed_ms, tokens_per_second=rate)


KernelView = Callable[[EngineConfig], Awaitable[Reading | None]]


async def progress(client: httpx.AsyncClient, engine: EngineConfig, runner_port: int | None,
                   timeout: float, view: KernelView | None = None) -> Reading | None:
    """What the engine is working on, in its own words
    (``llm_supervisor.checks.progress``); None when
    it says nothing (no such endpoint, an error, an Ollama before 0.30)."""
    try:
        headers = auth_headers(engine)
    except OSError:
        headers = {}
    urls: list[tuple[str, Callable[[Any], Reading | None], bool]]
    if engine.kind == "vllm":
        urls = [(engine.endpoint + "/metrics", progress_rule.parse_vllm_metrics, False)]
    elif engine.kind == "llama-server":
        urls = [(engine.endpoint + "/slots", _llama_slots, True),
                (engine.endpoint + "/metrics", progress_rule.parse_llama_metrics, False)]
    elif runner_port is not None:
        urls = [(f"http://127.0.0.1:{runner_port}/slots", _runner_slots, True)]
    else:
        urls = []
    for url, parse, is_json in urls:
        try:
            async with asyncio.timeout(timeout):
                response = await client.get(url, headers=headers, timeout=timeout)
            if response.status_code != 200:
                continue
            reading = parse(response.json() if is_json else response.text)
        except (TimeoutError, httpx.HTTPError, ValueError):
            continue
        if reading is not None:
            return reading
    return await (view or kernel_view)(engine)  # no token signal, or it went silent


async def kernel_view(engine: EngineConfig) -> Reading | None:
    """The engine's other clients as the kernel sees them (``host.clients``, off the loop)."""
    try:
        host, port = split_listen(engine.listen)
    except ValueError:
        return None
    try:
        address: str | None = host if not ipaddress.ip_address(host).is_unspecified else None
    except ValueError:  # a host name: every address on the port
        address = None
    seen = await asyncio.to_thread(clients.snapshot, port, host=address)
    return progress_rule.from_clients(seen)


def _llama_slots(document: Any) -> Reading | None:
    return progress_rule.parse_slots(document)


def _runner_slots(document: Any) -> Reading | None:
    return progress_rule.parse_slots(document, source="runner /slots")


async def _post_json(client: httpx.AsyncClient, url: str, body: dict[str, object],
                     headers: dict[str, str], timeout: httpx.Timeout
                     ) -> httpx.Response | str | dict[str, object]:
    """A canary's POST: the answer's JSON object, the response itself when its status is not
    200 (the caller maps it to a cause), or why the body is unusable."""
    response = await client.post(url, json=body, headers=headers, timeout=timeout)
    if response.status_code != 200:
        return response
    try:
        document = response.json()
    except ValueError:
        return "the answer is not JSON"
    return document if isinstance(document, dict) else "the answer is not a JSON object"


@dataclass(frozen=True)
class Generated:
    """What a canary got back: the engine's rate (None when it cannot tell), the text and
    the number of tokens it says it generated."""

    rate: float | None
    text: str
    tokens: int | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


async def _ollama_generate(client: httpx.AsyncClient, engine: EngineConfig,
                           headers: dict[str, str], timeout: httpx.Timeout, facts: ModelFacts
                           ) -> httpx.Response | str | Generated:
    """A few tokens, greedy and seeded, as a raw continuation (no chat template, on every
    Ollama from 0.9); ``think: false`` only where the model can think (0.12.4 refuses it
    elsewhere); ``thinking`` counts as text, since gpt-oss cannot stop thinking. The rate is
    Ollama's own (``eval_count / eval_duration``)."""
    body: dict[str, object] = {
        "model": engine.model, "prompt": output.PROMPT, "raw": True, "stream": False,
        "options": {"num_predict": CANARY_TOKENS, "temperature": 0, "seed": output.SEED}}
    if facts.thinking:
        body["think"] = False
    document = await _post_json(client, engine.endpoint + "/api/generate", body, headers,
                                timeout)
    if not isinstance(document, dict):
        return document
    count, duration = _number(document.get("eval_count")), _number(document.get("eval_duration"))
    rate = count / duration * 1e9 if count and duration and duration > 0 else None
    text = str(document.get("thinking") or "") + str(document.get("response") or "")
    return Generated(rate, text, int(count) if count is not None else None)


@dataclass(frozen=True)
class Embedded:
    """What an embedding canary got back: the vectors, as the engine wrote them."""

    vectors: Any


async def _embed(client: httpx.AsyncClient, engine: EngineConfig, headers: dict[str, str],
                 timeout: httpx.Timeout) -> httpx.Response | str | Embedded:
    """One small embedding of two different inputs: Ollama's ``/api/embed``, else the
    OpenAI-compatible ``/v1/embeddings`` (vLLM's pooling models, llama-server's)."""
    inputs = list(output.EMBED_INPUTS)
    if engine.kind == "ollama":
        document = await _post_json(client, engine.endpoint + "/api/embed",
                                    {"model": engine.model, "input": inputs}, headers, timeout)
        if not isinstance(document, dict):
            return document
        return Embedded(document.get("embeddings"))
    body: dict[str, object] = {"input": inputs}
    if engine.model:
        body["model"] = engine.model
    document = await _post_json(client, engine.endpoint + "/v1/embeddings", body, headers,
                                timeout)
    if not isinstance(document, dict):
        return document
    data = document.get("data")
    if not isinstance(data, list):
        return "the answer has no data"
    ordered = sorted((d for d in data if isinstance(d, dict)),
                     key=lambda d: int(d["index"]) if isinstance(d.get("index"), int) else 0)
    return Embedded([d.get("embedding") for d in ordered])


async def _llama_generate(client: httpx.AsyncClient, engine: EngineConfig,
                          headers: dict[str, str], timeout: httpx.Timeout
                          ) -> httpx.Response | str | Generated:
    """llama-server serves the one model it loaded: ``POST /completion``, its own rate."""
    body = {"prompt": output.PROMPT, "n_predict": CANARY_TOKENS, "ignore_eos": True,
            "temperature": 0, "seed": output.SEED, "stream": False}
    document = await _post_json(client, engine.endpoint + "/completion", body, headers,
                                timeout)
    if not isinstance(document, dict):
        return document
    tokens = _number(document.get("tokens_predicted"))
    if not tokens:
        return "no token generated"
    timings = document.get("timings")
    rate = _number(timings.get("predicted_per_second")) if isinstance(timings, dict) else None
    return Generated(rate if rate and rate > 0 else None, str(document.get("content") or ""),
                     int(tokens))


async def _vllm_generate(client: httpx.AsyncClient, engine: EngineConfig,
                         headers: dict[str, str], timeout: httpx.Timeout
                         ) -> httpx.Response | str | Generated:
    """A few streamed tokens, greedy and seeded; the rate between the first and the last."""
    body = {"model": engine.model, "prompt": output.PROMPT, "max_tokens": CANARY_TOKENS,
            "temperature": 0, "seed": output.SEED, "stream": True}
    stamps: list[float] = []
    pieces: list[str] = []
    async with client.stream("POST", engine.endpoint + "/v1/completions", json=body,
                             headers=headers, timeout=timeout) as response:
        if response.status_code != 200:
            await response.aread()
            return response
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            return "the answer is not an event stream (stream: true)"
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                return "a streamed chunk is not JSON"
            texts = [str(c.get("text") or "") for c in chunk.get("choices") or []
                     if isinstance(c, dict)]
            if any(texts):
                stamps.append(time.monotonic())
                pieces.extend(texts)
    if not stamps:
        return "no token in the stream"
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) \
        if len(stamps) >= 2 and stamps[-1] > stamps[0] else None
    return Generated(rate, "".join(pieces), len(stamps))


async def loaded(client: httpx.AsyncClient, engine: EngineConfig, timeout: float
                 ) -> bool | None:
    """Ollama: is the model loaded now (``/api/ps`` lists it)? None when it cannot tell
    (another kind, an error): a canary then gets the deadline it would anyway."""
    if engine.kind != "ollama" or not engine.model:
        return None
    try:
        async with asyncio.timeout(timeout):
            response = await client.get(engine.endpoint + "/api/ps", timeout=timeout)
        models = response.json().get("models")
    except (TimeoutError, httpx.HTTPError, ValueError, AttributeError):
        return None
    if response.status_code != 200 or not isinstance(models, list):
        return None
    return any(isinstance(m, dict) and any(same_model(str(m.get(k) or ""), engine.model)
                                           for k in ("name", "model") if m.get(k))
               for m in models)


async def placement(client: httpx.AsyncClient, engine: EngineConfig, timeout: float
                    ) -> Observation:
    """Ollama only: is the model on the GPU? (``/api/ps``: ``size_vram == 0`` means CPU)."""
    try:
        async with asyncio.timeout(timeout):
            response = await client.get(engine.endpoint + "/api/ps", timeout=timeout)
        models = response.json().get("models") or []
    except TimeoutError:
        return Observation.bad("placement", Cause.UNRESPONSIVE,
                               f"GET /api/ps timed out after {timeout:g}s")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return Observation.bad("placement", Cause.UNRESPONSIVE,
                               f"GET /api/ps: {describe_error(exc)}")
    for model in models:
        if not isinstance(model, dict):
            continue
        names = [str(model.get(k) or "") for k in ("name", "model")]
        if engine.model and not any(n and same_model(n, engine.model) for n in names):
            continue
        size, vram = model.get("size"), model.get("size_vram")
        if vram == 0 and size:
            return Observation.bad("placement", Cause.PLACEMENT,
                                   f"{names[0]} runs 100% on the CPU (size_vram 0 of"
                                   f" {size} bytes)", evidence=model,
                                   facts={"size": size, "size_vram": vram})
        return Observation(True, "placement")
    return Observation(True, "placement")


async def model_listed(client: httpx.AsyncClient, engine: EngineConfig, timeout: float
                       ) -> bool:
    """Is the engine's model on disk now? Ollama's ``/api/tags`` lists what an operator's
    ``ollama pull`` brought in; no answer is no."""
    try:
        response = await client.get(engine.endpoint + "/api/tags", timeout=timeout)
        found = [str(m.get("name") or m.get("model") or "")
                 for m in response.json().get("models") or [] if isinstance(m, dict)]
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return any(same_model(name, engine.model) for name in found if name)
