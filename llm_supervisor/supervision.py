"""The engines under supervision: each one built with its own HTTP client and shown in the
record, its check loop running, its unit's journal lines routed to it (and the kernel's to
every engine they may concern), and each one let go when it leaves the config or the daemon
stops. The daemon decides when; this is how.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Callable

import httpx
import structlog

from llm_supervisor import pci
from llm_supervisor.causes import Cause
from llm_supervisor.checks import classify
from llm_supervisor.config import Config, EngineConfig
from llm_supervisor.engine import Actuator, Engine
from llm_supervisor.errors import SupervisorError
from llm_supervisor.records.memory import State
from llm_supervisor.records.recorder import Recorder
from llm_supervisor.systemd import units
from llm_supervisor.systemd.journal import JournalReader, Sink
from llm_supervisor.systemd.systemctl import Systemd
from llm_supervisor.tiers import A_GPU_TIER

log = structlog.get_logger("llm-supervisor")

# kernel lines without a card's address (older kernels): charged to the card an addressed line
# of the same reset names, BURST seconds before, or waiting HOLD seconds for one after
BURST = 10.0
HOLD = 2.0


class Supervision:
    def __init__(self, *, state: State, actuator: Actuator, recorder: Recorder,
                 journal: JournalReader, systemd: Systemd, tls: ssl.SSLContext,
                 config: Callable[[], Config]) -> None:
        self.state = state
        self.systemd = systemd
        self.actuator = actuator
        self.recorder = recorder
        self.journal = journal
        self.tls = tls
        self.config = config  # the config in force (a reload replaces it)
        self.engines: dict[str, Engine] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}  # each engine's loop; the journal's
        self.last_card: tuple[str, float] | None = None  # the last kernel line's card, when
        self.held: list[tuple[str, float | None]] = []   # kernel lines waiting for their card

    def add(self, config: Config, cfg: EngineConfig) -> Engine:
        """An engine, shown in the record at once; it runs nothing yet."""
        engine = Engine(config, cfg, self.state.engine(cfg.name), self.actuator, self.http())
        self.engines[cfg.name] = engine
        self.recorder.show(engine.view())
        return engine

    async def place(self, plan: dict[str, tuple[str, str]], lock: asyncio.Lock) -> None:
        """After READY: (re)start the engines ``reconcile`` left, all at once (systemd runs
        the starts as jobs of its own), each under its lock; each engine's checks begin once
        it is placed, so none judges a unit a switch left half-done. A reload waits (``lock``)."""
        async def one(engine: Engine, tier: str, why: str) -> None:
            try:
                async with engine.lock:
                    with engine.batch():
                        await engine.start_on(tier, Cause.START, why)
            except Exception as exc:  # one engine's trouble stops no other's supervision
                log.error("could not start engine; its checks will retry",
                          engine=engine.name, error=str(exc))
            finally:
                engine.placing = None
            self.run(engine)

        async with lock:
            await asyncio.gather(*(one(self.engines[name], tier, why)
                                   for name, (tier, why) in plan.items()
                                   if name in self.engines))
            self.recorder.save()

    def supervise(self, engine: Engine) -> None:
        """The engine's check loop, and its unit's lines routed to it by the journal reader."""
        self.follow(engine)
        self.run(engine)

    def follow(self, engine: Engine) -> None:
        self.journal.add_unit(engine.cfg.unit, self.engine_line(engine),
                              cursor=engine.memory.journal_cursor)

    def run(self, engine: Engine) -> None:
        self.tasks[engine.name] = asyncio.create_task(engine.run(), name=f"engine-{engine.name}")

    def unit_changed(self, unit: str) -> None:
        """systemd pushed a change of a unit's state: check its engine now."""
        for engine in self.engines.values():
            if engine.cfg.unit == unit:
                engine.wake.set()

    def show(self) -> None:
        """The engines' views as they are now, for the record's readers the daemon serves
        (a scrape, the watchdog's STATUS=); an engine's own check hands its view over."""
        for engine in self.engines.values():
            self.recorder.show(engine.view())

    async def remove(self, name: str) -> None:
        """Let an engine go (it left the config, or its units outlived it): its loop ends,
        its lines are no longer read, its client closes, it is gone from the record's views
        and its state; its unit is stopped and its files removed."""
        engine = self.engines.pop(name, None)
        if engine is not None:
            self.journal.remove_unit(engine.cfg.unit)
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if engine is not None:
            await engine.http.aclose()
        self.recorder.forget(name)
        unit = f"llm-{name}.service"
        try:
            await self.systemd.stop(unit)
        except SupervisorError as exc:
            log.warning("could not stop removed engine", engine=name, error=str(exc))
        removed = units.remove_engine(self.config().supervisor.unit_dir, name)
        self.recorder.event("removed", engine=name, reason="engine removed from the config",
                            evidence=[str(p) for p in removed])
        self.state.engines.pop(name, None)

    def http(self) -> httpx.AsyncClient:
        """An engine's own HTTP client: one pool per engine. One pool for all of them costs a
        scan of every engine's kept-alive connection at each request (httpcore), quadratic in
        the engines: 64 engines at a 1 s interval took half a core."""
        return httpx.AsyncClient(trust_env=False, transport=httpx.AsyncHTTPTransport(
            verify=self.tls, limits=httpx.Limits(max_connections=None,
                                                 max_keepalive_connections=None)))

    def follow_kernel(self) -> None:
        """The kernel's journal (``[logs] kernel_match``), read by the one journal reader."""
        self.journal.set_kernel(self.config().logs.kernel_match, self.kernel_line,
                                cursor=self.state.kernel_cursor)
        if "journal" not in self.tasks:
            self.tasks["journal"] = asyncio.create_task(self.journal.run(), name="journal")

    def engine_line(self, engine: Engine) -> Sink:
        """The engine's journal goes to its intake (``engine.intake``: one rule for the
        lines of this run, each line routed once)."""
        def sink(message: str, cursor: str, at: float | None, pid: int | None = None) -> None:
            rules = classify.rules_for(self.config().logs)[0]
            engine.intake.line(message, at, rules, engine.tier, engine.cfg, pid)
        return sink

    def kernel_line(self, message: str, cursor: str, at: float | None,
                    pid: int | None = None) -> None:
        """A kernel line concerns the engines on its card (amdgpu names it: ``amdgpu
        0000:43:00.0: GPU reset begin!``): an engine that names its cards (``gpus``) hears
        only of them; one that names none may use any card, and hears of every one.

        Older kernels print the ring timeout and "GPU Recovery Failed" without the address
        (``DRM_ERROR``), next to addressed lines of the same reset: such a line is charged
        to the card an addressed line named within ``BURST`` before it, or held up to
        ``HOLD`` for one that follows (the timeout comes first, "GPU reset begin!" right
        after); with none, it concerns every engine, as it always did."""
        rules = classify.rules_for(self.config().logs)[1]
        if classify.classify(rules, message, tier=A_GPU_TIER, kernel=True) is None:
            return  # nothing any engine would act on
        now = at if at is not None else time.time()
        card = pci.in_line(message)
        if card is not None:
            self.last_card = (card, now)
            held, self.held = self.held, []
            for line, when in held:  # the reset it belonged to names its card now
                self._kernel_to_engines(line, when, card)
        elif self.last_card and now - self.last_card[1] <= BURST:
            card = self.last_card[0]
        else:
            self.held.append((message, at))
            asyncio.get_running_loop().call_later(HOLD, self._release, message)
            return
        self._kernel_to_engines(message, at, card)

    def _release(self, message: str) -> None:
        """No addressed line came for a held one: it concerns every engine."""
        kept = [(line, when) for line, when in self.held if line is not message]
        if len(kept) != len(self.held):
            released = [(line, when) for line, when in self.held if line is message]
            self.held = kept
            for line, when in released:
                self._kernel_to_engines(line, when, None)

    def _kernel_to_engines(self, message: str, at: float | None, card: str | None) -> None:
        rules = classify.rules_for(self.config().logs)[1]
        for engine in self.engines.values():
            found = classify.classify(rules, message, tier=engine.tier, kernel=True)
            if found is None or found.finding is None:
                continue
            own = self.actuator.cards(engine.cfg)
            if card is not None and own is not None and card not in own:
                continue
            if card is not None and found.finding.facts.get("card") != card:
                found = dataclasses.replace(found, finding=dataclasses.replace(
                    found.finding, facts={**found.finding.facts, "card": card}))
            engine.intake.finding(found, at)

    async def close(self, starting: asyncio.Task[None] | None) -> None:
        """The daemon stops: every loop (and the placing of engines, when it still runs)
        ends; the engines keep serving. Their clients close."""
        tasks = [*([starting] if starting else []), *self.tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close_clients(self) -> None:
        await asyncio.gather(*(engine.http.aclose() for engine in self.engines.values()),
                             return_exceptions=True)
