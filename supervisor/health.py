"""Health checks against an engine's HTTP API. Each takes an injected ``httpx.AsyncClient``.

- liveness: ``GET /`` (ollama) or ``GET /health`` (vllm) within ``timeout``;
- canary: a real 1-token generation within ``canary_timeout`` — a hung GPU shows here while
  liveness still answers; tokens/s from ``eval_count / eval_duration``;
- placement (ollama): the model loaded with ``size_vram == 0`` while on a GPU tier means the
  engine silently runs on the CPU.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from supervisor.config import EngineConfig
from supervisor.states import CHECK, FAULT


@dataclass(frozen=True)
class Observation:
    """One signal about an engine: ok or not, how serious, and the evidence."""

    ok: bool
    source: str                    # liveness | unit | canary | placement | log
    reason: str = ""
    severity: str = CHECK
    evidence: str = ""
    latency_ms: float | None = None
    tokens_per_second: float | None = None


def _error(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


async def liveness(client: httpx.AsyncClient, engine: EngineConfig, timeout: float
                   ) -> Observation:
    path = "/health" if engine.kind == "vllm" else "/"
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):  # a total deadline: httpx's are per operation
            response = await client.get(engine.endpoint + path, timeout=timeout)
    except TimeoutError:
        return Observation(False, "liveness", f"GET {path}: timed out after {timeout:g}s")
    except httpx.HTTPError as exc:
        return Observation(False, "liveness", f"GET {path}: {_error(exc)}")
    latency = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        return Observation(False, "liveness", f"GET {path}: HTTP {response.status_code}",
                           evidence=response.text[:500], latency_ms=latency)
    return Observation(True, "liveness", latency_ms=latency)


async def canary(client: httpx.AsyncClient, engine: EngineConfig, timeout: float,
                 min_tokens_per_second: float = 0.0) -> Observation:
    if engine.kind == "vllm":
        path = "/v1/completions"
        body: dict[str, object] = {"model": engine.model, "prompt": "ping", "max_tokens": 1}
    else:
        path = "/api/generate"
        body = {"model": engine.model, "prompt": "ping", "stream": False,
                "options": {"num_predict": 1}}
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            response = await client.post(engine.endpoint + path, json=body, timeout=timeout)
    except (TimeoutError, httpx.TimeoutException):
        return Observation(False, "canary", f"canary hung: no token within {timeout:g}s")
    except httpx.HTTPError as exc:
        return Observation(False, "canary", f"canary failed: {_error(exc)}")
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        return Observation(False, "canary", f"canary: HTTP {response.status_code}",
                           evidence=response.text[:500], latency_ms=elapsed * 1000)
    try:
        document = response.json()
    except ValueError:
        return Observation(False, "canary", "canary: the answer is not JSON",
                           evidence=response.text[:500])
    rate = tokens_per_second(engine, document, elapsed)
    if min_tokens_per_second and rate is not None and rate < min_tokens_per_second:
        return Observation(False, "canary",
                           f"canary: {rate:.1f} tokens/s, below {min_tokens_per_second:g}",
                           latency_ms=elapsed * 1000, tokens_per_second=rate)
    return Observation(True, "canary", latency_ms=elapsed * 1000, tokens_per_second=rate)


def tokens_per_second(engine: EngineConfig, document: dict, elapsed: float) -> float | None:
    if engine.kind == "ollama":
        count, duration = document.get("eval_count"), document.get("eval_duration")
        if isinstance(count, int | float) and isinstance(duration, int | float) and duration:
            return count / duration * 1e9
        return None
    usage = document.get("usage") or {}
    count = usage.get("completion_tokens")
    if isinstance(count, int | float) and elapsed > 0:
        return count / elapsed
    return None


async def placement(client: httpx.AsyncClient, engine: EngineConfig, timeout: float
                    ) -> Observation:
    """Ollama only: is the model on the GPU? (``/api/ps``: ``size_vram == 0`` means CPU)."""
    try:
        async with asyncio.timeout(timeout):
            response = await client.get(engine.endpoint + "/api/ps", timeout=timeout)
        models = response.json().get("models") or []
    except TimeoutError:
        return Observation(False, "placement", f"GET /api/ps: timed out after {timeout:g}s")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return Observation(False, "placement", f"GET /api/ps: {_error(exc)}")
    for model in models:
        if engine.model and model.get("name") != engine.model and \
                model.get("model") != engine.model:
            continue
        if model.get("size_vram") == 0 and model.get("size"):
            return Observation(False, "placement",
                               f"{model.get('name')} runs on the CPU (size_vram 0 of"
                               f" {model.get('size')} bytes)", severity=FAULT,
                               evidence=str(model)[:500])
    return Observation(True, "placement")
