"""Ollama's model names, manifests and models directory: one rule each, as Ollama has them.
Standard library only.

- A name: ``qwen2.5`` is ``registry.ollama.ai/library/qwen2.5:latest`` (types/model/name.go:
  the host, namespace and tag have defaults; names compare case-insensitively; a digest is
  not part of the name).
- Its manifest: ``<models>/manifests/<host>/<namespace>/<model>/<tag>``.
- The models directory: ``OLLAMA_MODELS`` when set, else ``~/.ollama/models`` of the user the
  engine runs as (envconfig/config.go ``Models()``: ``os.UserHomeDir()``, which is the
  ``$HOME`` systemd sets from ``User=``). The stock install's ``ollama`` user lives in
  ``/usr/share/ollama``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

MODEL_MEDIA = "application/vnd.ollama.image.model"  # the manifest layer of the weights
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
STOCK_HOME = "/usr/share/ollama"  # the ollama user's home in Ollama's install script


def name_parts(name: str) -> tuple[str, str, str, str]:
    """``qwen2.5:7b`` -> (registry.ollama.ai, library, qwen2.5, 7b), case kept (unchecked:
    ``llm_supervisor.tools.bundle`` validates names it writes)."""
    name = name.strip().split("@", 1)[0]
    path, tag = name, DEFAULT_TAG
    if ":" in name.rsplit("/", 1)[-1]:
        path, tag = name.rsplit(":", 1)
    parts = path.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = "/".join(parts[:-2]) if len(parts) >= 3 else DEFAULT_HOST
    return host, namespace, model, tag or DEFAULT_TAG


def normalise_model(name: str) -> str:
    host, namespace, model, tag = name_parts(name.lower())
    return f"{host}/{namespace}/{model}:{tag}"


def same_model(a: str, b: str) -> bool:
    return normalise_model(a) == normalise_model(b)


def manifest_relpath(name: str) -> str:
    """``manifests/registry.ollama.ai/library/qwen2.5/7b``: where a model's manifest lives
    under the models directory."""
    return "manifests/" + "/".join(name_parts(name))


def models_dir(environment: Mapping[str, str], home: str | None) -> PurePosixPath:
    """The directory Ollama reads and pulls models into, for an engine with this
    ``environment`` running as a user whose home is ``home`` (None: unknown, the stock one)."""
    if environment.get("OLLAMA_MODELS"):
        return PurePosixPath(environment["OLLAMA_MODELS"])
    return PurePosixPath(home or STOCK_HOME) / ".ollama" / "models"


def user_home(user: str) -> str | None:
    """The home directory of ``user`` on this host, or None when there is no such user."""
    import pwd

    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


def model_blob(models: Path, name: str) -> str | None:
    """The blob file of a model's weights (``sha256-<hex>``), as its manifest in ``models``
    names it in the layer of mediaType ``application/vnd.ollama.image.model``; None when
    there is no such manifest or it is not one."""
    try:
        manifest = json.loads((models / manifest_relpath(name)).read_bytes())
        digest = next(str(layer["digest"]) for layer in manifest["layers"]
                      if layer.get("mediaType") == MODEL_MEDIA)
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError,
            RecursionError):
        return None
    if not digest.startswith("sha256:") or "/" in digest:
        return None
    return digest.replace(":", "-")


def ollama_blob(model: str, environment: Mapping[str, str], user: str) -> str | None:
    """The blob of an Ollama engine's model, as its manifest under the models directory of
    its ``environment`` and ``user`` names it (None: no manifest to read yet)."""
    return model_blob(Path(models_dir(environment, user_home(user))), model)
