"""The models one simulated engine serves: their kinds, what each can do, and their state.

On the command line a model is ``NAME`` or ``NAME=KIND``; the first one given is the default.
The kinds, as Ollama's ``/api/show`` ``capabilities`` tell them apart (server/routes.go):

- ``completion``: ``["completion", "tools"]`` — generates text.
- ``reasoning``: also ``"thinking"`` (qwen3-like). From Ollama 0.12.4 on it thinks unless the
  request says top-level ``"think": false``; its first tokens go to ``thinking`` (generate) or
  ``message.thinking`` (chat), so a short ``num_predict`` is spent thinking (ollama#14793).
- ``reasoning-always``: the same capabilities, family ``gptoss``: its thinking cannot be
  turned off (``think: false`` is accepted and ignored).
- ``embedding``: ``["embedding"]`` — ``/api/embed`` only; ``/api/generate`` and ``/api/chat``
  answer 400 ``"<name>" does not support generate`` (``chat``).

Each model loads on its first use and then stays loaded; on Ollama each has a runner of its own
(one llama-server per model from 0.30 on). Its identity is Ollama's: the digest of its manifest
(``/api/tags``, ``/api/ps``), whose model layer names the blob the runner is started with.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_supervisor.names import manifest_relpath, normalise_model

KINDS = ("completion", "reasoning", "reasoning-always", "embedding")
THINKING_KINDS = ("reasoning", "reasoning-always")
MODEL_MEDIA = "application/vnd.ollama.image.model"
PAGE = 4096


@dataclass(frozen=True)
class Profile:
    """What a model of one kind looks like on disk and once loaded (one real model each)."""

    family: str
    parameter_size: str
    quantization: str
    size: int  # bytes on disk
    kv_cache: int  # what loading adds to it
    layers: int  # as llama.cpp counts them: the blocks plus the output layer
    context_length: int  # the model's own (GGUF)
    embedding_length: int
    buffer_mib: float  # the model buffer llama.cpp reports
    kv_mib: float


PROFILES = {
    "completion": Profile("qwen2", "7.6B", "Q4_K_M", 4_683_087_332, 1_073_741_824, 29, 32768,
                          3584, 4168.09, 448.00),
    "reasoning": Profile("qwen3", "8.2B", "Q4_K_M", 5_225_387_923, 1_207_959_552, 37, 40960,
                         4096, 4455.35, 576.00),
    "reasoning-always": Profile("gptoss", "20.9B", "MXFP4", 13_780_154_624, 1_610_612_736, 25,
                                131072, 2880, 11536.18, 204.00),
    "embedding": Profile("nomic-bert", "137M", "F16", 274_302_450, 0, 13, 2048, 768,
                         260.86, 0.0),
}
CAPABILITIES = {
    "completion": ["completion", "tools"],
    "reasoning": ["completion", "tools", "thinking"],
    "reasoning-always": ["completion", "tools", "thinking"],
    "embedding": ["embedding"],
}


def parse_model(value: str) -> tuple[str, str]:
    """``NAME`` or ``NAME=KIND`` -> (name, kind); ValueError naming the value otherwise."""
    name, sep, kind = value.partition("=")
    name, kind = name.strip(), kind.strip() if sep else "completion"
    if not name:
        raise ValueError(f"--model {value!r}: no model name")
    if kind not in KINDS:
        raise ValueError(f"--model {value!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    return name, kind


def think_wanted(think: object) -> bool:
    """Ollama's ThinkValue.Bool(): true, or a level ("high", "medium", "low")."""
    if isinstance(think, str):
        return think.strip().lower() not in ("", "false", "none")
    return bool(think)


@dataclass
class Model:
    """One served model: its kind, whether it is on disk, and its runner once loaded."""

    name: str
    kind: str = "completion"
    parallel: int = 1  # its runner's slots (OLLAMA_NUM_PARALLEL applies per model)
    present: bool = True  # on disk (a missing_model fault: only once pulled)
    on_cpu: bool = False  # the scheduler put its runner on the CPU (cpu_models)
    used_at: float | None = None  # wall time of its last use; None: not loaded
    runner: Any = None  # its runner's HTTP server, once started (Ollama)
    manifest: bytes = b""  # its Ollama manifest; its sha256 is the model's digest
    memory: list[bytearray] = field(default_factory=list)  # what loading allocated
    _lock: threading.Lock = field(default_factory=threading.Lock)
    loading: threading.Lock = field(default_factory=threading.Lock)  # one load at a time

    def __post_init__(self) -> None:
        self._free = threading.Semaphore(self.parallel)
        self._tasks = itertools.count(1)
        # llama-server's /slots, as the model's runner (an upstream llama-server) serves it
        self.slots: list[dict[str, Any]] = [
            {"id": i, "id_task": -1, "is_processing": False, "n_decoded": 0,
             "n_prompt_tokens": 0, "n_prompt_tokens_processed": 0}
            for i in range(self.parallel)]
        if not self.manifest:
            self.manifest = manifest_for(self.name, self.kind)

    @property
    def profile(self) -> Profile:
        return PROFILES[self.kind]

    @property
    def capabilities(self) -> list[str]:
        return list(CAPABILITIES[self.kind])

    @property
    def thinks(self) -> bool:
        return self.kind in THINKING_KINDS

    @property
    def embeds_only(self) -> bool:
        return self.kind == "embedding"

    @property
    def digest(self) -> str:
        """The manifest's digest: what ``/api/tags`` and ``/api/ps`` give as ``digest``."""
        return hashlib.sha256(self.manifest).hexdigest()

    @property
    def blob(self) -> str:
        """The hex digest of the model's weights (the manifest's model layer)."""
        return model_layer(self.manifest) or blob_digest(self.name)

    @property
    def loaded(self) -> bool:
        return self.used_at is not None

    def same(self, name: str, exact: bool) -> bool:
        """Is ``name`` this model: Ollama normalises names (host, namespace, tag, case)."""
        return name == self.name if exact else normalise_model(name) == \
            normalise_model(self.name)

    def hold_memory(self, mb: int) -> None:
        """Grow what the model holds to ``mb`` megabytes, every page touched (resident)."""
        wanted = mb * 1024 * 1024 - sum(len(b) for b in self.memory)
        if wanted > 0:
            chunk = bytearray(wanted)
            chunk[::PAGE] = b"\x01" * len(range(0, wanted, PAGE))
            self.memory.append(chunk)

    @contextlib.contextmanager
    def slot(self, stop: threading.Event, prompt_tokens: int = 0,
             waiting: Callable[[int], object] = lambda n: None) -> Iterator[dict[str, Any]]:
        """Hold one of ``parallel`` slots: a request beyond them waits here (the queue),
        ``waiting(+1)`` then ``waiting(-1)`` told."""
        waiting(1)
        try:
            while not self._free.acquire(timeout=0.2):
                if stop.is_set():
                    raise ConnectionAbortedError("the engine stopped")
        finally:
            waiting(-1)
        with self._lock:
            slot = next(s for s in self.slots if not s["is_processing"])
            slot.update(id_task=next(self._tasks), is_processing=True, n_decoded=0,
                        n_prompt_tokens=prompt_tokens, n_prompt_tokens_processed=0)
        try:
            yield slot
        finally:
            with self._lock:
                slot["is_processing"] = False
            self._free.release()

    def slots_document(self, n_ctx: int) -> list[dict[str, Any]]:
        """``GET /slots`` of llama-server (server_slot::to_json, metrics-only fields)."""
        with self._lock:
            return [{"id": s["id"], "id_task": s["id_task"], "n_ctx": n_ctx,
                     "speculative": False, "is_processing": s["is_processing"],
                     "n_prompt_tokens": s["n_prompt_tokens"],
                     "n_prompt_tokens_processed": s["n_prompt_tokens_processed"],
                     "params": {"n_predict": -1, "seed": 4294967295, "temperature": 0.8},
                     "next_token": [{"has_next_token": s["is_processing"],
                                     "has_new_line": False, "n_remain": -1,
                                     "n_decoded": s["n_decoded"]}]}
                    for s in self.slots]


def blob_digest(name: str) -> str:
    return hashlib.sha256(f"simulated weights of {normalise_model(name)}".encode()).hexdigest()


def manifest_for(name: str, kind: str) -> bytes:
    """An Ollama manifest (schema 2): a config and the model layer, as ``ollama pull``
    writes them."""
    config = hashlib.sha256(f"config of {normalise_model(name)}".encode()).hexdigest()
    document = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": f"sha256:{config}", "size": 487},
        "layers": [{"mediaType": MODEL_MEDIA, "digest": f"sha256:{blob_digest(name)}",
                    "size": PROFILES[kind].size}]}
    return json.dumps(document, separators=(",", ":")).encode()


def model_layer(manifest: bytes) -> str | None:
    """The hex digest of a manifest's model layer; None when it has none."""
    try:
        layers = json.loads(manifest)["layers"]
        digest = next(str(layer["digest"]) for layer in layers
                      if layer.get("mediaType") == MODEL_MEDIA)
    except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
        return None
    hex_ = digest.removeprefix("sha256:")
    return hex_ if digest.startswith("sha256:") and len(hex_) == 64 else None


def manifest_path(models_dir: Path, name: str) -> Path:
    return models_dir / manifest_relpath(name)


def adopt_manifest(models_dir: Path, model: Model) -> None:
    """A manifest already in the models directory (a real pull) is the model's: its digest
    and its blob are used, and it is never overwritten."""
    try:
        existing = manifest_path(models_dir, model.name).read_bytes()
    except OSError:
        return
    if model_layer(existing):
        model.manifest = existing


def write_manifest(models_dir: Path, model: Model) -> None:
    """Write the model's manifest where Ollama keeps it, unless one is there (no blob: the
    weights are simulated, and a reader of GGUF headers finds none rather than garbage)."""
    path = manifest_path(models_dir, model.name)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(model.manifest)
    partial.replace(path)


def remove_manifest(models_dir: Path, model: Model) -> None:
    with contextlib.suppress(FileNotFoundError):
        manifest_path(models_dir, model.name).unlink()
