"""What sizing needs of the GPU and the model, shared by ``advise`` and the derived tuning:
the cards' memory (sysfs), the KV cache's element size as Ollama applies it, and a model's
shape and weights read from Ollama's own files (its manifest, the GGUF header of its blob).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llm_supervisor import names, pci

GIB = 1024**3
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}   # OLLAMA_KV_CACHE_TYPE
# the sizing rule advise and the derived tuning share
DEFAULT_CONTEXT = 4096         # Ollama's default context below 24 GiB of VRAM
OVERHEAD = 1 * GIB             # runtime and compute buffers beside the weights and the cache
COMFORT_SHARE = 0.10           # of the GPU's memory kept free for a comfortable fit

# Memory bandwidth by PCI device id (sysfs cardN/device/device), bytes per second.
BANDWIDTH = {
    **dict.fromkeys(("0x66a0", "0x66a1", "0x66a2", "0x66a3", "0x66a7", "0x66af"),
                    (1024e9, "Vega 20 (MI50/MI60/Radeon VII), HBM2")),
    **dict.fromkeys(("0x738c", "0x738e"), (1228.8e9, "MI100, HBM2")),
    "0x740f": (1638.4e9, "MI210, HBM2e"),
}


@dataclass(frozen=True)
class Gpu:
    vram: int                       # bytes
    source: str                     # where the figure came from
    bandwidth: float | None = None  # bytes per second
    bandwidth_source: str = ""
    pci: str = ""                   # its PCI address, when sysfs gave it


def gpus_from_sysfs(drm: Path = Path("/sys/class/drm")) -> list[Gpu]:
    """One entry per amdgpu card: ``mem_info_vram_total``, bandwidth known by PCI id."""
    found = []
    for total in sorted(drm.glob("card*/device/mem_info_vram_total")):
        try:
            vram = int(total.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            device = (total.parent / "device").read_text().strip().lower()
        except OSError:
            device = ""
        bandwidth, what = BANDWIDTH.get(device, (None, ""))
        found.append(Gpu(vram, f"sysfs {total.parent.parent.name} mem_info_vram_total",
                         bandwidth, what, pci.address(total.parent.resolve().name) or ""))
    return found


def largest_vram(drm: Path = Path("/sys/class/drm")) -> int | None:
    cards = gpus_from_sysfs(drm)
    return max(g.vram for g in cards) if cards else None


def kv_cache_type(env: Mapping[str, str]) -> tuple[str, str | None]:
    """The KV cache type Ollama really uses, and a note when it is not the one asked for:
    ``OLLAMA_KV_CACHE_TYPE`` quantises the cache only with ``OLLAMA_FLASH_ATTENTION=1``;
    without it Ollama keeps f16."""
    asked = (env.get("OLLAMA_KV_CACHE_TYPE") or "f16").lower()
    if asked not in KV_BYTES:
        return "f16", f"OLLAMA_KV_CACHE_TYPE={asked} is not a cache type Ollama knows: f16"
    flash = (env.get("OLLAMA_FLASH_ATTENTION") or "").lower() in ("1", "true", "yes", "on")
    if asked != "f16" and not flash:
        return "f16", (f"OLLAMA_KV_CACHE_TYPE={asked} is ignored without"
                       " OLLAMA_FLASH_ATTENTION=1: Ollama keeps an f16 cache, counted as such")
    return asked, None


# --------------------------------------------------------------------------- the model's files

@dataclass(frozen=True)
class ModelFile:
    """A model as Ollama stores it: its weights' size and the shape the KV cache needs."""

    path: Path
    weights: int                    # bytes of the GGUF blob
    layers: int | None = None
    kv_heads: int | None = None
    head_size: int | None = None
    max_context: int | None = None

    def kv_bytes_per_token(self, kv_type: str = "f16") -> float | None:
        return kv_bytes_per_token(self.layers, self.kv_heads, self.head_size, kv_type)


def kv_bytes_per_token(layers: int | None, kv_heads: int | None, head_size: int | None,
                       kv_type: str = "f16") -> float | None:
    """Bytes of KV cache one token of context takes (keys and values, every layer), or None
    when the shape is not known."""
    if not (layers and kv_heads and head_size):
        return None
    return 2 * layers * kv_heads * head_size * KV_BYTES[kv_type]


def ollama_model_file(models_dir: Path, model: str) -> ModelFile | None:
    """The model's GGUF blob named by its manifest in ``models_dir``, and its header; None
    when it is not there (not pulled yet) or unreadable."""
    name = names.model_blob(models_dir, model)
    if name is None:
        return None
    try:
        blob = models_dir / "blobs" / name
        size = blob.stat().st_size
        with blob.open("rb") as fh:
            header = gguf_header(fh)
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError,
            RecursionError):
        return None
    arch = str(header.get("general.architecture", ""))

    def key(suffix: str) -> int | None:
        value = header.get(f"{arch}.{suffix}")
        return int(value) if isinstance(value, int) and value > 0 else None

    heads, embedding = key("attention.head_count"), key("embedding_length")
    head_size = key("attention.key_length") or (embedding // heads if embedding and heads
                                                else None)
    return ModelFile(blob, size, key("block_count"), key("attention.head_count_kv") or heads,
                     head_size, key("context_length"))


# GGUF (llama.cpp's ggml/docs/gguf.md): "GGUF", a version, the tensor and key counts, then
# typed key-value pairs. Only the scalars are kept; arrays (the tokenizer's) are skipped.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_KEYS = 65536
MAX_STRING = 1 << 20
MAX_ARRAY = 1 << 24


def _read(fh: IO[bytes], n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ValueError("the GGUF header ends early")
    return data


def _string(fh: IO[bytes]) -> str:
    (n,) = struct.unpack("<Q", _read(fh, 8))
    if n > MAX_STRING:
        raise ValueError("a GGUF string past 1 MiB")
    return _read(fh, n).decode("utf-8", "replace")


def _value(fh: IO[bytes], kind: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(fh, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        inner, count = struct.unpack("<IQ", _read(fh, 12))
        if count > MAX_ARRAY or inner == _ARRAY:
            raise ValueError("a GGUF array too long or nested")
        if inner in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[inner]) * count, 1)
        elif inner == _STRING:
            for _ in range(count):
                (n,) = struct.unpack("<Q", _read(fh, 8))
                if n > MAX_STRING:
                    raise ValueError("a GGUF string past 1 MiB")
                fh.seek(n, 1)
        else:
            raise ValueError(f"GGUF array of unknown type {inner}")
        return None
    raise ValueError(f"GGUF value of unknown type {kind}")


def gguf_header(fh: IO[bytes]) -> dict[str, Any]:
    """The scalar key-values of a GGUF file's header (bounded: hostile files raise
    ValueError)."""
    if _read(fh, 4) != b"GGUF":
        raise ValueError("not a GGUF file")
    version, _tensors, keys = struct.unpack("<IQQ", _read(fh, 20))
    if version < 2 or keys > MAX_KEYS:
        raise ValueError(f"GGUF version {version} with {keys} keys")
    header: dict[str, Any] = {}
    for _ in range(keys):
        key = _string(fh)
        (kind,) = struct.unpack("<I", _read(fh, 4))
        value = _value(fh, kind)
        if value is not None:
            header[key] = value
    return header
