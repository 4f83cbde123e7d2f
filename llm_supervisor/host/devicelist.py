"""Which GPU tiers a llama-server build can really use here: its own ``--list-devices``.

The host probes say whether the host has a ROCm or Vulkan device; whether *this build* of
llama-server has the backend for it is another matter (a CPU or Vulkan-only build lists no
ROCm0). Run with each tier's environment, the build prints::

    Available devices:
      Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, 2048 MiB free)

A tier whose device (``LLAMA_ARG_DEVICE`` of its drop-in) is not listed is skipped for that
engine, with the listing as evidence. Run at startup, on reload and before a promotion,
under the same hard timeout as the host probes.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_supervisor.config import EngineConfig
from llm_supervisor.errors import CommandError
from llm_supervisor.host.cards import Seen
from llm_supervisor.host.process import run
from llm_supervisor.host.tiers import DEVICE_VARIABLE, tier_environment, tier_exec

_DEVICE = re.compile(r"^\s+([A-Za-z]+\d+): (.*?)\s*$")
# what the probe passes on from the daemon's own environment
_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "XDG_RUNTIME_DIR")


@dataclass(frozen=True)
class Listing:
    """What one ``--list-devices`` run showed, for one tier."""

    tier: str
    wanted: tuple[str, ...]            # the devices the tier asks for (ROCm0, Vulkan0)
    devices: dict[str, str] = field(default_factory=dict)  # name -> description
    error: str = ""                    # it did not run or print its list

    @property
    def missing(self) -> list[str]:
        return [d for d in self.wanted if d not in self.devices]

    @property
    def usable(self) -> bool:
        return not self.error and not self.missing

    def reason(self, program: str) -> str:
        if self.error:
            return f"`{program} --list-devices` failed: {self.error}"
        listed = ", ".join(self.devices) or "no device"
        return f"`{program} --list-devices` does not list {', '.join(self.missing)} (it lists:" \
               f" {listed})"

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "wanted": list(self.wanted), "devices": self.devices,
                "error": self.error}


def parse(stdout: str) -> dict[str, str] | None:
    """The devices listed after ``Available devices:``; None when that header is missing."""
    lines = stdout.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Available devices:")
    except StopIteration:
        return None
    devices = {}
    for line in lines[start + 1:]:
        match = _DEVICE.match(line)
        if match:
            devices[match.group(1)] = match.group(2)
    return devices


Cards = Mapping[str, Sequence[Seen]] | None  # the engine's own cards (``tier_environment``)


def probe_environment(engine: EngineConfig, tier: str, cards: Cards = None) -> dict[str, str]:
    """The engine's environment on ``tier``, as far as device discovery goes: the unit's
    variables without llama-server's own flags (``LLAMA_ARG_*``: a bad one would fail the
    listing for another reason)."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED}
    env.update(engine.environment)
    env.update(tier_environment(engine, tier, cards))
    return {k: v for k, v in env.items() if not k.startswith("LLAMA_ARG_")}


def wanted_devices(engine: EngineConfig, tier: str, cards: Cards = None) -> tuple[str, ...]:
    value = tier_environment(engine, tier, cards).get(DEVICE_VARIABLE, "")
    return tuple(d.strip() for d in value.split(",") if d.strip() and d.strip() != "none")


def program(engine: EngineConfig, tier: str) -> str:
    words = shlex.split(tier_exec(engine, tier) or engine.exec)
    return words[0] if words else ""


async def list_devices(engine: EngineConfig, tier: str, timeout: float, cards: Cards = None
                       ) -> Listing:
    wanted = wanted_devices(engine, tier, cards)
    try:
        done = await run([program(engine, tier), "--list-devices"], timeout=timeout,
                         env=probe_environment(engine, tier, cards))
    except CommandError as exc:
        return Listing(tier, wanted, error=str(exc))
    if done.timed_out:
        return Listing(tier, wanted, error=f"timed out after {timeout:g}s")
    devices = parse(done.stdout)
    if devices is None:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
        return Listing(tier, wanted, error=f"exit status {done.returncode}: {tail}")
    return Listing(tier, wanted, devices)


async def skipped_tiers(engine: EngineConfig, tiers: Iterable[str], timeout: float,
                        cards: Cards = None) -> tuple[dict[str, str], list[Listing]]:
    """tier -> why, for the given tiers of a llama-server engine whose device is not listed;
    and every listing, as evidence. Tiers that name no device (cpu: ``none``) pass."""
    skipped: dict[str, str] = {}
    listings = []
    for tier in tiers:
        if engine.kind != "llama-server" or not wanted_devices(engine, tier, cards):
            continue
        listing = await list_devices(engine, tier, timeout, cards)
        listings.append(listing)
        if not listing.usable:
            skipped[tier] = listing.reason(os.path.basename(program(engine, tier)))
    return skipped, listings
