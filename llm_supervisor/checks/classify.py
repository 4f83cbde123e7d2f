"""The log classifier: engine and kernel journal lines -> findings with the line as evidence.

Built-in patterns come from what Ollama, ROCm, rocBLAS, vLLM and amdgpu really print
(docs/field-notes.md); ``[logs]`` in the config adds more. Classification is pure; the journal
is read by ``journal.JournalReader``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog

from llm_supervisor import pci
from llm_supervisor.causes import Cause, Finding, Observation, precedence
from llm_supervisor.config import LogsSection
from llm_supervisor.tiers import GPU_TIERS

log = structlog.get_logger("llm-supervisor")

# config category ([logs] key) -> (cause, patterns). Engine lines about the GPU only matter
# on a GPU tier; the blocking ones (port, permission, flags) matter on every tier.
ENGINE_PATTERNS: dict[str, tuple[Cause, tuple[str, ...]]] = {
    "gpu_fault": (Cause.GPU_FAULT, (
        r"\bHIP error\b", r"\bhipError\w+", r"\bROCm error\b", r"\brocBLAS error\b",
        r"\bGPU Hang\b", r"HW Exception by GPU", r"\bhipErrorIllegalAddress\b",
        r"vk::DeviceLostError|ErrorDeviceLost", r"\bCUDA error\b",
    )),
    "discovery": (Cause.DISCOVERY, (
        r"failure during (?:llama-server )?GPU discovery",
        r"no compatible GPUs were discovered", r"amdgpu is not supported",
        r"invalid device: (?:ROCm|Vulkan|CUDA)\d*",
    )),
    "placement": (Cause.PLACEMENT, ()),  # Ollama's library=cpu is read as data (devices)
    "model_missing": (Cause.MODEL_MISSING, (
        r"failed to open GGUF file",  # llama-server's -m names no file
    )),
    "oom": (Cause.OOM, (
        r"\bout of memory\b", r"hipErrorOutOfMemory", r"\bOutOfMemoryError\b",
        r"failed to allocate .* buffer",
    )),
    "port_in_use": (Cause.PORT_IN_USE, (
        r"(?i)address already in use", r"\[Errno 98\]", r"couldn't bind HTTP server socket",
    )),
    "permission": (Cause.PERMISSION, (
        r"(?:mkdir|open|stat|chmod|chown) \S+: permission denied",
        r"PermissionError: \[Errno 13\]",
    )),
    "config": (Cause.CONFIG, (
        r"unrecognized arguments:", r"Error: unknown (?:shorthand )?flag",
        r"error while handling (?:argument|environment variable)(?!.*invalid device)",
        r"error: invalid argument",
    )),
}
KERNEL_PATTERNS: dict[str, tuple[Cause, tuple[str, ...]]] = {
    "fatal_reset": (Cause.FATAL_RESET, (r"GPU Recovery Failed", r"VRAM is lost")),
    "reset": (Cause.RESET, (r"\bring \S+ timeout\b", r"GPU reset begin!",
                            r"device wedged, but recovered")),
}
BLOCKING = frozenset(c for c, _ in ENGINE_PATTERNS.values() if c.blocking)
FIXES = {
    Cause.PORT_IN_USE: "stop whatever holds the port, or give the engine another `listen`",
    Cause.PERMISSION: "let the engine's user write its `writable` paths (chown/chmod)",
    Cause.CONFIG: "fix the engine's `exec` flags (see the log line)",
    Cause.MODEL_MISSING: "give the engine a model file that exists (-m in `exec`)",
}


@dataclass(frozen=True)
class Rule:
    category: str
    cause: Cause
    pattern: re.Pattern[str]


def compile_rules(table: dict[str, tuple[Cause, tuple[str, ...]]],
                  extra: Mapping[str, Iterable[str]] | None = None) -> list[Rule]:
    rules = []
    for category, (cause, patterns) in table.items():
        for pattern in (*patterns, *((extra or {}).get(category) or ())):
            rules.append(Rule(category, cause, re.compile(pattern)))
    return sorted(rules, key=lambda r: precedence(r.cause))  # one line, one finding


@functools.lru_cache(maxsize=8)
def rules_for(logs: LogsSection) -> tuple[list[Rule], list[Rule]]:
    """(engine rules, kernel rules) for a ``[logs]`` section: compiled once per config."""
    return (compile_rules(ENGINE_PATTERNS, logs.extra()),
            compile_rules(KERNEL_PATTERNS, logs.extra()))


# Where engines echo what users sent: Ollama's debug lines carry the prompt and messages as
# slog fields (routes.go ``slog.Debug("chat request", "prompt", prompt)``); vLLM's request
# logging (``Received request cmpl-…: prompt: '…'``) and llama-server's verbose
# ``request: {…}`` carry the body. None of it is the engine's own words.
USER_FIELDS = frozenset({"prompt", "content", "messages", "input", "text", "system",
                         "template", "suffix", "images", "raw", "body", "request"})
_ECHOES = re.compile(r"Received request \S+: |\brequest: \{|\bprompt: '|"
                     r"\b(?:prompt|input|messages) ?= ?\[")


def engine_words(line: str) -> str:
    """The part of a log line that is the engine's own words: a slog line without the fields
    that hold user text; a request echo cut where the request begins."""
    if "msg=" in line and "=" in line:
        fields = logfmt(line)
        if "msg" in fields:
            return " ".join(f"{k}={v}" for k, v in fields.items() if k not in USER_FIELDS)
    echo = _ECHOES.search(line)
    return line[:echo.start()] if echo else line


def classify(rules: list[Rule], line: str, *, tier: str | None, kernel: bool = False
             ) -> Observation | None:
    """What one log line means for an engine on ``tier``, or None. Only the engine's own
    words are matched (``engine_words``); the kernel's lines are the kernel's."""
    words = line if kernel else engine_words(line)
    for rule in rules:
        if not rule.pattern.search(words):
            continue
        cause = rule.cause
        on_gpu = tier in GPU_TIERS
        if not kernel and not on_gpu and cause not in BLOCKING and cause != Cause.OOM:
            return None  # GPU trouble in the log of an engine that is not on a GPU
        if kernel and cause == Cause.RESET and not on_gpu:
            return None
        text = line.strip()
        card = pci.in_line(text) if kernel else None  # amdgpu's lines name their card
        return Observation(False, "log", Finding(cause, text[:200], fix=FIXES.get(cause, ""),
                                                 evidence=text[:2000],
                                                 facts={"card": card} if card else {}))
    return None


# --------------------------------------------------------------------------- devices

_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(line: str) -> dict[str, str]:
    """``key=value key="quoted value"`` pairs of a Go slog line (Ollama's log format)."""
    out = {}
    for key, value in _LOGFMT.findall(line):
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = value
    return out


@dataclass(frozen=True)
class Device:
    """A device the engine reports: one it computes on, or one it dropped at discovery."""

    used: bool            # True: "inference compute"; False: "dropping ... device"
    library: str          # ROCm | Vulkan | CUDA | cpu | ...
    name: str = ""        # the engine's id for it (ROCm0, Vulkan0, cpu)
    description: str = ""  # AMD Instinct MI50 (RADV VEGA20)
    compute: str = ""     # gfx906
    reason: str = ""      # why it was dropped (or, for the CPU, why it computes there)
    line: str = ""
    supersedes: bool = False  # the engine put nothing on the devices it reported before
    pci: str = ""         # its card's PCI address, when the engine says it

    def label(self) -> str:
        what = self.description or self.name or self.compute
        return f"{self.library}: {what}" if what and what != self.library else self.library

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("library", self.library), ("name", self.name),
                                  ("description", self.description),
                                  ("compute", self.compute)) if v}


# llama.cpp (llama-model-load, llama-model.cpp): the device a model is loaded onto, and how
# many of its layers went there ("offloaded 0/3 layers to GPU": none, it computes on the CPU).
# Newer builds add the device's id, its PCI address for ROCm and Vulkan:
# "using device ROCm0 (AMD Instinct MI50/MI60) (0000:43:00.0) - 32732 MiB free"
_LLAMA_DEVICE = re.compile(r"\busing device ((\w+?)\d+) \((.*)\)(?: - \d+ MiB free)?\s*$")
_LLAMA_DEVICE_ID = re.compile(rf" \(({pci.WRITTEN}|unknown id)\)(?= - \d+ MiB free)")
_LLAMA_OFFLOAD = re.compile(r"\boffloaded (\d+)/(\d+) layers to GPU\b")
# llama.cpp's OpenCL backend (ggml-opencl.cpp) takes Adreno, Qualcomm and Intel GPUs only:
# any other is dropped ("ggml_opencl: unsupported GPU '…'") and the model runs on the CPU
_OPENCL_UNSUPPORTED = re.compile(r"ggml_opencl: (?:unsupported GPU|device unsupported)"
                                 r"\W*'?([^']*)'?")


def parse_offload(line: str) -> tuple[int, int] | None:
    """``offloaded N/M layers to GPU`` (llama.cpp, also through Ollama >= 0.30's log)."""
    if "layers to GPU" not in line:
        return None
    match = _LLAMA_OFFLOAD.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_device(line: str) -> Device | None:
    """Ollama's ``msg="inference compute" ... library=...`` and ``msg="dropping ROCm device
    ..." gfx_target=...`` lines (discover/types.go, discover/amd.go), and llama-server's
    ``using device Vulkan0 (...)`` and ``offloaded N/M layers to GPU``, as data."""
    if "ggml_opencl:" in line and (match := _OPENCL_UNSUPPORTED.search(line)):
        return Device(False, "OpenCL", "", match.group(1).strip(), reason="llama.cpp's OpenCL"
                      " backend does not support this GPU", line=line.strip())
    if "using device" in line:
        device_id = _LLAMA_DEVICE_ID.search(line)
        bare = line[:device_id.start()] + line[device_id.end():] if device_id else line
        if match := _LLAMA_DEVICE.search(bare):
            card = pci.address(device_id.group(1)) if device_id else None
            return Device(True, match.group(2), match.group(1), match.group(3),
                          line=line.strip(), pci=card or "")
    if "layers to GPU" in line and (match := _LLAMA_OFFLOAD.search(line)):
        if int(match.group(1)) > 0:
            return None  # the device it named ("using device") holds them
        return Device(True, "cpu", "cpu", reason=f"offloaded 0/{match.group(2)} layers to"
                      " the GPU", line=line.strip(), supersedes=True)
    if "inference compute" in line and "library=" in line:
        kv = logfmt(line)
        if kv.get("msg") != "inference compute":
            return None
        return Device(True, kv.get("library", ""), kv.get("name") or kv.get("id", ""),
                      kv.get("description", ""), kv.get("compute", ""), line=line.strip(),
                      pci=pci.address(kv.get("pci_id", "")) or "")
    if "dropping" in line and "device" in line and "msg=" in line:
        kv = logfmt(line)
        match = re.match(r"dropping (\w+) device", kv.get("msg", ""))
        if not match:
            return None
        target = kv.get("gfx_target") or kv.get("compute", "")
        reason = kv.get("msg", "").split("—", 1)[-1].split(" - ", 1)[-1].strip()
        return Device(False, match.group(1), kv.get("device") or kv.get("id", ""),
                      kv.get("name", ""), target, reason=reason, line=line.strip())
    return None

