"""The host view: which tiers this host has (probes, with their evidence), which devices each
llama-server build lists, and from those the tiers each engine may use and where it starts.

It records what changed as ``probe`` events (through the ``record`` callable it is given) and
holds no other state: the config it reads is passed in, the engine's own facts (its reboot
flag, the tiers its build cannot use) are read from the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llm_supervisor import policy
from llm_supervisor.config import Config
from llm_supervisor.host import devicelist, probes, tiers
from llm_supervisor.host.probes import ProbeResult

if TYPE_CHECKING:
    from llm_supervisor.engine import Engine

Record = Callable[..., Any]  # record(type, **fields): an event


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
        self.probes = await probes.probe_all(timeout=sup.probe_timeout, kfd=str(sup.kfd_path))
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

    def choices(self, config: Config, engine: Engine) -> list[tiers.TierChoice]:
        return tiers.choices(config, engine.cfg, self.probes,
                             reboot_required=engine.memory.reboot_required,
                             skipped={**self.device_skips.get(engine.name, {}),
                                      **engine.memory.skipped})

    def usable(self, config: Config, engine: Engine) -> list[str]:
        return [c.tier for c in self.choices(config, engine) if c.usable]

    def place(self, config: Config, engine: Engine) -> str | None:
        """The tier an engine should run on now (``policy.start_tier``)."""
        return policy.start_tier(engine.chain, self.usable(config, engine),
                                 pinned=engine.memory.pinned, current=engine.tier)
