"""The engines' actuator on a real host: what an engine's decisions do through systemd, the
unit files and the host view, and where its record goes.

It implements ``llm_supervisor.engine.Actuator``: a switch is a transaction (files written, one
daemon-reload when needed, reset-failed, restart; on failure the files go back to the tier
the unit runs), a stop, the unit's state and the diagnosis of a unit that is down, whether a
blocking cause has gone, the usable tiers, the boot, and ``commit`` to the recorder. systemd
calls are serialised by one lock, so a reload and an engine's switch never interleave.

Every method takes plain data (the engine's settings, its tier, its ``EngineFacts`` and
``EngineView``), never the engine: nothing here calls back into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from llm_supervisor.causes import Cause, Finding
from llm_supervisor.checks import diagnosis
from llm_supervisor.config import Config, EngineConfig
from llm_supervisor.errors import SupervisorError
from llm_supervisor.host import ports
from llm_supervisor.host.tuning import Tuning
from llm_supervisor.host.view import EngineFacts, HostView
from llm_supervisor.records.metrics import EngineView
from llm_supervisor.records.recorder import Recorder
from llm_supervisor.systemd import units
from llm_supervisor.systemd.systemctl import Systemd, UnitStatus

log = structlog.get_logger("llm-supervisor")


class SystemdActuator:
    def __init__(self, systemd: Systemd, hostview: HostView, recorder: Recorder,
                 config: Callable[[], Config],
                 hostfacts: Callable[[], units.HostFacts]) -> None:
        self.systemd = systemd
        self.hostview = hostview
        self.recorder = recorder
        self.config = config  # the config in force (a reload replaces it)
        self.hostfacts = hostfacts
        self.lock = asyncio.Lock()

    async def daemon_reload(self) -> None:
        async with self.lock:
            await self.systemd.daemon_reload()

    async def switch(self, cfg: EngineConfig, tier: str, running: str | None,
                     kept: Tuning | None) -> Tuning:
        """A switch as a transaction: files written, systemd told (also when an earlier switch
        wrote them and died before the daemon-reload), then the restart. A start derives the
        host's values afresh: what it returns is what the engine now runs with. On failure
        the files go back to the tier the unit ``running`` with the values it ``kept``."""
        try:
            return await self._write_and_restart(cfg, tier)
        except Exception:
            if running is not None:  # the same tier too: its kept values go back
                await self._restore_files(cfg, running, kept)
            raise

    async def _write_and_restart(self, cfg: EngineConfig, tier: str) -> Tuning:
        config = self.config()
        rendered = units.render(config, cfg, tier, self.hostfacts())
        changed = units.write_files(config.supervisor.unit_dir, rendered.files())
        if changed or (await self.systemd.status(cfg.unit, fresh=True)).need_daemon_reload:
            await self.daemon_reload()
        async with self.lock:
            try:
                await self.systemd.reset_failed(cfg.unit)
            except SupervisorError:
                pass  # not failed: nothing to reset
            await self.systemd.restart(cfg.unit)
        return rendered.tuning

    async def _restore_files(self, cfg: EngineConfig, tier: str, kept: Tuning | None) -> None:
        """A switch failed half-way: the unit's files go back to the tier it runs, so that
        the next start (systemd's own restart included) is on the tier we report."""
        try:
            config = self.config()
            rendered = units.render(config, cfg, tier, self.hostfacts(), kept)
            if units.write_files(config.supervisor.unit_dir, rendered.files()):
                await self.daemon_reload()
        except Exception as exc:  # best effort: the switch's own error is what is reported
            log.error("could not put the unit back", engine=cfg.name, tier=tier,
                      error=str(exc))

    async def stop(self, cfg: EngineConfig) -> None:
        async with self.lock:
            try:
                await self.systemd.stop(cfg.unit)
            except SupervisorError as exc:
                log.warning("could not stop engine", engine=cfg.name, error=str(exc))

    async def unit_status(self, cfg: EngineConfig) -> UnitStatus:
        return await self.systemd.status(cfg.unit)

    async def diagnose(self, cfg: EngineConfig, tier: str | None,
                       unit: UnitStatus) -> Finding | None:
        """A unit down or crash-looping: is it a cause no tier change can fix?"""
        return diagnosis.diagnose_unit(cfg, diagnosis.command_of(cfg, tier), unit,
                                       ports.holder(cfg.listen))

    async def cleared(self, cfg: EngineConfig, tier: str | None, cause: Cause) -> bool:
        holder = ports.holder(cfg.listen) if cause == Cause.PORT_IN_USE else None
        return diagnosis.cleared(cfg, tier, cause, holder)

    async def reprobe(self) -> None:
        await self.hostview.reprobe(self.config())

    def usable(self, facts: EngineFacts) -> list[str]:
        return self.hostview.usable(self.config(), facts)

    def cards(self, cfg: EngineConfig) -> tuple[str, ...] | None:
        placement = self.hostview.placement(cfg)
        return None if placement is None else placement.addresses

    def boot_id(self) -> str | None:
        try:
            return self.config().supervisor.boot_id_path.read_text().strip() or None
        except OSError:
            return None

    def observe_check(self, engine: str, check: str, seconds: float) -> None:
        self.recorder.metrics.observe_check(engine, check, seconds)

    def observe_failure(self, engine: str, cause: str) -> None:
        self.recorder.metrics.observe_failure(engine, cause)

    def commit(self, view: EngineView, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.recorder.commit(view, events)
