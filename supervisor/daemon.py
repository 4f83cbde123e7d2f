"""``llm-supervisord``: startup, the main loop, reload and shutdown.

Startup: load the config, probe the host's tiers, reconcile the engines' units (write,
one daemon-reload, start what is not running), open the control socket, then READY=1.
Signal handlers only set events; the main loop acts on them. SIGTERM persists state and
exits 0: engines are separate units and keep serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import os
import pwd
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import sdnotify
import structlog

from supervisor import (
    devicelist,
    handlers,
    logwatch,
    policy,
    ports,
    probes,
    progress,
    tiers,
    units,
)
from supervisor.causes import Cause, Finding
from supervisor.config import DEFAULT_CONFIG, Config, EngineConfig, load
from supervisor.control import ControlServer, group_reader
from supervisor.dbus import BusSystemd
from supervisor.diff import RESTART_ONLY, ConfigDiff, diff
from supervisor.disk import Disk
from supervisor.engine import Engine
from supervisor.errors import ConfigError, SupervisorError, UnitFileError
from supervisor.health import Observation
from supervisor.history import EventLog, utc
from supervisor.journal import JournalReader, Sink, oldest
from supervisor.logs import configure
from supervisor.metrics import EngineView, Metrics, SupervisorView
from supervisor.probes import ProbeResult
from supervisor.state import State, dumps_state, load_state
from supervisor.states import EngineState
from supervisor.systemd import Systemd, UnitStatus
from supervisor.timefmt import ago

log = structlog.get_logger("llm-supervisor")


class Supervisor:
    """The daemon's state and its actuator for the engines. No side effects until startup()."""

    def __init__(self, config_path: Path, *, systemd: Systemd | None = None) -> None:
        self.config_path = config_path
        self.systemd = systemd or BusSystemd()  # systemctl when D-Bus is away
        self.engines: dict[str, Engine] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.probes: dict[str, ProbeResult] = {}
        self.device_skips: dict[str, dict[str, str]] = {}  # engine -> tier -> why (its build)
        self.config_error: list[str] | None = None
        self.started_at = time.time()
        self.reload_lock = asyncio.Lock()
        self.systemd_lock = asyncio.Lock()
        self.hup = asyncio.Event()
        self.disk = Disk()  # event fsyncs, state.json, history reads: off the event loop
        self.generation = 0  # bumped by every event: see handlers.StatusCache

    # ------------------------------------------------------------------ startup

    async def startup(self) -> None:
        self.config: Config = load(self.config_path)
        sup = self.config.supervisor
        self.state_path = sup.state_dir / "state.json"
        self.state: State = load_state(self.state_path)
        if self.state.note:
            log.warning("state file", note=self.state.note)
        await self.systemd.connect()
        self.systemd.on_change = self._unit_changed
        self.journal = JournalReader(self.systemd, since=self.started_at, cursor=(
            self.state.journal_cursor or oldest([self.state.kernel_cursor, *(
                m.journal_cursor for m in self.state.engines.values())])))
        history = self.config.history
        self.events = EventLog(sup.state_dir / "events", segment_size=history.segment_size,
                               max_size=history.max_size,
                               spill=sup.socket.parent / "events-backlog.jsonl")
        self.metrics = Metrics()
        self.host = units.HostFacts.read()
        self.http = httpx.AsyncClient(trust_env=False)
        missing = self.host.missing_gpu_groups()
        if missing:
            log.warning("GPU groups missing on this host; left out of SupplementaryGroups",
                        groups=missing)
        await self.reprobe()
        boot = self.boot_id()
        for engine_cfg in self.config.engines:
            engine = Engine(self.config, engine_cfg, self.state.engine(engine_cfg.name), self,
                            self.http)
            self.engines[engine_cfg.name] = engine
            engine.expire_facts(boot)
        await self.reconcile()
        self.control = ControlServer(handlers.routes(self), sup.socket, group=sup.socket_group,
                                     may_read=group_reader(sup.socket_group))
        await self.control.start()
        self.event("started", reason=f"llm-supervisord pid {os.getpid()}",
                           evidence={"config_files": list(self.config.files)})
        self.notify("READY=1")
        self.update_status()
        log.info("ready", engines=list(self.engines), socket=str(sup.socket))

    async def reprobe(self, config: Config | None = None) -> None:
        """The host's tiers, then what each llama-server build lists (``config``: the one
        about to be applied, on reload)."""
        config = config or self.config
        sup = config.supervisor
        previous = self.probes
        self.probes = await probes.probe_all(timeout=sup.probe_timeout, kfd=str(sup.kfd_path))
        for tier, result in self.probes.items():
            old = previous.get(tier)
            if old is None or old.present != result.present or old.reason != result.reason:
                self.event("probe", to="present" if result.present else "absent",
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
                self.event("probe", engine=engine.name, to="devices",
                           reason="; ".join(f"{t}: {why}" for t, why in skipped.items())
                           or "every GPU tier's device is listed",
                           evidence=[listing.to_dict() for listing in listings])
        self.device_skips = found

    def choices(self, engine: Engine) -> list[tiers.TierChoice]:
        return tiers.choices(self.config, engine.cfg, self.probes,
                             reboot_required=engine.memory.reboot_required,
                             skipped={**self.device_skips.get(engine.name, {}),
                                      **engine.memory.skipped})

    def usable(self, engine: Engine) -> list[str]:
        return [c.tier for c in self.choices(engine) if c.usable]

    def place(self, engine: Engine) -> str | None:
        """The tier an engine should run on now: its pin, else its tier, else the best."""
        return policy.start_tier(engine.chain, self.usable(engine),
                                 pinned=engine.memory.pinned, current=engine.tier)

    async def reconcile(self) -> None:
        """Bring units in line with the config: write, one daemon-reload, start what's down."""
        unit_dir = self.config.supervisor.unit_dir
        placed = {engine.name: self.place(engine) for engine in self.engines.values()}
        rendered = {name: units.render(self.config, self.engines[name].cfg, tier, self.host)
                    for name, tier in placed.items() if tier is not None}
        changed = units.write_files(unit_dir, units.files_of(rendered.values()))
        stale = units.managed_engines(unit_dir) - set(self.engines)
        for name in sorted(stale):
            await self._remove_engine_units(name)
        if changed or stale:
            await self.daemon_reload()
        changed_files = {p.relative_to(unit_dir).as_posix() for p in changed}
        changed_engines = {name for name, r in rendered.items() if changed_files & set(r.files())}
        for engine in self.engines.values():
            tier = placed[engine.name]
            if tier is None:
                engine.memory.tier = None
                with engine.batch():
                    await engine.fail(Finding(Cause.CONFIG, "no usable tier on this host: "
                                              + "; ".join(f"{c.tier}: {c.reason}"
                                                          for c in self.choices(engine))))
                continue
            try:
                status = await self.systemd.status(engine.cfg.unit, fresh=True)
            except SupervisorError as exc:
                log.error("systemd did not answer for an engine", engine=engine.name,
                          error=str(exc))
                status = UnitStatus(engine.cfg.unit)
            if status.need_daemon_reload:  # a switch died between writing and daemon-reload
                await self.daemon_reload()
                changed_engines.add(engine.name)
            ran_on = process_tier(status.main_pid) if status.running else None
            if ran_on is not None and ran_on != tier:  # the process runs the old tier
                log.warning("finishing an interrupted switch", engine=engine.name,
                            running=ran_on, tier=tier)
                changed_engines.add(engine.name)
            unchanged = engine.name not in changed_engines and tier == engine.tier
            if unchanged and (status.running or engine.state in (EngineState.FAILED,
                                                                 EngineState.BLOCKED)):
                # running: carry on; failed or blocked: its retry schedule stands
                engine.adopt(running=status.running)
                log.info("adopted engine", engine=engine.name, tier=tier,
                         state=engine.state.value, pid=status.main_pid)
                continue
            skipped = [f"{c.tier}: {c.reason}" for c in self.choices(engine)
                       if not c.usable and engine.chain.index(c.tier) <
                       engine.chain.index(tier)]
            why = f"starting on {tier}" + (f" (skipped {'; '.join(skipped)})" if skipped
                                           else "")
            try:
                with engine.batch():
                    await engine.start_on(tier, Cause.START, why)
            except SupervisorError as exc:  # one engine's trouble stops no other's supervision
                log.error("could not start engine; its checks will retry", engine=engine.name,
                          error=str(exc))
        self.save()

    async def _remove_engine_units(self, name: str) -> None:
        unit = f"llm-{name}.service"
        try:
            await self.systemd.stop(unit)
        except SupervisorError as exc:
            log.warning("could not stop removed engine", engine=name, error=str(exc))
        removed = units.remove_engine(self.config.supervisor.unit_dir, name)
        self.event("removed", engine=name, reason="engine removed from the config",
                           evidence=[str(p) for p in removed])
        self.state.engines.pop(name, None)

    # ------------------------------------------------------------------ the actuator

    async def daemon_reload(self) -> None:
        async with self.systemd_lock:
            await self.systemd.daemon_reload()

    async def switch(self, engine: Engine, tier: str) -> None:
        """A switch as a transaction: files written, systemd told (also when an earlier switch
        wrote them and died before the daemon-reload), then the restart."""
        try:
            await self._write_and_restart(engine, tier)
        except Exception:
            if engine.tier is not None and engine.tier != tier:
                await self._restore_files(engine, engine.tier)
            raise

    async def _write_and_restart(self, engine: Engine, tier: str) -> None:
        rendered = units.render(self.config, engine.cfg, tier, self.host)
        changed = units.write_files(self.config.supervisor.unit_dir, rendered.files())
        if changed or (await self.systemd.status(engine.cfg.unit, fresh=True)).need_daemon_reload:
            await self.daemon_reload()
        async with self.systemd_lock:
            try:
                await self.systemd.reset_failed(engine.cfg.unit)
            except SupervisorError:
                pass  # not failed: nothing to reset
            await self.systemd.restart(engine.cfg.unit)

    async def _restore_files(self, engine: Engine, tier: str) -> None:
        """A switch failed half-way: the unit's files go back to the tier it runs, so that
        the next start (systemd's own restart included) is on the tier we report."""
        try:
            rendered = units.render(self.config, engine.cfg, tier, self.host)
            if units.write_files(self.config.supervisor.unit_dir, rendered.files()):
                await self.daemon_reload()
        except Exception as exc:  # best effort: the switch's own error is what is reported
            log.error("could not put the unit back", engine=engine.name, tier=tier,
                      error=str(exc))

    async def stop(self, engine: Engine) -> None:
        async with self.systemd_lock:
            try:
                await self.systemd.stop(engine.cfg.unit)
            except SupervisorError as exc:
                log.warning("could not stop engine", engine=engine.name, error=str(exc))

    async def unit_status(self, engine: Engine) -> UnitStatus:
        return await self.systemd.status(engine.cfg.unit)

    async def diagnose(self, engine: Engine, unit: UnitStatus) -> Finding | None:
        """A unit down or crash-looping: is it a cause no tier change can fix?"""
        command = tiers.tier_exec(engine.cfg, engine.tier or "") or engine.cfg.exec
        return diagnose_unit(engine.cfg, command, unit, ports.holder(engine.cfg.listen))

    async def cleared(self, engine: Engine, cause: Cause) -> bool:
        if cause == Cause.PORT_IN_USE:
            held = ports.holder(engine.cfg.listen)
            return held is None or held.unit == engine.cfg.unit
        if cause == Cause.EXEC_MISSING:
            command = tiers.tier_exec(engine.cfg, engine.tier or "") or engine.cfg.exec
            return program_of(command).is_file()
        if cause == Cause.PERMISSION:
            return users_exist(engine.cfg)
        if cause == Cause.MODEL_MISSING:
            command = tiers.tier_exec(engine.cfg, engine.tier or "") or engine.cfg.exec
            model = model_of(command)
            return model is not None and model.is_file()
        return False

    def boot_id(self) -> str | None:
        try:
            return self.config.supervisor.boot_id_path.read_text().strip() or None
        except OSError:
            return None

    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append to the history (queued for the disk thread, in order), and count it in the
        metrics."""
        self.generation += 1  # the cached status document is stale
        self.disk.submit("record event", self.events.append, type, **fields)
        event = {"type": type, "from": fields.get("from_"),
                 **{k: v for k, v in fields.items() if k != "from_"}}
        self.metrics.observe_event(event)
        return event

    def observe_check(self, engine: Engine, check: str, seconds: float) -> None:
        self.metrics.observe_check(engine.name, check, seconds)

    def metrics_text(self) -> bytes:
        control = getattr(self, "control", None)
        self.metrics.refresh([EngineView.of(e) for e in self.engines.values()],
                             {t: p.present for t, p in self.probes.items()},
                             SupervisorView(degraded=handlers.degraded(self) is not None,
                                            events_dropped=self.events.dropped,
                                            followers_dropped=self.events.lagging_dropped,
                                            connections_refused=control.refused
                                            if control else 0))
        return self.metrics.render()

    def write_metrics_textfile(self) -> None:
        directory = self.config.metrics.textfile_dir
        if directory is None:
            return
        self.metrics_text()
        self.disk.submit(f"write the metrics textfile in {directory}",
                         self.metrics.write_textfile, directory)

    def commit(self, engine: Engine, events: list[tuple[str, dict[str, Any]]]) -> None:
        """An engine's check, recorded once: its events in order, then one state save, one
        STATUS= and one metrics update."""
        for type, fields in events:
            try:
                self.event(type, engine=engine.name, **fields)
            except OSError as exc:  # a full disk must not stop a decision
                log.error("cannot record event", engine=engine.name, error=str(exc))
        self.save()
        self.update_status()
        self.write_metrics_textfile()

    def save(self) -> None:
        if getattr(self, "journal", None) is not None and self.journal.cursor and \
                self.journal.restarts:  # the reader took the old cursors over
            self.state.journal_cursor = self.journal.cursor  # one cursor for all sources
            self.state.kernel_cursor = None
            for memory in self.state.engines.values():
                memory.journal_cursor = None
        try:
            text = dumps_state(self.state)
        except (TypeError, ValueError) as exc:
            log.error("cannot encode the state", error=str(exc))
            return
        self.disk.write_state(self.state_path, text)  # a failure shows as state_error

    @property
    def state_error(self) -> str | None:
        """Why state.json could not be written last time (a full disk), or None."""
        disk = getattr(self, "disk", None)
        return disk.state_error if disk is not None else None

    # ------------------------------------------------------------------ sd_notify

    def notify(self, message: str) -> None:
        self.notifier.notify(message)

    def summary(self) -> str:
        return "; ".join(summary_of(e, time.time()) for e in self.engines.values()) or \
            ("no engines configured: edit /etc/llm-supervisor or run"
             " `llm-supervisorctl adopt ollama.service`")

    def update_status(self) -> None:
        # sdnotify encodes latin-1: keep the line plain
        self.notify("STATUS=" + self.summary().encode("latin-1", "replace").decode("latin-1"))

    # ------------------------------------------------------------------ main loop

    async def serve(self, shutdown_trigger: asyncio.Event | None = None) -> None:
        trigger = shutdown_trigger or asyncio.Event()
        self.notifier = sdnotify.SystemdNotifier()
        # the notify socket is ours alone: the tools we run must not inherit it
        os.environ.pop("NOTIFY_SOCKET", None)
        loop = asyncio.get_running_loop()
        if shutdown_trigger is None:
            loop.add_signal_handler(signal.SIGTERM, trigger.set)
            loop.add_signal_handler(signal.SIGINT, trigger.set)
            loop.add_signal_handler(signal.SIGHUP, self.hup.set)
        await self.startup()
        for engine in self.engines.values():
            self._supervise(engine)
        self._follow_kernel()
        helpers = [asyncio.create_task(self._watchdog()), asyncio.create_task(self._on_hup())]
        if self.config.supervisor.watch_config:
            helpers.append(asyncio.create_task(self._watch_config()))
        try:
            await trigger.wait()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.shutdown()

    def _supervise(self, engine: Engine) -> None:
        """The engine's check loop, and its unit's lines routed to it by the journal reader."""
        self.tasks[engine.name] = asyncio.create_task(engine.run(), name=f"engine-{engine.name}")
        self.journal.add_unit(engine.cfg.unit, self._engine_line(engine),
                              cursor=engine.memory.journal_cursor)

    def _unit_changed(self, unit: str) -> None:
        """systemd pushed a change of a unit's state: check its engine now."""
        for engine in self.engines.values():
            if engine.cfg.unit == unit:
                engine.wake.set()

    async def _unsupervise(self, name: str) -> None:
        engine = self.engines.get(name)
        if engine is not None:
            self.journal.remove_unit(engine.cfg.unit)
        tasks = [self.tasks.pop(key) for key in (name,) if key in self.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ reload

    async def _on_hup(self) -> None:
        while True:
            await self.hup.wait()
            self.hup.clear()
            await self.reload("SIGHUP")

    async def _watch_config(self) -> None:
        """Reload when a *.toml under the config directory changes (debounced)."""
        import watchfiles

        directory = self.config_path.parent
        while True:
            try:
                async for _ in watchfiles.awatch(
                        directory, debounce=500, step=100, recursive=True,
                        watch_filter=_config_change):
                    await self.reload("file change")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("config watcher failed; retrying", error=repr(exc))
            await asyncio.sleep(1)

    async def reload(self, door: str) -> tuple[bool, dict[str, Any]]:
        """One code path for SIGHUP, POST /v1/reload and file changes; one at a time."""
        async with self.reload_lock:
            self.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                return await self._reload(door)
            finally:
                self.notify("READY=1")
                self.update_status()

    async def _reload(self, door: str) -> tuple[bool, dict[str, Any]]:
        old = self.config
        try:
            new = load(self.config_path)
            await self.reprobe(new)  # host tiers are refreshed on every reload
            change = diff(old, new, {n: e.tier for n, e in self.engines.items()}, self.host)
            if change.needs_restart:  # keep what a reload cannot move; say so
                kept = {k: getattr(old.supervisor, k) for k in RESTART_ONLY}
                new = new.model_copy(update={
                    "supervisor": new.supervisor.model_copy(update=kept)})
            await self._apply(old, new, change)
        except asyncio.CancelledError:
            raise
        except (ConfigError, UnitFileError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            self.config_error = problems
            self.event("reload", to="rejected", cause=Cause.CONFIG.value,
                       reason=f"{door}: config rejected; the running config stays",
                       evidence=problems)
            log.error("reload rejected; the running config stays", door=door,
                      problems=problems)
            return False, {"error": "config rejected; the running config stays",
                           "detail": problems}
        except Exception as exc:  # systemd refusing a daemon-reload, a disk error...
            log.exception("reload failed", door=door, error=str(exc))
            problems = [f"reload failed: {type(exc).__name__}: {exc}"]
            self.config_error = problems
            self.event("reload", to="failed", cause=Cause.RELOAD.value,
                       reason=f"{door}: reload failed; engines keep running; fix the cause"
                       " and reload again", evidence=problems)
            return False, {"error": "reload failed", "detail": problems}
        self.config_error = None
        summary = change.to_dict()
        self.event("reload", to="applied", cause=Cause.RELOAD.value, reason=f"{door}: " + (
            "no change" if change.empty else ", ".join(
                f"{k} {', '.join(v)}" for k, v in summary.items() if v)), evidence=summary)
        log.info("reloaded", door=door, **summary)
        return True, {"ok": True, "diff": summary}

    async def _apply(self, old: Config, new: Config, change: ConfigDiff) -> None:
        """Hold the engines it changes (no decision of theirs between planning and applying),
        then write what changed (nothing at all if anything is wrong), then act on them."""
        async with contextlib.AsyncExitStack() as held:
            for name in sorted(change.changed):
                if name in self.engines:
                    await held.enter_async_context(self.engines[name].lock)
            await self._apply_held(old, new, change)

    async def _apply_held(self, old: Config, new: Config, change: ConfigDiff) -> None:
        candidates = {e.name: e for e in new.engines}
        plan: dict[str, tuple[EngineConfig, str | None]] = {}
        for name in (*change.added, *change.changed):
            running = self.engines.get(name)
            usable = tiers.usable(new, candidates[name], self.probes, reboot_required=(
                running.memory.reboot_required if running else False),
                skipped=self.device_skips.get(name))
            tier = policy.start_tier(new.chain_for(candidates[name]), usable,
                                     pinned=running.memory.pinned if running else None,
                                     current=running.tier if running else None)
            plan[name] = (candidates[name], tier)
        rendered = [units.render(new, cfg, tier, self.host)
                    for cfg, tier in plan.values() if tier is not None]
        # raises UnitFileError before writing anything if a file is not ours
        written = units.write_files(new.supervisor.unit_dir, units.files_of(rendered))
        self.config = new
        for name in change.removed:
            await self._unsupervise(name)
            self.engines.pop(name, None)
            await self._remove_engine_units(name)
        if written or change.removed:
            await self.daemon_reload()
        for engine in self.engines.values():
            engine.configure(new, candidates[engine.name])
        for name in change.added:
            self.engines[name] = Engine(new, candidates[name], self.state.engine(name), self,
                                        self.http)
        for name, (_, tier) in plan.items():  # changed ones are held; added ones run nothing
            engine = self.engines[name]
            with engine.batch():
                if tier is None:
                    await engine.fail(Finding(Cause.CONFIG, "no usable tier on this host"))
                elif name in change.added:
                    await engine.start_on(tier, Cause.RELOAD, f"added by reload: starting on"
                                          f" {tier}")
                else:
                    await engine.start_on(tier, Cause.RELOAD, f"config changed: restarting"
                                          f" on {tier}")
            if name in change.added:
                self._supervise(engine)
        # a retuned chain or availability may leave an engine on a tier it may not use
        for engine in self.engines.values():
            if engine.name in plan or engine.state in (EngineState.FAILED, EngineState.BLOCKED):
                continue
            tier = self.place(engine)
            if tier is not None and tier != engine.tier:
                async with engine.lock:
                    with engine.batch():
                        await engine.start_on(tier, Cause.RELOAD, f"config changed:"
                                              f" {engine.tier} is no longer usable")
        if old.logs.kernel_match != new.logs.kernel_match:
            self._follow_kernel()
        self.save()

    def _follow_kernel(self) -> None:
        """The kernel's journal (``[logs] kernel_match``), read by the one journal reader."""
        self.journal.set_kernel(self.config.logs.kernel_match, self._kernel_line,
                                cursor=self.state.kernel_cursor)
        if "journal" not in self.tasks:
            self.tasks["journal"] = asyncio.create_task(self.journal.run(), name="journal")

    def _engine_line(self, engine: Engine) -> Sink:
        def sink(message: str, cursor: str, realtime: int) -> None:
            if progress.completed_request(message):
                engine.completed(realtime)
                return
            port = progress.runner_port(message)
            if port is not None:
                engine.runner(port, realtime)
            device = logwatch.parse_device(message)
            if device is not None:
                engine.device(device, realtime)
                return
            rules = logwatch.rules_for(self.config.logs)[0]
            found = logwatch.classify(rules, message, tier=engine.tier)
            if found is not None and found.cause == Cause.PORT_IN_USE:  # who holds it?
                held = port_finding(engine.cfg, ports.holder(engine.cfg.listen), message)
                found = Observation(False, "log", held) if held else found
            if found is not None:
                engine.finding(found, realtime)
        return sink

    def _kernel_line(self, message: str, cursor: str, realtime: int) -> None:
        rules = logwatch.rules_for(self.config.logs)[1]
        for engine in self.engines.values():
            found = logwatch.classify(rules, message, tier=engine.tier, kernel=True)
            if found is not None:
                engine.finding(found, realtime)

    async def _watchdog(self) -> None:
        """WATCHDOG=1 at half WATCHDOG_USEC from the main loop; STATUS= kept current."""
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        period = min(usec / 2e6, 30.0) if usec > 0 else 30.0
        while True:
            if usec > 0:
                self.notify("WATCHDOG=1")
            try:
                self.update_status()
                self.write_metrics_textfile()
                if self.events.backlog:  # events kept in memory while the disk was full
                    self.events.flush()
            except Exception as exc:  # the watchdog must outlive whatever breaks here
                log.exception("status refresh failed", error=str(exc))
            await asyncio.sleep(period)

    async def shutdown(self) -> None:
        self.notify("STOPPING=1")
        log.info("stopping; engines keep serving")
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if hasattr(self, "control"):
            await self.control.close()
        if hasattr(self, "state"):
            self.save()
            self.event("stopped", reason="SIGTERM: state saved, engines left running")
        await self.disk.drain()
        self.disk.close()
        if hasattr(self, "http"):
            await self.http.aclose()
        await self.systemd.close()


# systemd's exit statuses for a service that never got to run its program (systemd.exec(5))
EXIT_STATUS = {200: "CHDIR", 203: "EXEC", 216: "GROUP", 217: "USER", 218: "CAPABILITIES",
               226: "NAMESPACE", 228: "SECCOMP", 233: "RUNTIME_DIRECTORY", 238: "STATE_DIRECTORY"}


def process_tier(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The tier a running engine was started on (``LLM_SUPERVISOR_TIER`` in its environment)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(tiers.TIER_VARIABLE.encode() + b"="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


def program_of(command: str) -> Path:
    words = shlex.split(command)
    return Path(words[0]) if words else Path("/")


def model_of(command: str) -> Path | None:
    """llama-server's model file: ``-m PATH`` / ``--model PATH`` / ``--model=PATH``."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word.startswith("--model="):
            return Path(word.split("=", 1)[1])
        if word in ("-m", "--model") and i + 1 < len(words):
            return Path(words[i + 1])
    return None


def users_exist(engine: EngineConfig) -> bool:
    try:
        pwd.getpwnam(engine.user)
        grp.getgrnam(engine.group)
    except KeyError:
        return False
    return True


def diagnose_unit(engine: EngineConfig, command: str, unit: UnitStatus,
                  holder: ports.Holder | None) -> Finding | None:
    """Why a unit failed, when no tier change can fix it; None for an ordinary crash."""
    status = unit.exec_main_status
    name = EXIT_STATUS.get(status, "")
    evidence = {"ExecMainStatus": status, "Result": unit.result, **unit.raw}
    program = program_of(command)
    if status == 203 or not program.is_file():
        if not program.is_file():
            return Finding(Cause.EXEC_MISSING, f"{program} does not exist",
                           fix=f"install the engine at {program}, or fix `exec`",
                           evidence=evidence, facts={"program": str(program)})
        return Finding(Cause.PERMISSION, f"{program} cannot be executed (exit status 203/EXEC)",
                       fix=f"chmod +x {program}, and keep it outside /home (ProtectHome=)",
                       evidence=evidence, facts={"program": str(program)})
    if status in (216, 217):
        what = "group" if status == 216 else "user"
        value = engine.group if status == 216 else engine.user
        return Finding(Cause.PERMISSION, f"the {what} {value!r} is missing (exit status"
                       f" {status}/{name})", fix=f"create it: `adduser --system --group"
                       f" {engine.user}`, or set the engine's user/group", evidence=evidence)
    if 200 <= status <= 245:
        return Finding(Cause.CONFIG, f"systemd could not set up the engine (exit status {status}"
                       f"/{name or '?'})", fix="`journalctl -u " + engine.unit + "` says why",
                       evidence=evidence)
    return port_finding(engine, holder, evidence)


def port_finding(engine: EngineConfig, holder: ports.Holder | None, evidence: Any
                 ) -> Finding | None:
    """The engine's port is held by another process: name it (PID and unit) and the fix."""
    if holder is None or holder.unit == engine.unit:
        return None
    fix = (f"systemctl disable --now {holder.unit}" if holder.unit and
           holder.unit.endswith(".service") else f"stop pid {holder.pid}") + \
        " (or `llm-supervisorctl adopt` it), or give the engine another `listen`"
    return Finding(Cause.PORT_IN_USE, f"{engine.listen} is held by {holder.describe()}",
                   fix=fix, evidence=evidence, facts={"holder": holder.to_dict()})


def summary_of(engine: Engine, now: float) -> str:
    """One engine in ``STATUS=``: ``main: healthy on vulkan (demoted from rocm 4m ago)``."""
    memory = engine.memory
    text = f"{engine.name}: {engine.state.value}"
    if engine.tier:
        text += f" on {engine.tier}"
    if memory.pinned:
        text += " (pinned)"
    elif memory.demoted_from and memory.demoted_from != engine.tier:
        when = utc(memory.demoted_at) if memory.demoted_at else None
        text += f" (demoted from {memory.demoted_from} {ago(when, now)})"
    cause = engine.cause
    if engine.state in (EngineState.BLOCKED, EngineState.FAILED,
                        EngineState.DEGRADED) and cause is not None:
        text += f": {cause.description}"
    return text


def _config_change(_: object, path: str) -> bool:
    """A *.toml changed, or conf.d itself appeared or went (its files may predate the watch)."""
    return path.endswith(".toml") or os.path.basename(path) == "conf.d"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-supervisord",
                                     description="Keeps local LLM engines serving.")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="main config file (default %(default)s; conf.d/ beside it)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, print the errors, exit 0 or 1")
    args = parser.parse_args(argv)
    if args.check:
        try:
            config = load(args.config)
        except ConfigError as exc:
            print("\n".join(exc.problems), file=sys.stderr)
            return 1
        print(f"{args.config}: ok ({len(config.engines)} engine(s))")
        return 0
    configure()
    supervisor = Supervisor(args.config)
    try:
        asyncio.run(supervisor.serve())
    except ConfigError as exc:
        log.error("invalid config; not starting", problems=exc.problems)
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    except SupervisorError as exc:
        log.error("cannot start", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
