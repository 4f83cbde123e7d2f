"""What the engine's model is and can do, asked of the engine itself (read at each start).

The canary must ask what the model can do: a reasoning model (qwen3, deepseek-r1, gpt-oss)
spends a few tokens thinking, and an embedding-only model cannot generate at all. So before
its first canary after a start, each engine is asked:

- Ollama: ``POST /api/show`` ``capabilities`` (since 0.6.4): ``embedding`` without
  ``completion`` is an embedding model; ``thinking`` is a reasoning model, whose canary sends
  top-level ``"think": false`` (sent only there: 0.12.4 answers 400 to any ``think`` on a
  model without the capability) and reads ``response`` and ``thinking`` together (gpt-oss
  cannot turn thinking off). ``/api/version`` and the model's digest in ``/api/tags``
  identify what the speed was learned for.
- llama-server: ``--embedding``/``--embeddings`` in its command line (or
  ``LLAMA_ARG_EMBEDDINGS``) makes it an embedding server; ``/props`` gives its build and the
  model file.
- vLLM: ``/version``; a pooling model (``--runner pooling``, ``--task embed``) in its command
  line is an embedding model.

Where the engine says nothing (an older version, a field missing), the canary's own answer
corrects the kind: Ollama's 400 "does not support generate", llama-server's 501 "does not
support completions", vLLM's completions route absent (``{"detail": "Not Found"}``) —
``embedding_refusal``.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import httpx

from llm_supervisor.config import EngineConfig
from llm_supervisor.names import same_model


class Kind(StrEnum):
    COMPLETION = "completion"  # generates text (reasoning models included)
    EMBEDDING = "embedding"    # embeddings only: the canary asks for one


@dataclass(frozen=True)
class ModelFacts:
    kind: Kind = Kind.COMPLETION
    thinking: bool = False  # a reasoning model: Ollama thinks by default unless told not to
    digest: str = ""        # the model's identity (Ollama's digest, llama-server's file)
    version: str = ""       # the engine's version (or build)
    source: str = ""        # where the kind was read

    @property
    def identity(self) -> str:
        """What a learned speed belongs to besides the config: this model, this engine."""
        return f"{self.digest}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "thinking": self.thinking, "digest": self.digest[:19],
                "version": self.version, "source": self.source}

    def as_embedding(self, why: str) -> ModelFacts:
        return replace(self, kind=Kind.EMBEDDING, thinking=False, source=why)


EMBEDDING_FLAGS = ("--embedding", "--embeddings")
POOLING_FLAGS = (("--runner", "pooling"), ("--task", "embed"), ("--task", "embedding"))


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def kind_from_command(engine: EngineConfig) -> Kind | None:
    """An embedding server by its own command line (llama-server, vLLM); None: it does not
    say."""
    words = _words(engine.exec)
    if engine.kind == "llama-server":
        env = engine.environment.get("LLAMA_ARG_EMBEDDINGS", "")
        if any(w in EMBEDDING_FLAGS for w in words) or env.lower() in ("1", "true", "on"):
            return Kind.EMBEDDING
    if engine.kind == "vllm":
        split = [part for w in words for part in w.split("=", 1)]  # --task=embed
        if set(zip(split, split[1:], strict=False)) & set(POOLING_FLAGS):
            return Kind.EMBEDDING
    return None


def parse_show(document: Any) -> tuple[Kind | None, bool]:
    """Ollama's ``/api/show``: (kind, thinking); kind None when it lists no capabilities."""
    if not isinstance(document, dict):
        return None, False
    capabilities = document.get("capabilities")
    if not isinstance(capabilities, list) or not capabilities:  # older: it does not say
        return None, False
    caps = {str(c) for c in capabilities}
    if "embedding" in caps and "completion" not in caps:
        return Kind.EMBEDDING, False
    return Kind.COMPLETION, "thinking" in caps


def parse_tags_digest(document: Any, model: str) -> str:
    """The digest ``/api/tags`` gives the model ("" when it is not listed)."""
    models = document.get("models") if isinstance(document, dict) else None
    for entry in models if isinstance(models, list) else []:
        if not isinstance(entry, dict):
            continue
        names = [str(entry.get(k) or "") for k in ("name", "model")]
        if any(n and same_model(n, model) for n in names):
            return str(entry.get("digest") or "")
    return ""


def embedding_refusal(engine: EngineConfig, status: int, body: str) -> str | None:
    """Does a refused canary say the model only embeds? Why, or None."""
    text = body.lower()
    if engine.kind == "ollama" and status == 400 and "does not support generate" in text:
        return "Ollama: the model does not support generate"
    if engine.kind == "llama-server" and status == 501 and "does not support completions" \
            in text:
        return "llama-server runs with --embeddings"
    if engine.kind == "vllm" and ((status == 404 and '"detail"' in text and "not found" in text)
                                  or (status == 400 and "does not support" in text)):
        return "vLLM serves no completions for this model (a pooling model)"
    return None


async def _get_json(client: httpx.AsyncClient, method: str, url: str, timeout: float,
                    headers: dict[str, str], body: dict[str, Any] | None = None) -> Any:
    async with asyncio.timeout(timeout):
        response = await client.request(method, url, json=body, headers=headers,
                                        timeout=timeout)
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


async def read(client: httpx.AsyncClient, engine: EngineConfig, timeout: float,
               headers: dict[str, str]) -> ModelFacts | None:
    """The model's facts as the engine gives them; None when it does not answer (asked again
    at the next canary)."""
    base = engine.endpoint
    by_command = kind_from_command(engine)
    try:
        if engine.kind == "ollama":
            version = await _get_json(client, "GET", base + "/api/version", timeout, headers)
            show = await _get_json(client, "POST", base + "/api/show", timeout, headers,
                                   {"model": engine.model})
            tags = await _get_json(client, "GET", base + "/api/tags", timeout, headers)
            if version is None:
                return None
            kind, thinking = parse_show(show)
            return ModelFacts(kind or Kind.COMPLETION, thinking,
                              parse_tags_digest(tags, engine.model),
                              str(version.get("version") or "") if isinstance(version, dict)
                              else "", "/api/show" if kind else "")
        if engine.kind == "llama-server":
            props = await _get_json(client, "GET", base + "/props", timeout, headers)
            if not isinstance(props, dict):
                return None
            return ModelFacts(by_command or Kind.COMPLETION, False,
                              str(props.get("model_path") or ""),
                              str(props.get("build_info") or ""),
                              "command line" if by_command else "")
        version = await _get_json(client, "GET", base + "/version", timeout, headers)
        if not isinstance(version, dict):
            return None
        return ModelFacts(by_command or Kind.COMPLETION, False, engine.model,
                          str(version.get("version") or ""),
                          "command line" if by_command else "")
    except (TimeoutError, httpx.HTTPError):
        return None
