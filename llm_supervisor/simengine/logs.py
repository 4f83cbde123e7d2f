"""What the simulated engines print on stderr, one flushed line at a time, like the real ones.

Ollama logs with Go's slog text handler (``time=… level=INFO source=file.go:N msg="…" k=v``)
plus gin's access lines; vLLM logs ``(APIServer pid=N) INFO MM-DD HH:MM:SS [file.py:N] …`` plus
uvicorn's access lines. Lines only the simulator prints carry ``source=simengine.py``. The
error lines are the ones the real stacks print: ggml's ROCm/Vulkan backends, the HSA runtime,
PyTorch's HIP errors, Go's runtime on a fatal signal.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TextIO

from llm_supervisor.simengine.cards import Card

LIBRARY_NAMES = {"rocm": "ROCm", "vulkan": "Vulkan", "opencl": "OpenCL"}
DRIVERS = {"rocm": "60342.13", "vulkan": "0.0", "opencl": "3.0"}


def gib(mib: int) -> str:
    """Memory as Ollama writes it (format.HumanBytes2)."""
    return f"{mib / 1024:.1f} GiB"


def inference_compute(library: str, card: Card, number: int) -> dict[str, str]:
    """The attributes of Ollama's "inference compute" line for ``card``, the ``number``-th
    device ``library`` sees (ROCm0, Vulkan1…): ROCm and OpenCL give it that number as its id,
    Vulkan RADV's deviceUUID. OpenCL is llama.cpp's backend on Mesa's rusticl."""
    label = LIBRARY_NAMES[library]
    description = {"rocm": card.name, "vulkan": card.radv, "opencl": f"{card.name} (rusticl)"}
    return dict(id=card.radv_uuid if library == "vulkan" else str(number),
                filter_id=str(number) if library == "rocm" else "", library=label,
                compute="0.0" if library == "vulkan" else card.gfx, name=f"{label}{number}",
                description=description[library], libdirs=f"ollama,{library}",
                driver=DRIVERS[library], pci_id=card.pci,
                type="iGPU" if card.integrated else "discrete",
                total=gib(card.vram_mib), available=gib(card.free_mib))


CPU_MEMORY = ("31.2 GiB", "29.8 GiB")

_GGML = "//ml/backend/ggml/ggml/src"
ERROR_LINES = {  # (kind, library) -> what the engine prints when its GPU goes wrong
    ("ollama", "rocm"): (
        "HW Exception by GPU node-1 (Agent handle: 0x55d0c8a2e6f0) reason :GPU Hang",
        "ROCm error: unspecified launch failure",
        f"  current device: 0, in function ggml_backend_cuda_synchronize at "
        f"{_GGML}/ggml-cuda/ggml-cuda.cu:2628",
        "  hipStreamSynchronize(cuda_ctx->stream())",
        f"{_GGML}/ggml-cuda/ggml-cuda.cu:94: ROCm error",
    ),
    ("ollama", "vulkan"): (
        "terminate called after throwing an instance of 'vk::DeviceLostError'",
        "  what():  vk::Queue::submit: ErrorDeviceLost",
    ),
    ("ollama", "opencl"): (
        "ggml_opencl: clFinish(queue) error -36 (CL_INVALID_COMMAND_QUEUE) at "
        f"{_GGML}/ggml-opencl/ggml-opencl.cpp:2931",
    ),
    ("ollama", "cpu"): (
        "SIGSEGV: segmentation violation",
        "PC=0x7f3a2c1b4e80 m=5 sigcode=1 addr=0x0",
    ),
    ("vllm", "rocm"): (
        "RuntimeError: HIP error: an illegal memory access was encountered",
        "HIP kernel errors might be asynchronously reported at some other API call, "
        "so the stacktrace below might be incorrect.",
        "For debugging consider passing AMD_SERIALIZE_KERNEL=3",
        "Compile with `TORCH_USE_HIP_DSA` to enable device-side assertions.",
    ),
    ("vllm", "cpu"): ("RuntimeError: DNNL does not support bf16/f16 backward on the platform",),
}
ERROR_LINES[("vllm", "vulkan")] = ERROR_LINES[("vllm", "opencl")] = ERROR_LINES[("vllm", "rocm")]


def error_lines(kind: str, library: str, override: tuple[str, ...] | None) -> tuple[str, ...]:
    return override if override is not None else ERROR_LINES[(kind, library)]


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String(), the latency column of gin's access log (which truncates a
    latency over a minute to whole seconds: ``1m2s``)."""
    if seconds > 60:
        whole = int(seconds)
        hours, rest = divmod(whole, 3600)
        minutes, secs = divmod(rest, 60)
        return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"
    if seconds >= 1:
        return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
    for unit, scale in (("ms", 1e3), ("µs", 1e6)):
        if seconds * scale >= 1:
            return f"{seconds * scale:.6f}".rstrip("0").rstrip(".") + unit
    return f"{round(seconds * 1e9)}ns"


def slog_value(value: object) -> str:
    """A value as Go's slog text handler writes it: quoted when empty or it has spaces, = or "."""
    text = str(value)
    if not text or any(c.isspace() or c in '="' or not c.isprintable() for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class Log:
    """The engine's stderr. Thread-safe: request threads and the main thread both write."""

    def __init__(self, kind: str, stream: TextIO | None = None) -> None:
        self.kind = kind
        self.stream = stream or sys.stderr
        self.pid = os.getpid()
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def lines(self, texts: tuple[str, ...] | list[str], prefix: str = "") -> None:
        for text in texts:
            self.line(prefix + text)

    # Ollama
    def slog(self, level: str, source: str, msg: str, **attrs: object) -> None:
        now = datetime.now().astimezone().isoformat(timespec="milliseconds")
        now = now.replace("+00:00", "Z")
        pairs = "".join(f" {k}={slog_value(v)}" for k, v in attrs.items())
        self.line(f"time={now} level={level} source={source} msg={slog_value(msg)}{pairs}")

    def gin(self, status: int, seconds: float, client: str, method: str, path: str) -> None:
        now = datetime.now().strftime("%Y/%m/%d - %H:%M:%S")
        self.line(f'[GIN] {now} | {status:3d} | {go_duration(seconds):>13} | {client:>15} | '
                  f'{method:<7}  "{path}"')

    # vLLM
    def vllm(self, level: str, where: str, msg: str, proc: str = "APIServer") -> None:
        pid = self.pid if proc == "APIServer" else self.pid + 3
        now = datetime.now().strftime("%m-%d %H:%M:%S")
        self.line(f"({proc} pid={pid}) {level} {now} [{where}] {msg}")

    def uvicorn(self, msg: str) -> None:
        self.line(f"(APIServer pid={self.pid}) INFO:     {msg}")

    @property
    def engine_core(self) -> str:
        return f"(EngineCore_DP0 pid={self.pid + 3}) "

    def access(self, status: int, seconds: float, client: tuple[str, int], method: str,
               path: str, version: str) -> None:
        if self.kind == "ollama":
            self.gin(status, seconds, client[0], method, path)
        else:
            phrase = HTTPStatus(status).phrase
            self.uvicorn(f'{client[0]}:{client[1]} - "{method} {path} {version}" {status} {phrase}')


def utc_now() -> str:
    """A timestamp as Ollama writes created_at: RFC 3339 in UTC with a Z."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def rfc3339(epoch: float) -> str:
    """A wall time in local time as Go's JSON encoding writes it (``Z`` for UTC)."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat().replace("+00:00", "Z")
