"""Ollama's concurrency sized from the host, by the deployment notes' rules
(docs/field-notes.md).

One ``OLLAMA_NUM_PARALLEL`` per 4 CPU cores — but no more slots than fit in the GPU's memory:
each slot holds a whole context of KV cache in VRAM beside the model's weights (advise's
arithmetic: ``(VRAM x 0.9 - weights - 1 GiB) / (KV bytes per token x context)``, the
cache's element size as Ollama applies it). And one ``OLLAMA_MAX_LOADED_MODELS`` per 64 GiB
of RAM. Each at least 1. A value the operator set (in the engine's ``environment`` or in a
tier's) is never overridden. Pure functions of the engine's config and the host's facts,
so ``render``, the daemon and status all derive the same values, and say which bound won.

The values an engine was started with (a ``Tuning``) stay its values while it runs: the host's
facts can change under a running engine (its model's first pull makes the VRAM bound
known), and a new value is no reason to restart an engine that serves. It applies at the
engine's next start, whatever starts it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_supervisor.config import EngineConfig
from llm_supervisor.host.gpu import (
    COMFORT_SHARE,
    DEFAULT_CONTEXT,
    GIB,
    OVERHEAD,
    ModelFile,
    kv_cache_type,
)

CORES_PER_PARALLEL = 4
RAM_PER_LOADED_MODEL = 64 * GIB
# MemTotal is the installed RAM less what firmware and the kernel keep (2-4 %): a 128 GiB
# host shows about 125 GiB. Counting per 64 GiB of MemTotal / 0.95 gives 2 there, not 1.
MEMTOTAL_SHARE = 0.95

DERIVED_KEYS = ("OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS")


@dataclass(frozen=True)
class Fit:
    """How many slots the GPU's memory holds for this engine's model."""

    slots: int
    vram: int
    weights: int
    per_slot: int          # bytes of KV cache for one slot's context
    context: int
    kv_type: str
    where: str = ""        # whose VRAM: the engine's own cards, and who shares them
    fits: bool = True      # one slot fits at all (``slots`` is never below 1)

    def says(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return (f"{self.slots} slot(s) of {self.context} tokens ({self.kv_type} KV cache,"
                f" {self.per_slot / GIB:.2f} GiB each) fit in {self.vram / GIB:.1f} GiB of VRAM"
                f"{where} beside the model's {self.weights / GIB:.2f} GiB")


def fit(engine: EngineConfig, vram: int | None, model: ModelFile | None, where: str = ""
        ) -> Fit | None:
    """The VRAM bound, when the card's memory and the model's shape are known."""
    env = dict(engine.environment)
    per_token = model.kv_bytes_per_token(kv_cache_type(env)[0]) if model else None
    if not vram or model is None or not per_token:
        return None
    try:
        context = int(env.get("OLLAMA_CONTEXT_LENGTH") or DEFAULT_CONTEXT)
    except ValueError:
        context = DEFAULT_CONTEXT
    per_slot = round(per_token * max(1, context))
    room = vram * (1 - COMFORT_SHARE) - model.weights - OVERHEAD
    return Fit(max(1, int(room // per_slot)), vram, model.weights, per_slot, context,
               kv_cache_type(env)[0], where, room >= per_slot)


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


@dataclass(frozen=True)
class Tuning:
    """The derived variables one start of an engine used, and the line saying why."""

    environment: dict[str, str] = field(default_factory=dict)
    why: str = ""

    def kept_for(self, engine: EngineConfig, fresh: Tuning) -> Tuning:
        """These kept values where they still apply (an ollama engine's keys the operator has
        not set since); a key that applies now and was not kept (the operator unset it) takes
        its ``fresh`` value."""
        if engine.kind != "ollama":
            return fresh
        taken = explicit_keys(engine)
        kept = {k: v for k, v in self.environment.items() if k not in taken}
        return Tuning({**fresh.environment, **kept}, self.why if kept else fresh.why)

    def to_dict(self) -> dict[str, Any]:
        return {"environment": dict(self.environment), "why": self.why}

    @classmethod
    def from_dict(cls, data: Any) -> Tuning | None:
        """A kept Tuning (``state.json``), or None when it is not one this daemon writes: its
        values go into a unit file, so nothing but the derived keys with small integer values
        and one line of printable text is taken."""
        if not isinstance(data, dict) or set(data) != {"environment", "why"}:
            return None
        environment, why = data["environment"], data["why"]
        if not (isinstance(environment, dict) and isinstance(why, str) and len(why) <= 1000
                and why.isprintable()):
            return None
        if not all(k in DERIVED_KEYS and isinstance(v, str) and VALUE.fullmatch(v)
                   for k, v in environment.items()):
            return None
        return cls(dict(environment), why)


VALUE = re.compile(r"[1-9][0-9]{0,5}")


def derived_environment(engine: EngineConfig, cpu_count: int | None,
                        mem_total: int | None, vram_fit: Fit | None = None) -> dict[str, str]:
    """What the host adds to an ollama engine's environment (empty for other kinds).

    For the status document's ``derived_environment`` field and for the rendered unit.
    """
    if engine.kind != "ollama":
        return {}
    slots = num_parallel(cpu_count)
    if vram_fit is not None:
        slots = min(slots, vram_fit.slots)
    values = {"OLLAMA_NUM_PARALLEL": str(slots),
              "OLLAMA_MAX_LOADED_MODELS": str(max_loaded_models(mem_total))}
    taken = explicit_keys(engine)
    return {k: v for k, v in values.items() if k not in taken}


def explain(cpu_count: int | None, mem_total: int | None, vram_fit: Fit | None = None) -> str:
    """One line saying where the derived values come from and which bound won (a comment in
    the unit, and status)."""
    cores = cpu_count if cpu_count else "unknown"
    ram = f"{mem_total / GIB:.1f} GiB" if mem_total else "unknown"
    by_cores = num_parallel(cpu_count)
    if vram_fit is None:
        slots = (f"OLLAMA_NUM_PARALLEL={by_cores}: one per {CORES_PER_PARALLEL} CPUs (the"
                 " VRAM bound unknown: no AMD card's memory or no model file to read)")
    elif vram_fit.slots < by_cores:
        slots = (f"OLLAMA_NUM_PARALLEL={vram_fit.slots}, the VRAM bound: {vram_fit.says()}"
                 f" (the CPUs would allow {by_cores})")
    else:
        slots = (f"OLLAMA_NUM_PARALLEL={by_cores}, the CPU bound: one per {CORES_PER_PARALLEL}"
                 f" CPUs ({vram_fit.says()})")
    return (f"derived from the host ({cores} CPUs, MemTotal {ram}): {slots}; one"
            " OLLAMA_MAX_LOADED_MODELS per 64 GiB of RAM; at least 1; set them in the"
            " engine's environment to override")


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



def slots(engine: EngineConfig, derived: Mapping[str, str]) -> int | None:
    """How many requests the engine serves at once, when its config says (or the values
    derived for it): Ollama's ``OLLAMA_NUM_PARALLEL``, llama-server's ``-np``/``--parallel``
    (or ``LLAMA_ARG_N_PARALLEL``); None when unknown (vLLM batches as it sees fit)."""
    env = {**derived, **engine.environment}
    if engine.kind == "ollama":
        value = env.get("OLLAMA_NUM_PARALLEL", "")
    elif engine.kind == "llama-server":
        words = shlex.split(engine.exec)
        flag = next((words[i + 1] for i, w in enumerate(words[:-1])
                     if w in ("-np", "--parallel")), None)
        value = flag or env.get("LLAMA_ARG_N_PARALLEL", "")
    else:
        return None
    return int(value) if value.isdigit() and int(value) > 0 else None
