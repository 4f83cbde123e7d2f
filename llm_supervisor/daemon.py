"""``llm-supervisord``: startup, the main loop, reload and shutdown.

Before it is built: ``Setup.read`` reads the config, state.json and the host's facts, so that
building the ``Supervisor`` reads nothing and leaves it whole (every attribute there).
Startup: connect to systemd, probe the host's tiers, reconcile the engines' units (written,
stale ones removed, one daemon-reload), adopt the engines that run as their units say, open
the control socket, then READY=1; then the others are (re)started at once, each showing as
starting until it is placed, its checks beginning once it is.
Reload: the config diffed (``llm_supervisor.diff``), planned (``llm_supervisor.reconcile``),
the plan's steps applied here in order.
Signal handlers only set events; the main loop acts on them. SIGTERM persists state and
exits 0: engines are separate units and keep serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import signal
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sdnotify
import structlog

from llm_supervisor import __version__
from llm_supervisor import reconcile as reload_plan  # not the method reconcile()
from llm_supervisor.actuator import SystemdActuator
from llm_supervisor.causes import Cause, Finding
from llm_supervisor.checks import diagnosis
from llm_supervisor.config import DEFAULT_CONFIG, Config, EngineConfig, load, split_listen
from llm_supervisor.control import handlers
from llm_supervisor.control.agent import AgentServer
from llm_supervisor.control.server import ControlServer, group_reader
from llm_supervisor.diff import RESTART_ONLY, ConfigDiff, diff
from llm_supervisor.engine import Engine
from llm_supervisor.errors import ConfigError, SupervisorError, UnitFileError
from llm_supervisor.host import tiers
from llm_supervisor.host.probes import ProbeResult
from llm_supervisor.host.tuning import Tuning
from llm_supervisor.host.view import HostView
from llm_supervisor.logsetup import configure
from llm_supervisor.records.disk import Disk
from llm_supervisor.records.history import EventLog
from llm_supervisor.records.memory import State, load_state
from llm_supervisor.records.metrics import Metrics, SupervisorView
from llm_supervisor.records.recorder import Recorder
from llm_supervisor.states import EngineState
from llm_supervisor.supervision import Supervision
from llm_supervisor.systemd import units
from llm_supervisor.systemd.dbus import BusSystemd
from llm_supervisor.systemd.journal import JournalReader, kernel_boot_id, oldest
from llm_supervisor.systemd.systemctl import Systemd, UnitStatus

log = structlog.get_logger("llm-supervisor")


class Notifier(Protocol):
    def notify(self, state: str) -> object: ...


def state_file(config: Config) -> Path:
    """Where the daemon's record is kept (``[supervisor] state_dir``)."""
    return config.supervisor.state_dir / "state.json"


@dataclass(frozen=True)
class Setup:
    """What the daemon reads before it is built (``read``), so that building it reads
    nothing: the config, its record (state.json), the host's facts, this boot's id as the
    kernel has it (the journal reader tells this boot's entries by it) and the CA store every
    engine's HTTP client shares."""

    config_path: Path
    config: Config
    state: State
    hostfacts: units.HostFacts
    tls: ssl.SSLContext
    boot_id: str

    @classmethod
    def read(cls, config_path: Path) -> Setup:
        """Read it all; a config that is not valid raises ``ConfigError``."""
        config = load(config_path)
        return cls(config_path, config, load_state(state_file(config)), units.HostFacts.read(),
                   ssl.create_default_context(), kernel_boot_id())


class Supervisor:
    """The daemon's state and its actuator for the engines, built whole from a ``Setup``
    without side effects; ``startup()`` connects, probes, reconciles and opens the socket."""

    def __init__(self, setup: Setup, *, systemd: Systemd | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config_path = setup.config_path
        self.config = setup.config  # the config in force: a reload replaces it
        self.state = setup.state
        self.state_path = state_file(setup.config)  # a reload cannot move it (RESTART_ONLY)
        self.static_facts = setup.hostfacts  # read once; the cards come from each probe
        self.tls = setup.tls
        self.systemd = systemd or BusSystemd()  # systemctl when D-Bus is away
        self.notifier: Notifier | None = notifier  # sd_notify, made by serve() by default
        self.hostview = HostView(self.event)
        self.config_error: list[str] | None = None
        self.started_at = time.time()
        self.reload_lock = asyncio.Lock()
        self.hup = asyncio.Event()
        self.disk = Disk()  # event fsyncs, state.json, history reads: off the event loop
        self.starting: asyncio.Task[None] | None = None  # placing engines after READY
        sup, history, state = self.config.supervisor, self.config.history, self.state
        cursor = state.journal_cursor or oldest(  # one reader takes the older cursors over
            [state.kernel_cursor, *(m.journal_cursor for m in state.engines.values())])
        self.journal = JournalReader(self.systemd, cursor=cursor, since=self.started_at,
                                     boot_id=setup.boot_id)
        self.events = EventLog(sup.state_dir / "events", segment_size=history.segment_size,
                               max_size=history.max_size,
                               spill=sup.socket.parent / "events-backlog.jsonl")
        self.recorder = Recorder(events=self.events, disk=self.disk, state=self.state,
                                 state_path=self.state_path,
                                 notify=self.notify, gauges=self._gauges,
                                 before_save=self._journal_cursor)
        self.recorder.textfile_dir = self.config.metrics.textfile_dir
        self.actuator = SystemdActuator(self.systemd, self.hostview, self.recorder,
                                        lambda: self.config, lambda: self.hostfacts)
        self.supervision = Supervision(state=self.state, actuator=self.actuator,
                                       recorder=self.recorder, journal=self.journal,
                                       systemd=self.systemd, tls=self.tls,
                                       config=lambda: self.config)
        self.engines = self.supervision.engines  # the same dict: what the API reads
        self.tasks = self.supervision.tasks
        self.control = ControlServer(handlers.routes(self), sup.socket, group=sup.socket_group,
                                     may_read=group_reader(sup.socket_group))
        self.agent: AgentServer | None = None  # the balancer's port, when [agent] enables it

    # ------------------------------------------------------------------ startup

    async def startup(self) -> None:
        sup = self.config.supervisor
        if self.state.note:
            log.warning("state file", note=self.state.note)
        await self.systemd.connect()
        self.systemd.on_change = self.supervision.unit_changed
        missing = self.hostfacts.missing_gpu_groups()
        if missing:
            log.warning("GPU groups missing on this host; left out of SupplementaryGroups",
                        groups=missing)
        await self.reprobe()
        boot = self.actuator.boot_id()
        for engine_cfg in self.config.engines:
            self.supervision.add(self.config, engine_cfg).expire_facts(boot)
        placing = await self.reconcile()
        await self.control.start()
        await self.open_agent()
        self.event("started", reason=f"llm-supervisord pid {os.getpid()}",
                           evidence={"config_files": list(self.config.files)})
        self.notify("READY=1")
        self.update_status()
        log.info("ready", engines=list(self.engines), socket=str(sup.socket),
                 starting=sorted(placing))
        for engine in self.engines.values():
            self.supervision.follow(engine)
            if engine.name not in placing:
                self.supervision.run(engine)
        self.starting = asyncio.create_task(self.supervision.place(placing, self.reload_lock),
                                            name="place")
        gc.freeze()  # what startup built lives as long as the daemon: full collections skip it

    async def open_agent(self) -> None:
        """The balancer's port as ``[agent]`` says (opened, moved or closed); a port it cannot
        listen on is said in the journal and the events, and never stops the daemon."""
        settings = self.config.agent
        if self.agent is not None:
            await self.agent.close()
            self.agent = None
        if not settings.enabled:
            return
        agent = AgentServer(split_listen(settings.listen), settings.allow,
                            lambda: self.recorder.views, lambda: self.config.agent.full_speed)
        try:
            await agent.start()
        except OSError as exc:
            log.error("the balancer's port cannot listen", listen=settings.listen,
                      error=str(exc))
            self.event("agent", to="failed", cause=Cause.CONFIG.value,
                       reason=f"[agent] cannot listen on {settings.listen}: {exc}")
            return
        self.agent = agent
        log.info("the balancer's port listens", listen=settings.listen,
                 allow=list(settings.allow))

    # ------------------------------------------------------------------ the host view

    @property
    def probes(self) -> dict[str, ProbeResult]:
        return self.hostview.probes

    @property
    def hostfacts(self) -> units.HostFacts:
        """What rendering knows of the host: read at start, with the cards of the last probe."""
        return dataclasses.replace(self.static_facts, cards=self.hostview.cards)

    async def reprobe(self, config: Config | None = None) -> None:
        await self.hostview.reprobe(config or self.config)

    def choices(self, engine: Engine) -> list[tiers.TierChoice]:
        return self.hostview.choices(self.config, engine.facts())

    def place(self, engine: Engine) -> str | None:
        return self.hostview.place(self.config, engine.facts())

    async def reconcile(self) -> dict[str, tuple[str, str]]:
        """Bring the units in line with the config (written, stale ones removed, one
        daemon-reload), adopt every engine that runs as its units say, and mark the others
        as starting. What is left to start, engine by engine (tier, why), for ``place``:
        nothing here waits for a start, so READY does not grow with the engines."""
        unit_dir = self.config.supervisor.unit_dir
        placed = {engine.name: self.place(engine) for engine in self.engines.values()}
        # an engine that runs keeps the derived values it was started with: a host fact
        # learnt since (its model's first pull) is no reason to restart it
        # (kept since its start, else as its unit file says; None: derived afresh)
        rendered = {name: units.render(self.config, self.engines[name].cfg, tier, self.hostfacts,
                                       self.engines[name].tuning() or units.unit_tuning(
                                           unit_dir, self.engines[name].cfg))
                    for name, tier in placed.items() if tier is not None}
        changed = units.write_files(unit_dir, units.files_of(rendered.values()))
        stale = units.managed_engines(unit_dir) - set(self.engines)
        for name in sorted(stale):
            await self.supervision.remove(name)
        if changed or stale:
            await self.daemon_reload()
        changed_files = {p.relative_to(unit_dir).as_posix() for p in changed}
        changed_engines = {name for name, r in rendered.items() if changed_files & set(r.files())}
        surveyed = await asyncio.gather(*(
            self._survey(engine, placed[engine.name], engine.name in changed_engines,
                         rendered[engine.name].tuning if engine.name in rendered else Tuning())
            for engine in self.engines.values()))
        self.save()
        return {engine.name: start for engine, start in
                zip(self.engines.values(), surveyed, strict=True) if start is not None}

    async def _survey(self, engine: Engine, tier: str | None, changed: bool,
                      tuning: Tuning) -> tuple[str, str] | None:
        """Adopt an engine that runs as its units say; else the tier to (re)start it on and
        why, the engine showing as starting until ``place`` has done it."""
        if tier is None and not engine.memory.stopped_by:  # a held engine stays held
            engine.memory.tier = None
            with engine.batch():
                await engine.fail(Finding(Cause.CONFIG, "no usable tier on this host: "
                                          + "; ".join(f"{c.tier}: {c.reason}"
                                                      for c in self.choices(engine))))
            return None
        try:
            status = await self.systemd.status(engine.cfg.unit, fresh=True)
        except SupervisorError as exc:
            log.error("systemd did not answer for an engine", engine=engine.name,
                      error=str(exc))
            status = UnitStatus(engine.cfg.unit)
        if status.need_daemon_reload:  # a switch died between writing and daemon-reload
            await self.daemon_reload()
            changed = True
        if engine.memory.stopped_by:
            # held stopped by the operator: nothing started (its units as the config says);
            # one that runs again was started by someone: its next check resumes it
            engine.adopt(running=status.running, tuning=tuning)
            log.info("engine held stopped", engine=engine.name, by=engine.memory.stopped_by,
                     running=status.running)
            return None
        assert tier is not None  # no tier and not held: failed above
        ran_on = diagnosis.process_tier(status.main_pid) if status.running else None
        if ran_on is not None and ran_on != tier:  # the process runs the old tier
            log.warning("finishing an interrupted switch", engine=engine.name,
                        running=ran_on, tier=tier)
            changed = True
        unchanged = not changed and tier == engine.tier
        if unchanged and (status.running or engine.state in (EngineState.FAILED,
                                                             EngineState.BLOCKED)):
            # running: carry on; failed or blocked: its retry schedule stands
            engine.adopt(running=status.running, tuning=tuning)
            log.info("adopted engine", engine=engine.name, tier=tier,
                     state=engine.state.value, pid=status.main_pid)
            return None
        skipped = [f"{c.tier}: {c.reason}" for c in self.choices(engine)
                   if not c.usable and engine.chain.index(c.tier) < engine.chain.index(tier)]
        why = f"starting on {tier}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
        engine.placing = why
        return tier, why

    # ------------------------------------------------------------------ the record

    async def daemon_reload(self) -> None:
        await self.actuator.daemon_reload()

    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        return self.recorder.event(type, **fields)

    def save(self) -> None:
        self.recorder.save()

    def _journal_cursor(self) -> None:
        """Before a save: the one journal reader's cursor replaces the older per-source ones."""
        if self.journal.cursor and self.journal.restarts:  # it took the old cursors over
            self.state.journal_cursor = self.journal.cursor  # one cursor for all sources
            self.state.kernel_cursor = None
            for memory in self.state.engines.values():
                memory.journal_cursor = None

    def _gauges(self) -> tuple[dict[str, bool], SupervisorView]:
        return ({t: p.present for t, p in self.probes.items()},
                SupervisorView(degraded=handlers.degraded(self) is not None,
                               events_dropped=self.events.dropped,
                               followers_dropped=self.events.lagging_dropped,
                               connections_refused=self.control.refused))

    @property
    def metrics(self) -> Metrics:
        return self.recorder.metrics

    @property
    def generation(self) -> int:
        return self.recorder.generation

    def metrics_text(self) -> bytes:
        self.supervision.show()
        return self.recorder.metrics_text()

    def write_metrics_textfile(self) -> None:
        self.supervision.show()
        self.recorder.textfile_dir = self.config.metrics.textfile_dir
        self.recorder.write_metrics_textfile()

    @property
    def state_error(self) -> str | None:
        """Why state.json could not be written last time (a full disk), or None."""
        return self.disk.state_error

    def notify(self, message: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(message)

    def update_status(self) -> None:
        self.supervision.show()
        self.recorder.update_status()

    # ------------------------------------------------------------------ main loop

    async def serve(self, shutdown_trigger: asyncio.Event | None = None) -> None:
        trigger = shutdown_trigger or asyncio.Event()
        if self.notifier is None:
            self.notifier = sdnotify.SystemdNotifier()
        # the notify socket is ours alone: the tools we run must not inherit it
        os.environ.pop("NOTIFY_SOCKET", None)
        loop = asyncio.get_running_loop()
        if shutdown_trigger is None:
            loop.add_signal_handler(signal.SIGTERM, trigger.set)
            loop.add_signal_handler(signal.SIGINT, trigger.set)
            loop.add_signal_handler(signal.SIGHUP, self.hup.set)
        await self.startup()
        self.supervision.follow_kernel()
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
            change = diff(old, new, {n: e.tier for n, e in self.engines.items()}, self.hostfacts)
            if change.needs_restart:  # keep what a reload cannot move; say so
                kept = {k: getattr(old.supervisor, k) for k in RESTART_ONLY}
                new = new.model_copy(update={
                    "supervisor": new.supervisor.model_copy(update=kept)})
            await self._apply(old, new, change)
            if new.agent != old.agent:
                await self.open_agent()
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
        """The reload's plan (``llm_supervisor.reconcile.plan``: from the engines' facts and
        the host's tiers as they are now), its steps applied in order, then the state saved."""
        steps = reload_plan.plan(
            old, new, change, {name: e.facts() for name, e in self.engines.items()},
            probes=self.probes, device_skips=self.hostview.device_skips,
            waiting={name for name, e in self.engines.items()
                     if e.state in (EngineState.FAILED, EngineState.BLOCKED)},
            held={name for name, e in self.engines.items() if e.memory.stopped_by})
        candidates = {e.name: e for e in new.engines}
        changed = False  # a unit file written or removed since the last daemon-reload
        for step in steps:
            changed = await self._apply_step(step, new, candidates, changed)
        self.save()

    async def _apply_step(self, step: reload_plan.Step, new: Config,
                          candidates: Mapping[str, EngineConfig], changed: bool) -> bool:
        """One step of a reload's plan; whether a unit file was written or removed since the
        last daemon-reload (``changed``: before this step)."""
        match step:
            case reload_plan.WriteUnits(tiers=placed):
                rendered = [units.render(new, candidates[name], tier, self.hostfacts)
                            for name, tier in placed]
                # raises UnitFileError before writing anything if a file is not ours
                written = units.write_files(new.supervisor.unit_dir, units.files_of(rendered))
                return changed or bool(written)
            case reload_plan.UseConfig():
                self.config = new
            case reload_plan.RemoveEngine(name=name):
                await self.supervision.remove(name)
                return True
            case reload_plan.ReloadSystemd():
                if changed:
                    await self.daemon_reload()
                return False
            case reload_plan.Configure(name=name):
                self.engines[name].configure(new, candidates[name])
            case reload_plan.AddEngine(name=name):  # it runs nothing until it is supervised
                self.supervision.add(new, candidates[name])
            case reload_plan.Supervise(name=name):
                self.supervision.supervise(self.engines[name])
            case reload_plan.FollowKernel():
                self.supervision.follow_kernel()
            case _:
                await self._move(step)
        return changed

    async def _move(self, step: reload_plan.StartOn | reload_plan.Fail | reload_plan.Replace
                    ) -> None:
        """Start, fail or move an engine as the reload's plan says. A changed engine's lock is
        held by ``_apply``, an added one runs nothing yet; an engine moved off a tier it may no
        longer use is taken under its lock, and left alone if it moved on its own meanwhile."""
        engine = self.engines[step.name]
        if isinstance(step, reload_plan.Replace):
            async with engine.lock:
                if engine.tier == step.leaving and engine.state not in (EngineState.FAILED,
                                                                        EngineState.BLOCKED):
                    with engine.batch():
                        if not engine.drain_first(step.tier, Cause.RELOAD, step.why):
                            await engine.start_on(step.tier, Cause.RELOAD, step.why)
            return
        with engine.batch():
            if isinstance(step, reload_plan.Fail):
                await engine.fail(Finding(Cause.CONFIG, step.why))
            elif not engine.drain_first(step.tier, Cause.RELOAD, step.why):  # a balancer
                await engine.start_on(step.tier, Cause.RELOAD, step.why)     # asks: later

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
                if self.events.backlog:  # events kept in memory while the disk was full:
                    # written where the appends run, in order with them, never beside them
                    self.disk.submit("write the event backlog", self.events.flush)
            except Exception as exc:  # the watchdog must outlive whatever breaks here
                log.exception("status refresh failed", error=str(exc))
            await asyncio.sleep(period)

    async def shutdown(self) -> None:
        self.notify("STOPPING=1")
        log.info("stopping; engines keep serving")
        await self.supervision.close(self.starting)
        await self.control.close()
        if self.agent is not None:
            await self.agent.close()
        self.save()
        self.event("stopped", reason="SIGTERM: state saved, engines left running")
        await self.disk.drain()
        self.disk.close()
        await self.supervision.close_clients()
        await self.systemd.close()


# systemd's exit statuses for a service that never got to run its program (systemd.exec(5))
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
    parser.add_argument("--version", action="version",
                        version=f"llm-supervisord {__version__}")
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
    try:
        asyncio.run(Supervisor(Setup.read(args.config)).serve())
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
