"""The tiers an engine can run on, best first: the one place their names and order are written.

A tier is a way to compute on this host: ROCm, Vulkan and OpenCL on the GPU, the CPU last. The
order is the default fallback chain (an engine starts on the first usable tier and demotes down
it), the set is what a config may name and what the metrics label. Every other module takes the
names from here, so a tier added or reordered is written once; ``tests/test_tiers.py`` fails on
a second literal copy of them anywhere else in the package, and on a table keyed by tier (an
engine kind's environments, the probes' commands) that misses one.

It imports nothing of the package, and no pydantic: the config's schema validates against
``Tier``, and the pure decision (``decide``) reads ``GPU_TIERS`` without importing the schema.
"""

from __future__ import annotations

from typing import Literal, get_args

# the names, best first; the tuple below is read from this type, not written out again
Tier = Literal["rocm", "vulkan", "opencl", "cpu"]
TIERS: tuple[Tier, ...] = get_args(Tier)
CPU_TIER: Tier = "cpu"
# the tiers that compute on the GPU: a GPU fault or a pending reboot rules them out together
GPU_TIERS: frozenset[str] = frozenset(TIERS) - {CPU_TIER}
A_GPU_TIER: Tier = next(t for t in TIERS if t in GPU_TIERS)  # to ask: "on any GPU tier?"

assert TIERS[-1] == CPU_TIER, "the CPU is the last resort: every chain ends there by default"
