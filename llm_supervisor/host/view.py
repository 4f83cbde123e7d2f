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
from pathlib import Path
from typing import Any

from llm_supervisor import policy
from llm_supervisor.config import Config, EngineConfig
from llm_supervisor.host import cards, devicelist, tiers
from llm_supervisor.host.probes import ProbeResult, probe_all
from llm_supervisor.tiers import GPU_TIERS

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
    def __init__(self, record: Record, drm: Path = Path("/sys/class/drm")) -> None:
        self.record = record
        self.drm = drm
        self.probes: dict[str, ProbeResult] = {}
        self.cards: tuple[cards.Card, ...] = ()  # the host's cards, by PCI address
        # engine -> tier -> why it cannot use the tier's devices here: its cards are not
        # all listed there, or its llama-server build does not list the device
        self.device_skips: dict[str, dict[str, str]] = {}
        self.listing_skips: dict[str, dict[str, str]] = {}  # of these, llama-server's own

    async def reprobe(self, config: Config) -> None:
        """The host's tiers and cards, then what each llama-server build lists (``config``:
        the one in force, or the one about to be applied on reload)."""
        sup = config.supervisor
        previous = self.probes
        self.probes = await probe_all(timeout=sup.probe_timeout, kfd=str(sup.kfd_path))
        for tier, result in self.probes.items():
            old = previous.get(tier)
            if old is None or old.present != result.present or old.reason != result.reason:
                self.record("probe", to="present" if result.present else "absent",
                            reason=f"{tier}: {result.reason}", evidence=result.to_dict())
        found = cards.of_host(self.probes, self.drm)
        if found != self.cards and (found or self.cards):
            self.record("probe", to="cards", reason=cards.summary(found),
                        evidence=[c.to_dict() for c in found])
            self._renumbered(config, found)
        self.cards = found
        await self.probe_devices(config)

    def _renumbered(self, config: Config, found: tuple[cards.Card, ...]) -> None:
        """An engine that names a card by number is on another card when one leaves or
        joins the bus: said, with both addresses (``doctor`` suggests the address)."""
        for engine in config.engines:
            if not any(g.isdigit() for g in engine.gpus) or not self.cards:
                continue
            was = cards.place(engine.gpus, self.cards).addresses
            now = cards.place(engine.gpus, found).addresses
            if was != now:
                self.record("probe", engine=engine.name, to="cards",
                            reason=f"gpus {list(engine.gpus)} names {', '.join(now) or 'no card'}"
                            f" now (was {', '.join(was)}): the host's cards changed; name them"
                            " by address to keep them")

    def placement(self, engine: EngineConfig) -> cards.Placement | None:
        """The engine's cards on this host; None when it names none (it may use them all)."""
        return cards.place(engine.gpus, self.cards) if engine.gpus else None

    def listed(self, engine: EngineConfig) -> dict[str, tuple[cards.Seen, ...]] | None:
        """How each tier numbers the engine's cards (``tiers.tier_environment``)."""
        placement = self.placement(engine)
        return None if placement is None else placement.listed()

    async def probe_devices(self, config: Config) -> None:
        """Per engine, the GPU tiers that do not list all its cards; then
        ``llama-server --list-devices`` per GPU tier left: a tier whose device this build
        does not list is skipped for that engine."""
        found: dict[str, dict[str, str]] = {}
        listed_by: dict[str, dict[str, str]] = {}
        for engine in config.engines:
            skipped = self.card_skips(config, engine)
            if engine.kind == "llama-server":
                candidates = [t for t in config.chain_for(engine)
                              if t not in skipped and tiers.kind_supports(engine, t)[0]
                              and tiers.host_has(config, t, self.probes)[0]]
                listed, listings = await devicelist.skipped_tiers(
                    engine, candidates, config.supervisor.probe_timeout, self.listed(engine))
                skipped.update(listed)
                listed_by[engine.name] = listed
                if listings and listed != self.listing_skips.get(engine.name):
                    self.record("probe", engine=engine.name, to="devices",
                                reason="; ".join(f"{t}: {why}" for t, why in listed.items())
                                or "every GPU tier's device is listed",
                                evidence=[listing.to_dict() for listing in listings])
            found[engine.name] = skipped
        self.device_skips, self.listing_skips = found, listed_by

    def card_skips(self, config: Config, engine: EngineConfig) -> dict[str, str]:
        """tier -> why, for the GPU tiers of the engine's chain that cannot take its cards
        (a tier the operator declared ``available = "always"`` still has to list them: the
        engine would land on another card)."""
        placement = self.placement(engine)
        if placement is None:
            return {}
        skipped = {}
        for tier in config.chain_for(engine):
            if tier in GPU_TIERS and tiers.kind_supports(engine, tier)[0] \
                    and (why := placement.on(tier)[1]):
                skipped[tier] = why
        return skipped

    def choices(self, config: Config, engine: EngineFacts) -> list[tiers.TierChoice]:
        return choices(config, engine, self.probes, self.device_skips.get(engine.name, {}))

    def usable(self, config: Config, engine: EngineFacts) -> list[str]:
        return usable(config, engine, self.probes, self.device_skips.get(engine.name, {}))

    def place(self, config: Config, engine: EngineFacts) -> str | None:
        """The tier an engine should run on now (``place``)."""
        return place(config, engine, self.probes, self.device_skips.get(engine.name, {}))
