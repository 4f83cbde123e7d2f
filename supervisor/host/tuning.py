"""Ollama's concurrency sized from the host, by the deployment notes' rules.

One ``OLLAMA_NUM_PARALLEL`` per 4 CPU cores and one ``OLLAMA_MAX_LOADED_MODELS`` per 64 GiB
of RAM, each at least 1. A value the operator set (in the engine's ``environment`` or in a
tier's) is never overridden. Pure functions of the engine's config and the host's facts,
so ``render``, the daemon and status all derive the same values.
"""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.config import EngineConfig

CORES_PER_PARALLEL = 4
GIB = 1024**3
RAM_PER_LOADED_MODEL = 64 * GIB
# MemTotal is the installed RAM less what firmware and the kernel keep (2-4 %): a 128 GiB
# host shows about 125 GiB. Counting per 64 GiB of MemTotal / 0.95 gives 2 there, not 1.
MEMTOTAL_SHARE = 0.95

DERIVED_KEYS = ("OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS")


def num_parallel(cpu_count: int | None) -> int:
    return max(1, (cpu_count or 0) // CORES_PER_PARALLEL)


def max_loaded_models(mem_total: int | None) -> int:
    if not mem_total:
        return 1
    return max(1, int(mem_total / MEMTOTAL_SHARE // RAM_PER_LOADED_MODEL))


def explicit_keys(engine: EngineConfig) -> set[str]:
    """Variables the operator set for this engine, on any tier."""
    keys = set(engine.environment)
    for override in engine.tiers.values():
        keys.update(override.environment or {})
    return keys


def derived_environment(engine: EngineConfig, cpu_count: int | None,
                        mem_total: int | None) -> dict[str, str]:
    """What the host adds to an ollama engine's environment (empty for other kinds).

    For the status document's ``derived_environment`` field and for the rendered unit.
    """
    if engine.kind != "ollama":
        return {}
    values = {"OLLAMA_NUM_PARALLEL": str(num_parallel(cpu_count)),
              "OLLAMA_MAX_LOADED_MODELS": str(max_loaded_models(mem_total))}
    taken = explicit_keys(engine)
    return {k: v for k, v in values.items() if k not in taken}


def explain(cpu_count: int | None, mem_total: int | None) -> str:
    """One line saying where the derived values come from (a comment in the unit)."""
    cores = cpu_count if cpu_count else "unknown"
    ram = f"{mem_total / GIB:.1f} GiB" if mem_total else "unknown"
    return (f"derived from the host ({cores} CPUs, MemTotal {ram}): one OLLAMA_NUM_PARALLEL per"
            f" {CORES_PER_PARALLEL} CPUs, one OLLAMA_MAX_LOADED_MODELS per 64 GiB of RAM,"
            " at least 1; set them in the engine's environment to override")


def read_mem_total(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal in bytes, or None when it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_cpu_count() -> int | None:
    return os.cpu_count()

