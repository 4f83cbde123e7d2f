"""What an engine is, and the few ways it changes: its settings, its memory and counters, the
one state change (``transition``), its record (``record``, ``batch``: events leave through
the ``Outbox`` and reach the actuator with the engine's view, once per check), a (re)start
on a tier (``start_on``), giving up (``fail``), blocking (``block``).

Nothing here decides or observes: ``acts`` carries the decisions out with these, and the
``machine`` runs the loop. Side effects go through an ``Actuator`` (plain data in: the
engine's settings, facts and view, never the engine itself), so decisions are testable with a
fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import structlog

from llm_supervisor import policy
from llm_supervisor.causes import Cause, Finding, Observation
from llm_supervisor.checks.canary import Canary
from llm_supervisor.checks.speed import SpeedBook
from llm_supervisor.config import Config, EngineConfig, FallbackSection, HealthSection
from llm_supervisor.decide import Decision, Do, Situation
from llm_supervisor.engine.intake import Intake
from llm_supervisor.engine.outbox import Event, Outbox
from llm_supervisor.host import process
from llm_supervisor.host.tuning import Tuning, slots
from llm_supervisor.host.view import EngineFacts
from llm_supervisor.records.memory import EngineMemory
from llm_supervisor.records.metrics import EngineView
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.systemctl import UnitStatus
from llm_supervisor.timefmt import utc

log = structlog.get_logger("llm-supervisor")

# blocking causes seen while the engine runs: it keeps serving, a canary tells when it clears
WHILE_RUNNING = frozenset({Cause.MODEL_MISSING, Cause.AUTH})


class Actuator(Protocol):
    async def switch(self, cfg: EngineConfig, tier: str, running: str | None,
                     kept: Tuning | None) -> Tuning:
        """Write the engine's units for ``tier`` and (re)start it there; the derived values
        this start got (they stay the engine's while it runs). On failure its files go back
        to the tier it was ``running`` with the values it ``kept``."""

    async def stop(self, cfg: EngineConfig) -> None:
        """Stop the engine's unit (a blocked engine is not restarted in a loop)."""

    async def unit_status(self, cfg: EngineConfig) -> UnitStatus: ...

    async def diagnose(self, cfg: EngineConfig, tier: str | None,
                       unit: UnitStatus) -> Finding | None:
        """Why a unit that is down or restarting failed, when it is a cause no tier fixes."""

    async def cleared(self, cfg: EngineConfig, tier: str | None, cause: Cause) -> bool:
        """Whether a blocking cause is gone (the port is free, the program exists...)."""

    async def reprobe(self) -> None: ...

    def usable(self, facts: EngineFacts) -> list[str]: ...

    def cards(self, cfg: EngineConfig) -> tuple[str, ...] | None:
        """The PCI addresses of the engine's own cards on this host (None: it names none,
        and may use any)."""

    def boot_id(self) -> str | None: ...

    def observe_check(self, engine: str, check: str, seconds: float) -> None: ...

    def observe_failure(self, engine: str, cause: str) -> None:
        """A check that failed, by the cause its decision took (the metrics count them)."""

    def commit(self, view: EngineView, events: list[Event]) -> None:
        """The engine's view after a check, and the check's events in order: recorded, then
        the engine's memory persisted, STATUS= and the metrics updated once (best effort,
        never raises)."""


def reason_of(cause: Cause, detail: str = "", tier: str | None = None) -> str:
    """How a cause reads in status and the journal: ``"rocm: generation hung: no token…"``."""
    text = f"{cause.description}: {detail}" if detail else cause.description
    return f"{tier}: {text}" if tier else text


@dataclass
class Drain:
    """A planned switch (``decide.planned``) waiting for the engine's work to end: the
    balancer has been told to send it nothing new (weight 0) since ``since``; the switch goes
    ahead once nothing is in flight, or at ``until`` (``[agent] drain_timeout``)."""

    decision: Decision
    since: float
    until: float


class Core:
    def __init__(self, config: Config, engine: EngineConfig, memory: EngineMemory,
                 actuator: Actuator, http: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.memory = memory
        self.actuator = actuator
        self.http = http
        self.clock = clock
        self.wall = wall
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.ticks = 0  # checks done: a cached status document is rebuilt when it moves
        self.canary = Canary(http, self.wake, clock)
        # what its log said since this run began (its next check takes it)
        self.intake = Intake(clock, self.wake, self.canary.completed, lambda: self.tier)
        self.failures = 0                    # consecutive failed checks
        self.last_failure: Observation | None = None
        self.restarts_on_tier = 0
        self.healthy_at = clock()            # healthy since (the restart budget refills)
        self.started_at = clock()
        self.nrestarts_seen: int | None = None
        self.drain: Drain | None = None      # a planned switch waiting for its users to go
        self.main_pid = 0                    # the engine's main process, as systemd says
        self.replaced_pid = 0                # the process a start of ours replaces, while
        #                                      it may still be seen stopping
        self.held_pid = 0                    # its main process when the operator stopped it
        self.family: Callable[[int], frozenset[int]] = process.tree_pids  # a process, its own
        self.checks = 0
        self.last_check: dict[str, Any] | None = None
        self.pull_task: asyncio.Task[None] | None = None
        self.pull_progress: dict[str, Any] | None = None  # progress of a model pull, for status
        self.outbox = Outbox()  # the events of the check under way, committed at once
        # why a daemon start is (re)starting this engine, until its switch is done: it shows
        # as starting meanwhile, not as the state its record kept from before
        self.placing: str | None = None
        self.configure(config, engine)

    def configure(self, config: Config, engine: EngineConfig) -> None:
        """Take (new) settings; used at start and by reload, never restarts anything."""
        previous = getattr(self, "cfg", None)
        self.config = config
        self.cfg = engine
        self.checking: HealthSection = config.health_for(engine)
        self.chain = config.chain_for(engine)
        # what its speed was learned for: this model with these settings (checks.speed)
        self.speed_key = hashlib.sha256(engine.model_dump_json().encode()).hexdigest()[:16]
        self.intake.own(engine)
        if previous is not None and previous != engine:
            self.memory.skipped = {}  # another build or flags: judge its backend afresh
        if previous is not None and previous.gpus != engine.gpus and self.memory.reboot_card:
            # its failed card is no longer its own: the reboot was that card's
            self.memory.reboot_required, self.memory.reboot_card = False, None
            self.memory.reboot_evidence, self.memory.reboot_boot_id = "", None

    # ------------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def state(self) -> EngineState:
        return EngineState.STARTING if self.placing else EngineState(self.memory.state)

    @property
    def reason(self) -> str:
        return self.placing or self.memory.reason

    @property
    def tier(self) -> str | None:
        return self.memory.tier

    @property
    def fallback(self) -> FallbackSection:
        return self.config.fallback

    @property
    def cause(self) -> Cause | None:
        try:
            return Cause(self.memory.cause) if self.memory.cause else None
        except ValueError:
            return None

    @property
    def speedbook(self) -> SpeedBook:
        return SpeedBook(self.memory.speed, self.speed_key)

    def tuning(self) -> Tuning | None:
        """The derived values its unit runs with (kept since its start), if known."""
        return Tuning.from_dict(self.memory.tuning) if self.memory.tuning else None

    def facts(self) -> EngineFacts:
        """What the host's tier rule reads of it (``host.view.EngineFacts``), as a copy: the
        engine's record moves on, the facts do not."""
        memory = self.memory
        return EngineFacts(self.name, self.cfg, self.tier, pinned=memory.pinned,
                           reboot_required=memory.reboot_required, skipped=dict(memory.skipped))

    def usable(self) -> list[str]:
        """The tiers of its chain it can use on this host now."""
        return self.actuator.usable(self.facts())

    def view(self) -> EngineView:
        """What the records read of this engine (the gauges, ``STATUS=``): plain data."""
        memory, check = self.memory, self.last_check or {}
        learned = self.speedbook.summary(self.tier) or {}
        cause = self.cause
        troubled = self.state in (EngineState.BLOCKED, EngineState.FAILED,
                                  EngineState.DEGRADED) and cause is not None
        return EngineView(
            name=self.name, state=self.state.value, tier=self.tier,
            reboot_required=bool(memory.reboot_required),
            tokens_per_second=check.get("tokens_per_second"),
            demoted=bool(memory.demoted_from) and memory.demoted_from != self.tier,
            busy=str(self.canary.busy or "").startswith("busy"),
            speed_reference=learned.get("reference"), pinned=memory.pinned,
            demoted_from=memory.demoted_from, demoted_at=memory.demoted_at,
            trouble=memory.stopped_by if self.state == EngineState.STOPPED else
            cause.description if troubled and cause is not None else None,
            best_reference=next((r for t in self.chain if (r := self.speedbook.reference(t))),
                                None),
            draining=self.drain is not None,
            slots=slots(self.cfg, kept.environment if (kept := self.tuning()) else {}))

    def promoting(self) -> bool:
        """A promotion in progress, or on probation (failing now counts as a failed one)."""
        if self.memory.promoted_from is None:
            return False
        until = self.memory.probation_until
        return until is None or self.wall() < until

    def situation(self, *, tiers: bool = True, loading: bool = False) -> Situation:
        """What the decision reads of this engine, as plain data. ``tiers=False`` leaves out
        the usable tiers (computed from the host view) where no decision needs them: a check
        where nothing failed, the way back up (it probes afresh)."""
        h = self.checking
        return Situation(
            state=self.state, tier=self.tier, chain=tuple(self.chain),
            usable=tuple(self.usable()) if tiers else (),
            pinned=self.memory.pinned,
            promoted_from=self.memory.promoted_from if self.promoting() else None,
            # the start-up grace; an engine that says it loads its model has the load's
            # deadline (learned from its own loads) instead, when that is longer
            in_grace=(self.state == EngineState.STARTING and self.clock() - self.started_at
                      < max(h.startup_grace, self.load_deadline() if loading else 0)),
            failures=self.failures, failures_needed=h.failures,
            restarts_on_tier=self.restarts_on_tier,
            restarts_per_tier=self.fallback.restarts_per_tier,
            generation_passed=self.canary.passed or not h.canary_every,
            reboot_required=self.memory.reboot_required,
            may_pull=(self.cfg.pull and self.cfg.kind == "ollama" and self.pull_progress is None))

    def load_deadline(self) -> float:
        """A load's deadline on this tier, learned from this engine's own loads."""
        return self.speedbook.load_deadline(self.tier, self.checking.load_deadline)

    # ------------------------------------------------------------------ the record

    def transition(self, to: EngineState, cause: Cause, detail: str = "", *,
                   evidence: Any = None, fix: str = "", tier_prefix: bool = False,
                   plain: bool = False) -> None:
        """The one way an engine changes state: one logged event, with its cause.

        The reason reads ``"<cause>: <detail>"`` (``"rocm: …"`` with ``tier_prefix``), or just
        the detail when it already says what happened (``plain``: "demoted from rocm: …")."""
        before = EngineState(self.memory.state)
        reason = detail if plain else reason_of(cause, detail,
                                                self.tier if tier_prefix else None)
        if before == to and self.memory.reason == reason:
            return
        self.memory.state = to.value
        self.memory.since = self.wall()
        self.memory.reason = reason
        self.memory.cause = cause.value
        self.memory.fix = fix
        self.memory.remember({"ts": utc(), "from": before.value, "to": to.value,
                              "tier": self.tier, "cause": cause.value, "reason": reason})
        level = {EngineState.FAILED: "error", EngineState.DEGRADED: "warning",
                 EngineState.BLOCKED: "error"}.get(to, "info")
        getattr(log, level)("engine state", engine=self.name, tier=self.tier, cause=cause.value,
                            reason=reason, **{"from": before.value, "to": to.value})
        self.record("state", from_=before.value, to=to.value, reason=reason,
                    cause=cause.value, evidence=evidence, tier=self.tier,
                    **({"fix": fix} if fix else {}))

    def record(self, type: str, **fields: Any) -> None:
        """An event of this engine: kept until the check (or action) under way ends, then
        committed with the others at once."""
        if self.outbox.put(type, fields):
            self.commit()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Record once: the events of what runs inside go to the actuator together, in order,
        with the engine's view, one state save, one STATUS= and one metrics update."""
        self.outbox.open()
        try:
            yield
        finally:
            if self.outbox.close():
                self.commit()

    def commit(self) -> None:
        """Hand the events kept so far on, with the engine's view as it is now (an operator's
        intent is recorded before its asker hears it is done, even inside a check)."""
        self.actuator.commit(self.view(), self.outbox.take())

    # ------------------------------------------------------------------ the few big moves

    def drain_first(self, target: str, cause: Cause, detail: str) -> bool:
        """A switch that may wait for the engine's users (the operator's, a reload's): with
        a balancer asking and the engine serving, its drain begins (True); else the caller
        switches at once (False)."""
        if not (self.config.agent.enabled and self.state == EngineState.HEALTHY):
            return False
        do = Do.RESTART if target == self.tier else Do.DEMOTE
        self.begin_drain(Decision(do, Finding(cause, detail), target))
        return True

    def begin_drain(self, d: Decision) -> None:
        """A planned switch, with a balancer asking (``[agent]``): it is told to send this
        engine nothing new (weight 0), and the switch waits for the work in flight to end
        (``Engine._draining``)."""
        agent, now = self.config.agent, self.clock()
        self.drain = Drain(d, now, now + agent.drain_timeout)
        assert d.finding is not None
        self.record("drain", to=d.target, tier=self.tier, cause=d.finding.cause.value,
                    reason=f"draining before {d.do.value} to {d.target}: {d.finding.text()};"
                           f" the switch waits for the requests in flight, at most"
                           f" {agent.drain_timeout:g}s", evidence=d.finding.evidence)
        log.info("draining", engine=self.name, tier=self.tier, to=d.target,
                 cause=d.finding.cause.value)

    def loading(self, phase: str) -> None:
        """A canary went out: the first one after a start loads the model, and says so."""
        if phase == "load" and self.cfg.model and self.state == EngineState.STARTING:
            self.transition(self.state, self.cause or Cause.START,  # why it (re)started
                            f"loading {self.cfg.model}", plain=True)

    def forget_checks(self) -> None:
        """A (re)start begins with a clean slate: no stale canary verdicts or devices."""
        self.canary.forget()
        self.memory.runner_port = None
        self.memory.offload = None
        self.failures = 0
        self.nrestarts_seen = None
        self.main_pid = 0  # a start's process is the next check's to see
        self.intake.forget()
        self.memory.backend = None

    async def start_on(self, tier: str, cause: Cause, detail: str = "", *,
                       evidence: Any = None, state: EngineState = EngineState.STARTING) -> None:
        """(Re)start on ``tier``: units rewritten, unit restarted, grace begins.

        A transaction in the record too: the tier and the events that announce it are
        recorded once the switch is done. A switch that fails half-way (a unit file, the
        daemon-reload, the restart) is an event of its own with its cause, the engine keeps
        the tier its unit runs (the actuator puts its files back), and the error goes on to
        the caller (a reload reports it; the engine's loop tries again at its next check)."""
        before = self.tier
        self.drain = None  # any start ends a drain (its own switch, or one that overtook it)
        # our restart is queued, not waited for: the next check may still see the process it
        # replaces, which is no one's new start
        self.replaced_pid = self.main_pid or self.replaced_pid
        replaced = self.family(self.replaced_pid)  # what they write is no line of the new run
        self.forget_checks()
        self.started_at = self.clock()
        self.intake.began(self.started_at, asked=True, replaced=replaced)  # its process: later
        try:
            tuning = await self.actuator.switch(self.cfg, tier, before, self.tuning())
        except Exception as exc:
            # no start made: the lines of the process that runs are the run's
            self.intake.began(self.started_at, replaced=frozenset())
            what = f"switching to {tier}" if before != tier else f"restarting on {tier}"
            log.error("switch failed", engine=self.name, tier=before, to=tier,
                      cause=cause.value, error=str(exc))
            self.record("switch", from_=before, to="failed", tier=before,
                        cause=cause.value, reason=f"{what} failed: {exc}"
                        f" ({detail or cause.description})",
                        evidence={"wanted": tier, "error": str(exc)})
            self.transition(EngineState.DEGRADED, cause, f"{what} failed: {exc}",
                            evidence=evidence, tier_prefix=True)
            raise
        placed = self.memory.tier  # another start may have placed it while this one switched
        self.memory.tier = tier
        self.memory.tuning = tuning.to_dict()
        if placed != tier:
            self.restarts_on_tier = 0
            self.record("tier", from_=before, to=tier, cause=cause.value,
                        reason=detail or f"starting on {tier}", evidence=evidence)
            if before is not None and policy.is_above(self.chain, before, tier):
                log.warning("engine demoted", engine=self.name, tier=tier, cause=cause.value,
                            reason=detail, **{"from": before})
        self.transition(state, cause, detail or f"starting on {tier}", evidence=evidence,
                        plain=True)

    async def fail(self, finding: Finding) -> None:
        """Every usable tier exhausted: stop the unit (systemd's restarts would fight the
        backoff) and retry from the bottom of the chain, waiting longer each time."""
        wait = self._next_retry(policy.retry_wait)
        self.memory.next_promotion_at = None
        self.transition(EngineState.FAILED, finding.cause,
                        f"every usable tier exhausted; last: {self.tier}: {finding.text()};"
                        f" retry {self.memory.retry_attempt} in {wait:.0f}s",
                        evidence=finding.evidence)
        self.forget_checks()
        await self.actuator.stop(self.cfg)

    def _next_retry(self, wait_rule: Callable[[int, float], float]) -> float:
        """One more retry, scheduled by ``wait_rule`` (its attempt, the shortest wait: two
        intervals); the wait. The one place the retry is counted and scheduled."""
        self.memory.retry_attempt += 1
        wait = wait_rule(self.memory.retry_attempt, self.checking.interval * 2)
        self.memory.retry_at = self.wall() + wait
        return wait

    def serves_while(self, cause: Cause) -> bool:
        """Whether the engine keeps running while blocked by ``cause`` (a wrong key, a model
        Ollama lacks); llama-server without its model file exits."""
        if cause == Cause.MODEL_MISSING and self.cfg.kind == "llama-server":
            return False
        return cause in WHILE_RUNNING

    async def block(self, finding: Finding) -> None:
        """No tier change can fix this: say so, with the fix, and retry with backoff."""
        self._next_retry(policy.blocked_wait)
        self.forget_checks()
        self.transition(EngineState.BLOCKED, finding.cause, finding.detail,
                        evidence=finding.evidence, fix=finding.fix)
        if not self.serves_while(finding.cause):
            await self.actuator.stop(self.cfg)  # not restarted in a loop meanwhile

    # ------------------------------------------------------------------ after a daemon start

    def adopt(self, running: bool, tuning: Tuning) -> None:
        """After a daemon (re)start: carry on with the persisted tier without restarting,
        with the derived values its unit holds."""
        self.memory.tuning = tuning.to_dict()
        self.nrestarts_seen = None
        if running and self.state in (EngineState.HEALTHY, EngineState.DEGRADED):
            self.started_at = self.clock() - self.checking.startup_grace  # no grace: it runs
            self.canary.passed = True  # it has been serving: its model is loaded
        else:
            self.started_at = self.clock()
        if self.state in (EngineState.FAILED, EngineState.BLOCKED) and \
                self.memory.retry_at is None:
            self.memory.retry_at = self.wall()  # a schedule lost with an old state: retry now

    def expire_facts(self, boot_id: str | None) -> None:
        """Facts that belong to a boot: a failed GPU reset asks for a reboot, until one."""
        if not self.memory.reboot_required or boot_id is None:
            return
        if self.memory.reboot_boot_id == boot_id:
            return
        seen = self.memory.reboot_boot_id
        self.memory.reboot_required = False
        self.memory.reboot_evidence = ""
        self.memory.reboot_boot_id = None
        self.memory.reboot_card = None
        log.info("reboot done: GPU tiers usable again", engine=self.name)
        self.record("reboot", to="done", cause=Cause.RECOVERED.value,
                    reason="the host rebooted: GPU tiers are usable again",
                    evidence={"seen_in_boot": seen, "boot": boot_id})
