"""Reload, part one: a pure diff of two configs. Applying it is the daemon's job.

An engine is *changed* only when its effective unit changed: the rendered unit and drop-in
on its tier, comments aside (the header names the config files, which is no reason to
restart). Health settings, chains and tier availability are *retuned*: taken over without
a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llm_supervisor.config import Config
from llm_supervisor.systemd.units import HostFacts, render

RESTART_ONLY = ("socket", "socket_group", "state_dir", "unit_dir")  # [supervisor] keys


@dataclass(frozen=True)
class ConfigDiff:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retuned: tuple[str, ...] = ()       # engines whose health/chain settings changed
    settings: tuple[str, ...] = ()      # global sections that changed
    needs_restart: tuple[str, ...] = field(default=())  # [supervisor] keys a reload can't move

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.retuned
                    or self.settings)

    def to_dict(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "changed": list(self.changed),
                "removed": list(self.removed), "retuned": list(self.retuned),
                "settings": list(self.settings), "needs_restart": list(self.needs_restart)}


def _body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def diff(old: Config, new: Config, tiers: Mapping[str, str | None], host: HostFacts
         ) -> ConfigDiff:
    """What changed from ``old`` to ``new``, given each engine's current tier."""
    old_names = {e.name for e in old.engines}
    new_names = {e.name for e in new.engines}
    changed, retuned = [], []
    for engine in new.engines:
        if engine.name not in old_names:
            continue
        before = old.engine(engine.name)
        assert before is not None
        tier = tiers.get(engine.name) or new.chain_for(engine)[0]
        units_before = render(old, before, tier, host)
        # the values derived for it stay until its next start (a neighbour added on its card
        # shares the card from then on): no restart for them alone
        units_after = render(new, engine, tier, host, units_before.tuning)
        if (_body(units_before.unit_text) != _body(units_after.unit_text)
                or _body(units_before.dropin_text) != _body(units_after.dropin_text)
                or _body(units_before.env_text) != _body(units_after.env_text)):
            changed.append(engine.name)
        elif (old.health_for(before) != new.health_for(engine)
              or old.chain_for(before) != new.chain_for(engine) or before != engine):
            retuned.append(engine.name)
    settings = [name for name in ("health", "fallback", "tiers", "routing", "logs", "supervisor")
                if getattr(old, name) != getattr(new, name)]
    needs_restart = [key for key in RESTART_ONLY
                     if getattr(old.supervisor, key) != getattr(new.supervisor, key)]
    return ConfigDiff(
        added=tuple(e.name for e in new.engines if e.name not in old_names),
        changed=tuple(changed),
        removed=tuple(e.name for e in old.engines if e.name not in new_names),
        retuned=tuple(retuned),
        settings=tuple(settings),
        needs_restart=tuple(needs_restart),
    )
