"""Tiers: what each tier means for each engine kind, and which tiers an engine can use here.

The environment table is docs/contract.md §4. ``OLLAMA_GPU_DRIVER`` is our operator-visible
contract; Ollama itself does not read it, so each tier also sets the variables Ollama really
reads (docs/field-notes.md: ``OLLAMA_LLM_LIBRARY``, ``OLLAMA_VULKAN``,
``ROCR_VISIBLE_DEVICES``...). ROCm wins over Vulkan for the same card, so the Vulkan tier hides
the ROCm devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from llm_supervisor.config import Config, EngineConfig
from llm_supervisor.host.cards import Seen
from llm_supervisor.tiers import GPU_TIERS

TIER_ENV: dict[str, dict[str, dict[str, str] | None]] = {
    # kind -> tier -> environment (None: the kind cannot run this tier without an `exec`)
    "ollama": {
        "rocm": {"OLLAMA_GPU_DRIVER": "rocm"},
        "vulkan": {"OLLAMA_GPU_DRIVER": "vulkan", "OLLAMA_VULKAN": "1",
                   "OLLAMA_LLM_LIBRARY": "vulkan", "ROCR_VISIBLE_DEVICES": "-1"},
        "opencl": None,  # stock Ollama has no OpenCL backend
        "cpu": {"OLLAMA_GPU_DRIVER": "cpu", "OLLAMA_VULKAN": "0", "OLLAMA_LLM_LIBRARY": "cpu",
                "ROCR_VISIBLE_DEVICES": "-1", "HIP_VISIBLE_DEVICES": "-1",
                "GGML_VK_VISIBLE_DEVICES": "-1"},
    },
    "vllm": {
        "rocm": {},
        "vulkan": None,
        "opencl": None,
        "cpu": None,  # a CPU build of vLLM is a separate install: needs its own `exec`
    },
    # llama.cpp's common/arg.cpp reads every flag from LLAMA_ARG_* too (a flag on the command
    # line wins). Without -ngl this build offloads no layer: GPU tiers ask for all of them.
    # The CPU tier must not hide Vulkan with GGML_VK_VISIBLE_DEVICES=-1: that aborts it.
    "llama-server": {
        "rocm": {"LLAMA_ARG_DEVICE": "ROCm0", "LLAMA_ARG_N_GPU_LAYERS": "999"},
        "vulkan": {"LLAMA_ARG_DEVICE": "Vulkan0", "LLAMA_ARG_N_GPU_LAYERS": "999"},
        "opencl": None,  # its OpenCL backend takes Adreno/Intel only: needs an `exec`
        "cpu": {"LLAMA_ARG_DEVICE": "none", "LLAMA_ARG_N_GPU_LAYERS": "0"},
    },
}
DEVICE_VARIABLE = "LLAMA_ARG_DEVICE"  # llama-server's --device
# An engine's own cards (``gpus``), by each library's number for them: ROCm's by its unique
# id or index, Vulkan's by its enumeration index (ggml's and Ollama's), ROCm's OpenCL by
# ordinal. Ollama drives both GPU libraries at once: on the rocm tier its Vulkan is held to
# the same cards too (or hidden, when Vulkan does not list them all).
CARD_VARIABLES = {"rocm": "ROCR_VISIBLE_DEVICES", "vulkan": "GGML_VK_VISIBLE_DEVICES",
                  "opencl": "GPU_DEVICE_ORDINAL"}
LLAMA_DEVICES = {"rocm": "ROCm", "vulkan": "Vulkan"}  # llama-server's device names
# Whatever the kind, the drop-in names its tier, so `systemctl show` tells the truth.
TIER_VARIABLE = "LLM_SUPERVISOR_TIER"
OPENCL_ENV = {"ollama": {"OLLAMA_GPU_DRIVER": "opencl"}, "vllm": {}, "llama-server": {}}


class HostTier(Protocol):
    """What a host probe says of a tier (llm_supervisor.host.probes.ProbeResult fits)."""

    @property
    def present(self) -> bool: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class TierChoice:
    tier: str
    usable: bool
    reason: str  # why usable or not, for status


def tier_environment(engine: EngineConfig, tier: str,
                     cards: Mapping[str, Sequence[Seen]] | None = None) -> dict[str, str]:
    """The environment ``50-tier.conf`` sets for ``engine`` on ``tier``: the tier's
    defaults, the engine's own cards (``cards``: how each tier numbers them, the tiers that
    list them all; None for an engine that names none), then its overrides."""
    base = TIER_ENV[engine.kind][tier]
    if base is None:
        base = OPENCL_ENV[engine.kind] if tier == "opencl" else {}
        if engine.kind == "ollama":
            base = {**base, "OLLAMA_GPU_DRIVER": tier}
    override = engine.tiers.get(tier)  # type: ignore[call-overload]
    env = {TIER_VARIABLE: tier, **base}
    if cards is not None:
        env.update(card_environment(engine.kind, tier, cards))
    if override is not None:
        env.update(override.environment)
    return env


def card_environment(kind: str, tier: str, cards: Mapping[str, Sequence[Seen]]
                     ) -> dict[str, str]:
    """The variables that hold an engine on ``tier`` to its own cards (``CARD_VARIABLES``)."""
    own = cards.get(tier)
    if tier not in CARD_VARIABLES or not own:
        return {}
    if kind == "vllm" and tier == "rocm":
        # vLLM (and Ray under it, which refuses ROCR_VISIBLE_DEVICES) counts by HIP's numbers
        return {"HIP_VISIBLE_DEVICES": ",".join(str(seen.index) for seen in own)}
    env = {CARD_VARIABLES[tier]: ",".join(seen.selector() for seen in own)}
    if kind == "ollama" and tier == "rocm":  # (the vulkan tier hides ROCm altogether)
        vulkan = cards.get("vulkan")
        env[CARD_VARIABLES["vulkan"]] = ",".join(s.selector() for s in vulkan) if vulkan \
            else "-1"
    if kind == "llama-server" and tier in LLAMA_DEVICES:
        env[DEVICE_VARIABLE] = ",".join(f"{LLAMA_DEVICES[tier]}{i}" for i in range(len(own)))
    return env


def tier_exec(engine: EngineConfig, tier: str) -> str | None:
    """The per-tier ``exec`` override, if any."""
    override = engine.tiers.get(tier)  # type: ignore[call-overload]
    return override.exec if override is not None else None


def kind_supports(engine: EngineConfig, tier: str) -> tuple[bool, str]:
    if tier_exec(engine, tier):
        return True, f"[engine.tiers.{tier}].exec is set"
    if TIER_ENV[engine.kind][tier] is not None:
        return True, f"{engine.kind} supports {tier}"
    if engine.kind == "ollama" and tier == "opencl":
        return False, "stock Ollama has no OpenCL backend (set [engine.tiers.opencl].exec)"
    return False, f"{engine.kind} cannot run on {tier} without [engine.tiers.{tier}].exec"


def host_has(config: Config, tier: str, probes: Mapping[str, HostTier]) -> tuple[bool, str]:
    available = config.availability(tier)
    if available == "never":
        return False, f"disabled by [tiers.{tier}] available = \"never\""
    if available == "always":
        return True, f"[tiers.{tier}] available = \"always\""
    if tier == "cpu":
        return True, "the CPU is always there"
    probe = probes.get(tier)
    if probe is None:
        return False, "not probed yet"
    return probe.present, probe.reason


def choices(config: Config, engine: EngineConfig, probes: Mapping[str, HostTier], *,
            reboot_required: bool = False, skipped: Mapping[str, str] | None = None
            ) -> list[TierChoice]:
    """Every tier of the engine's chain, in order, with whether it is usable and why.

    ``skipped`` holds what this engine showed on a tier (e.g. its build dropped the ROCm
    device and ran on Vulkan): such a tier is not usable for it, whatever the host has."""
    result = []
    for tier in config.chain_for(engine):
        if reboot_required and tier in GPU_TIERS:
            result.append(TierChoice(tier, False, "a GPU reset failed: reboot required"))
            continue
        if skipped and tier in skipped:
            result.append(TierChoice(tier, False, skipped[tier]))
            continue
        supported, why_kind = kind_supports(engine, tier)
        if not supported:
            result.append(TierChoice(tier, False, why_kind))
            continue
        present, why_host = host_has(config, tier, probes)
        result.append(TierChoice(tier, present, why_host))
    return result


def usable(config: Config, engine: EngineConfig, probes: Mapping[str, HostTier], *,
           reboot_required: bool = False, skipped: Mapping[str, str] | None = None
           ) -> list[str]:
    return [c.tier for c in choices(config, engine, probes, reboot_required=reboot_required,
                                    skipped=skipped) if c.usable]
