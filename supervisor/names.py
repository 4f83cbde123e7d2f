"""Ollama model names, compared as Ollama compares them. Standard library only.

``qwen2.5`` is ``registry.ollama.ai/library/qwen2.5:latest`` (types/model/name.go: the host,
namespace and tag have defaults; names compare case-insensitively; a digest is not part of
the name).
"""

from __future__ import annotations

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


def normalise_model(name: str) -> str:
    name = name.strip().lower().split("@", 1)[0]
    parts = name.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = "/".join(parts[:-2]) if len(parts) >= 3 else DEFAULT_HOST
    if ":" not in model:
        model += ":" + DEFAULT_TAG
    return f"{host}/{namespace}/{model}"


def same_model(a: str, b: str) -> bool:
    return normalise_model(a) == normalise_model(b)
