"""Where the simulated engine runs: its listen address and the library it computes on.

Ollama's choice is rebuilt from the variables real Ollama reads (discover/runner.go,
ml/device.go, envconfig/config.go): every library folder found is tried unless
``OLLAMA_LLM_LIBRARY`` names another one or Vulkan is switched off; a device list naming none
of a library's devices (``-1``, or an index or id the host's cards do not have: see
``cards``) hides the library; ROCm wins over Vulkan for the same card; no GPU left means the
CPU.
``OLLAMA_GPU_DRIVER`` is not an Ollama variable: it is the supervisor's contract, honoured only
when none of the real ones is set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from llm_supervisor.simengine.cards import card_for, host_cards
from llm_supervisor.simengine.plan import LIBRARIES

PREFERRED_GPUS = ("rocm", "vulkan")  # what stock Ollama can drive on an AMD card, best first
OLLAMA_VARS = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES",
               "OLLAMA_VULKAN", "OLLAMA_LLM_LIBRARY")
DEFAULT_GPUS = "rocm,vulkan"


def _set(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def go_false(value: str) -> bool:
    """Go's strconv.ParseBool spelling of false (envconfig.Bool)."""
    return value in ("0", "f", "F", "false", "FALSE", "False")


def host_gpus(env: Mapping[str, str]) -> list[str]:
    """The GPU libraries of the simulated host (``SIMENGINE_GPUS``, default ``rocm,vulkan``)."""
    names = env.get("SIMENGINE_GPUS", DEFAULT_GPUS)
    return [n.strip().lower() for n in names.split(",") if n.strip()]


def choose_library(env: Mapping[str, str]) -> tuple[str, str]:
    """The library Ollama would use on the simulated host, and why, in one phrase; ValueError
    for an unknown ``SIMENGINE_CARDS``."""
    cards = host_cards(env)
    candidates = [lib for lib in PREFERRED_GPUS if lib in host_gpus(env)]
    if not any(_set(env, name) for name in OLLAMA_VARS):
        driver = _set(env, "OLLAMA_GPU_DRIVER").lower()
        if driver == "cpu":
            return "cpu", "OLLAMA_GPU_DRIVER=cpu"
        if driver in PREFERRED_GPUS:
            if driver in candidates:
                return driver, f"OLLAMA_GPU_DRIVER={driver}"
            return "cpu", f"OLLAMA_GPU_DRIVER={driver} but the host has no {driver} device"
    reasons = []
    if card_for(cards, "rocm", env) is None:
        candidates = [c for c in candidates if c != "rocm"]
        reasons.append("ROCm devices hidden")
    if card_for(cards, "vulkan", env) is None or go_false(_set(env, "OLLAMA_VULKAN")):
        candidates = [c for c in candidates if c != "vulkan"]
        reasons.append("Vulkan disabled")
    requested = _set(env, "OLLAMA_LLM_LIBRARY")
    if requested:
        candidates = [c for c in candidates if requested == c or requested.startswith(c + "_")]
        reasons.append(f"OLLAMA_LLM_LIBRARY={requested}")
    if not candidates:
        return "cpu", ", ".join(reasons) or "no GPU on the host"
    if len(candidates) > 1:
        reasons.append("ROCm preferred over Vulkan")
    return candidates[0], ", ".join(reasons) or f"only {candidates[0]} on the host"


def parse_listen(value: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``http://host:port``, a bare host or ``:port``, read like Ollama's
    envconfig.Host: no port means the scheme's (80 for http://, 443 for https://) or the
    default; no host means 127.0.0.1, an empty host before a port means every interface."""
    value = value.strip()
    scheme, sep, hostport = value.partition("://")
    if not sep:
        hostport = value
    else:
        default_port = {"http": 80, "https": 443}.get(scheme, default_port)
    hostport = hostport.split("/", 1)[0]
    host, port = "127.0.0.1", str(default_port)
    if hostport.startswith("[") and "]" in hostport:  # [::1]:11434 or [::1]
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else port
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    elif hostport:
        host = hostport
    try:
        ipaddress.ip_address(host) if ":" in host else None
        number = int(port)
    except ValueError as e:
        raise ValueError(f"invalid listen address {value!r}") from e
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid listen address {value!r}: port {number} out of range")
    return host, number


__all__ = ["LIBRARIES", "choose_library", "go_false", "host_gpus", "parse_listen"]
