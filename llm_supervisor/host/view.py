"""The host view: which tiers this host has (probes, with their evidence), which devices each
llama-server build lists, and from those the tiers each engine may use and where it starts.

``choices`` is the one rule for the tiers an engine may use: the reload's plan
(``llm_supervisor.reconcile``) and the engine's own decisions (through ``HostView``) both read
it. It takes plain data: what it needs of an engine is an ``EngineFacts``, built by whoever
holds the engine, so this layer never imports the engine.

``HostView`` records what changed as ``probe`` events (through the ``record`` callable it is
given) and holds no other state: the config it reads is passed in, and so are the engine's
facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llm_supervisor import policy
from llm_supervisor.config import Config, EngineConfig
from llm_supervisor.host import devicelist, tiers
from llm_supervisor.host.probes import ProbeResult, probe_all

Record = Callable[..., Any]  # record(type, **fields): an event


@dataclass(frozen=True)
class EngineFacts:
    """What the tier rule reads of an engine: its settings, the tier it is on and the one an
    operator pinned, whether a failed GPU reset rules the GPU out until a reboot, and the tiers
    it showed it cannot use (``skipped``: tier -> why, e.g. its build dropped the device)."""

    name: str
    cfg: EngineConfig
    tier: str | None = None
    pinned: str | None = None
    reboot_required: bool = False
    skipped: Mapping[str, str] = field(default_factory=dict)


def choices(config: Config, engine: EngineFacts, host: Mapping[str, tiers.HostTier],
            device_skips: Mapping[str, str]) -> list[tiers.TierChoice]:
    """Every tier of the engine's chain, in order, with whether it may use it and why: what
    its kind runs and the host has (``tiers.choices``), save the GPU tiers while a reboot is
    required, the tiers its build does not list (``device_skips``) and those it showed it
    cannot use (its own ``skipped``, which wins: it is what the engine itself did)."""
    return tiers.choices(config, engine.cfg, host, reboot_required=engine.reboot_required,
                         skipped={**device_skips, **engine.skipped})


def usable(config: Config, engine: EngineFacts, host: Mapping[str, tiers.HostTier],
           device_skips: Mapping[str, str]) -> list[str]:
    """The tiers the engine may use, best first (``choices``)."""
    return [c.tier for c in choices(config, engine, host, device_skips) if c.usable]


def place(config: Config, engine: EngineFacts, host: Mapping[str, tiers.HostTier],
          device_skips: Mapping[str, str]) -> str | None:
    """The tier the engine should run on (``policy.start_tier``): its pin, else where it is,
    else the best it may use, each only while usable; None: it may use none."""
    return policy.start_tier(config.chain_for(engine.cfg),
                             usable(config, engine, host, device_skips),
                             pinned=engine.pinned, current=engine.tier)


class HostView:
    def __init__(self, record: Record) -> None:
        self.record = record
        self.probes: dict[str, ProbeResult] = {}
        self.device_skips: dict[str, dict[str, str]] = {}  # engine -> tier -> why (its build)

    async def reprobe(self, config: Config) -> None:
        """The host's tiers, then what each llama-server build lists (``config``: the one in
        force, or the one about to be applied on reload)."""
        sup = config.supervisor
        previous = self.probes
        self.probes = await probe_all(timeout=sup.probe_timeout, kfd=str(sup.kfd_path))
        for tier, result in self.probes.items():
            old = previous.get(tier)
            if old is None or old.present != result.present or old.reason != result.reason:
                self.record("probe", to="present" if result.present else "absent",
                            reason=f"{tier}: {result.reason}", evidence=result.to_dict())
        await self.probe_devices(config)

    async def probe_devices(self, config: Config) -> None:
        """``llama-server --list-devices`` per GPU tier the host has: a tier whose device this
        build does not list is skipped for that engine."""
        found: dict[str, dict[str, str]] = {}
        for engine in config.engines:
            if engine.kind != "llama-server":
                continue
            candidates = [t for t in config.chain_for(engine)
                          if tiers.kind_supports(engine, t)[0]
                          and tiers.host_has(config, t, self.probes)[0]]
            skipped, listings = await devicelist.skipped_tiers(
                engine, candidates, config.supervisor.probe_timeout)
            found[engine.name] = skipped
            if listings and skipped != self.device_skips.get(engine.name):
                self.record("probe", engine=engine.name, to="devices",
                            reason="; ".join(f"{t}: {why}" for t, why in skipped.items())
                            or "every GPU tier's device is listed",
                            evidence=[listing.to_dict() for listing in listings])
        self.device_skips = found

    def choices(self, config: Config, engine: EngineFacts) -> list[tiers.TierChoice]:
        return choices(config, engine, self.probes, self.device_skips.get(engine.name, {}))

    def usable(self, config: Config, engine: EngineFacts) -> list[str]:
        return usable(config, engine, self.probes, self.device_skips.get(engine.name, {}))

    def place(self, config: Config, engine: EngineFacts) -> str | None:
        """The tier an engine should run on now (``place``)."""
        return place(config, engine, self.probes, self.device_skips.get(engine.name, {}))
