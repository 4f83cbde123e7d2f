"""Reload, part two: the plan. Part one (``llm_supervisor.diff``) says what changed; ``plan``
turns that, with what the host has and each running engine's facts, into the steps that bring
the engines in line, in the order they must be taken. It is a pure function of plain data:
the daemon gathers the inputs, calls it and applies the steps (``Supervisor._apply_held``),
so what a reload does can be tested without an engine, systemd or a disk.

The order is the reload's contract:

- ``WriteUnits`` first: the files of every engine that (re)starts, on its new tier. A file
  that is not ours refuses the whole reload with nothing written and nothing else done.
- ``UseConfig``: the new config is the one in force from there on.
- ``RemoveEngine`` for each engine gone from the config, then ``ReloadSystemd`` (applied only
  when a file was written or an engine removed).
- ``Configure`` every engine kept, ``AddEngine`` the new ones.
- For each added or changed engine, ``StartOn`` the tier it may use (or ``Fail``: none), and
  ``Supervise`` an added one once it is started.
- ``Replace``: an engine the reload did not restart but left on a tier it may no longer use
  (a retuned chain, a tier made unavailable) moves to the tier it should be on.
- ``FollowKernel`` when ``[logs] kernel_match`` changed.

Where an engine may run is the one rule of ``llm_supervisor.host.view`` (``place``), read as
the engine will be once configured with the new settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import TypeAlias

from llm_supervisor.config import Config
from llm_supervisor.diff import ConfigDiff
from llm_supervisor.host.tiers import HostTier
from llm_supervisor.host.view import EngineFacts, place

NO_TIER = "no usable tier on this host"


@dataclass(frozen=True)
class WriteUnits:
    """Write the unit files of these engines for these tiers ((name, tier), in order)."""

    tiers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class UseConfig:
    """The new config is the one in force from here on."""


@dataclass(frozen=True)
class RemoveEngine:
    """Stop supervising the engine, stop its unit, remove its files and its record."""

    name: str


@dataclass(frozen=True)
class ReloadSystemd:
    """systemd re-reads the units, if a step before this one wrote a file or removed one."""


@dataclass(frozen=True)
class Configure:
    """The engine takes its new settings (``Engine.configure``: nothing restarts)."""

    name: str


@dataclass(frozen=True)
class AddEngine:
    """A new engine, with its record; its checks do not run yet (``Supervise``)."""

    name: str


@dataclass(frozen=True)
class StartOn:
    """(Re)start the engine on ``tier``."""

    name: str
    tier: str
    why: str


@dataclass(frozen=True)
class Fail:
    """The engine cannot start: it fails, for ``why``."""

    name: str
    why: str


@dataclass(frozen=True)
class Supervise:
    """The added engine's checks begin, and its unit's journal is read."""

    name: str


@dataclass(frozen=True)
class Replace:
    """The engine runs on ``leaving``, a tier it may no longer use: move it to ``tier`` (if it
    is still on ``leaving`` when the step is applied: it may have moved on its own)."""

    name: str
    tier: str
    leaving: str | None

    @property
    def why(self) -> str:
        return f"config changed: {self.leaving} is no longer usable"


@dataclass(frozen=True)
class FollowKernel:
    """Read the kernel's journal with the new ``[logs] kernel_match``."""


Step: TypeAlias = (WriteUnits | UseConfig | RemoveEngine | ReloadSystemd | Configure | AddEngine
                   | StartOn | Fail | Supervise | Replace | FollowKernel)


def configured(facts: EngineFacts | None, new: Config, name: str) -> EngineFacts:
    """The engine ``name`` as it will be once configured with ``new``: a new one knows
    nothing yet; one whose settings changed forgets the tiers it showed it cannot use
    (``Engine.configure``: another build or other flags are judged afresh)."""
    cfg = new.engine(name)
    if cfg is None:
        raise ValueError(f"{name}: not in the new config")
    if facts is None:
        return EngineFacts(name, cfg)
    return dataclasses.replace(facts, cfg=cfg,
                               skipped=facts.skipped if facts.cfg == cfg else {})


def plan(old: Config, new: Config, change: ConfigDiff, engines: Mapping[str, EngineFacts], *,
         probes: Mapping[str, HostTier], device_skips: Mapping[str, Mapping[str, str]],
         waiting: Set[str] = frozenset(), held: Set[str] = frozenset()) -> list[Step]:
    """The steps that take the engines from ``old`` to ``new`` (``change``: their diff).

    ``engines``: every engine running under ``old``, by name, in the daemon's order;
    ``probes`` and ``device_skips``: the host's tiers and, per engine, the tiers its build does
    not list (``HostView``), both for ``new``; ``waiting``: the engines failed or blocked,
    whose retry schedule stands (a reload moves none of them unless it restarts them);
    ``held``: the engines an operator stopped, which a reload neither starts nor moves
    (their units take the new settings; they start on them when the operator says)."""

    def where(name: str) -> str | None:
        return place(new, configured(engines.get(name), new, name), probes,
                     device_skips.get(name, {}))

    placed = {name: where(name) for name in (*change.added, *change.changed)}
    written = tuple((name, tier) for name, tier in placed.items() if tier is not None)
    steps: list[Step] = [WriteUnits(written)] if written else []
    steps.append(UseConfig())
    steps += [RemoveEngine(name) for name in change.removed]
    if written or change.removed:
        steps.append(ReloadSystemd())
    steps += [Configure(name) for name in engines if name not in change.removed]
    steps += [AddEngine(name) for name in change.added]
    steps += _starts({n: t for n, t in placed.items() if n not in held}, set(change.added))
    for name, facts in engines.items():
        if name in placed or name in change.removed or name in waiting or name in held:
            continue
        tier = where(name)
        if tier is not None and tier != facts.tier:
            steps.append(Replace(name, tier, facts.tier))
    if old.logs.kernel_match != new.logs.kernel_match:
        steps.append(FollowKernel())
    return steps


def _starts(placed: Mapping[str, str | None], added: Set[str]) -> list[Step]:
    """Each added or changed engine started on its tier (or failed: none), an added one then
    supervised."""
    steps: list[Step] = []
    for name, tier in placed.items():
        if tier is None:
            steps.append(Fail(name, NO_TIER))
        elif name in added:
            steps.append(StartOn(name, tier, f"added by reload: starting on {tier}"))
        else:
            steps.append(StartOn(name, tier, f"config changed: restarting on {tier}"))
        if name in added:
            steps.append(Supervise(name))
    return steps
