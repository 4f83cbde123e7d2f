"""One engine: its state machine, the signals it reads, and the decisions it takes.

Every observation carries a cause (``llm_supervisor.causes``); the cause decides the action:
faults a lower tier can fix demote, counted faults demote after ``failures`` checks and the
tier's restarts, causes no tier can fix block the engine until they clear. Every state
change goes through ``transition()``, which records one event with its cause. Side effects
(units, systemd, probes, persistence) go through an ``Actuator`` the daemon provides, so the
decisions are testable with a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from llm_supervisor import decide, intents, names, policy
from llm_supervisor.causes import Cause, Finding, Observation
from llm_supervisor.checks import health, observations, pull, speed
from llm_supervisor.checks.canary import Canary
from llm_supervisor.checks.model import ModelFacts
from llm_supervisor.checks.observations import opencl_on_cpu
from llm_supervisor.checks.speed import SpeedBook
from llm_supervisor.config import Config, EngineConfig, FallbackSection, HealthSection
from llm_supervisor.decide import Decision, Do, Situation
from llm_supervisor.engine.intake import Intake, Taken
from llm_supervisor.engine.outbox import Outbox
from llm_supervisor.errors import Refused
from llm_supervisor.host import process
from llm_supervisor.host.tuning import Tuning
from llm_supervisor.intents import Intent
from llm_supervisor.records.memory import EngineMemory
from llm_supervisor.records.metrics import EngineView
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.systemctl import UnitStatus
from llm_supervisor.tiers import GPU_TIERS
from llm_supervisor.timefmt import utc

log = structlog.get_logger("llm-supervisor")

# blocking causes seen while the engine runs: it keeps serving, a canary tells when it clears
WHILE_RUNNING = frozenset({Cause.MODEL_MISSING, Cause.AUTH})


class Actuator(Protocol):
    async def switch(self, engine: Engine, tier: str) -> Tuning:
        """Write the engine's units for ``tier`` and (re)start it there; the derived values
        this start got (they stay the engine's while it runs)."""

    async def stop(self, engine: Engine) -> None:
        """Stop the engine's unit (a blocked engine is not restarted in a loop)."""

    async def unit_status(self, engine: Engine) -> UnitStatus: ...

    async def diagnose(self, engine: Engine, unit: UnitStatus) -> Finding | None:
        """Why a unit that is down or restarting failed, when it is a cause no tier fixes."""

    async def cleared(self, engine: Engine, cause: Cause) -> bool:
        """Whether a blocking cause is gone (the port is free, the program exists...)."""

    async def reprobe(self) -> None: ...

    def usable(self, engine: Engine) -> list[str]: ...

    def boot_id(self) -> str | None: ...

    def observe_check(self, engine: Engine, check: str, seconds: float) -> None: ...

    def commit(self, engine: Engine, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Record a check's events in order, then persist the engine's memory, STATUS= and
        the metrics once (best effort, never raises)."""


def reason_of(cause: Cause, detail: str = "", tier: str | None = None) -> str:
    """How a cause reads in status and the journal: ``"rocm: generation hung: no token…"``."""
    text = f"{cause.description}: {detail}" if detail else cause.description
    return f"{tier}: {text}" if tier else text


class Engine:
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
        # what its log said since this run began (its next check takes it)
        self.intake = Intake(clock, self.wake, self._own_blob, self._request_completed)
        self.failures = 0                    # consecutive failed checks
        self.last_failure: Observation | None = None
        self.restarts_on_tier = 0
        self.healthy_at = clock()            # healthy since (the restart budget refills)
        self.started_at = clock()
        self.nrestarts_seen: int | None = None
        self.main_pid = 0                    # the engine's main process, as systemd says
        self.checks = 0
        self.last_check: dict[str, Any] | None = None
        self.canary = Canary(http, self.wake, clock, ended=self._canary_ended,
                             launched=self._canary_launched, speed=self._judge_speed,
                             learned=self._model_learned,
                             load_deadline=self._load_deadline,
                             memory=lambda: process.tree_rss(self.main_pid))
        self.pull_task: asyncio.Task[None] | None = None
        self.pull: dict[str, Any] | None = None  # progress of a model pull, for status
        self.intents: list[tuple[Intent, asyncio.Future[str]]] = []  # the operator's, queued
        # the events of the check under way, committed at once when it ends
        self.outbox = Outbox(lambda events: self.actuator.commit(self, events))
        # why a daemon start is (re)starting this engine, until its switch is done: it shows
        # as starting meanwhile, not as the state its record kept from before
        self.placing: str | None = None
        self.configure(config, engine)

    def configure(self, config: Config, engine: EngineConfig) -> None:
        """Take (new) settings; used at start and by reload, never restarts anything."""
        previous = getattr(self, "cfg", None)
        self.config = config
        self.cfg = engine
        self.health: HealthSection = config.health_for(engine)
        self.chain = config.chain_for(engine)
        # what its speed was learned for: this model with these settings (checks.speed)
        self.speed_key = hashlib.sha256(engine.model_dump_json().encode()).hexdigest()[:16]
        if previous is not None and previous != engine:
            self.memory.skipped = {}  # another build or flags: judge its backend afresh

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

    # ------------------------------------------------------------------ the record

    def record(self, type: str, **fields: Any) -> None:
        """An event of this engine: kept until the check (or action) under way ends, then
        committed with the others at once."""
        self.outbox.put(type, fields)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Record once: the events of what runs inside go to the actuator together, in order,
        with one state save, one STATUS= and one metrics update."""
        return self.outbox.batch()

    # ------------------------------------------------------------------ start / adopt

    def tuning(self) -> Tuning | None:
        """The derived values its unit runs with (kept since its start), if known."""
        return Tuning.from_dict(self.memory.tuning) if self.memory.tuning else None

    def adopt(self, running: bool, tuning: Tuning) -> None:
        """After a daemon (re)start: carry on with the persisted tier without restarting,
        with the derived values its unit holds."""
        self.memory.tuning = tuning.to_dict()
        self.nrestarts_seen = None
        if running and self.state in (EngineState.HEALTHY, EngineState.DEGRADED):
            self.started_at = self.clock() - self.health.startup_grace  # no grace: it runs
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
        log.info("reboot done: GPU tiers usable again", engine=self.name)
        self.record("reboot", to="done", cause=Cause.RECOVERED.value,
                             reason="the host rebooted: GPU tiers are usable again",
                             evidence={"seen_in_boot": seen, "boot": boot_id})

    async def start_on(self, tier: str, cause: Cause, detail: str = "", *,
                       evidence: Any = None, state: EngineState = EngineState.STARTING) -> None:
        """(Re)start on ``tier``: units rewritten, unit restarted, grace begins.

        A transaction in the record too: the tier and the events that announce it are
        recorded once the switch is done. A switch that fails half-way (a unit file, the
        daemon-reload, the restart) is an event of its own with its cause, the engine keeps
        the tier its unit runs (the actuator puts its files back), and the error goes on to
        the caller (a reload reports it; the engine's loop tries again at its next check)."""
        before = self.tier
        self._forget_checks()
        self.started_at = self.clock()
        self.intake.began(self.started_at)
        try:
            tuning = await self.actuator.switch(self, tier)
        except Exception as exc:
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

    # ------------------------------------------------------------------ the check cycle

    def submit(self, intent: Intent) -> asyncio.Future[str]:
        """Queue an operator's intent and wake the loop; the future carries the outcome."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.intents.append((intent, done))
        self.wake.set()
        return done

    async def _apply_intents(self) -> None:
        answers: list[tuple[asyncio.Future[str], str | BaseException]] = []
        while self.intents:
            intent, done = self.intents.pop(0)
            if done.done():  # the asker gave up before it was taken: not applied
                continue
            try:
                answers.append((done, await self.apply(intent)))
            except Exception as exc:  # refused, or the switch failed: the asker hears why
                answers.append((done, exc))
        if answers:
            self.outbox.flush()  # recorded before the asker hears it is done
        for done, outcome in answers:
            if done.done():
                continue
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

    async def apply(self, intent: Intent) -> str:
        """Carry out one operator's intent, from the engine's own loop and under its lock:
        the only place the operator changes an engine. What changed since the handler
        validated it (a tier no longer usable) refuses it here, with the same error."""
        if intent.verb == "promote":
            await self.actuator.reprobe()  # promote: with what the host has now
        usable = self.actuator.usable(self)
        record = {"cause": Cause.OPERATOR.value, "reason": intent.reason}
        by = f"by uid {intent.uid}"
        if intent.verb == "unpin":
            self.record("operator", **record, evidence=None)
            self.memory.pinned = None
            self.record("unpin", cause=Cause.OPERATOR.value, reason=f"unpinned {by}")
            return "unpinned"
        target = intents.check(self.intent_view(usable), intent.verb, intent.tier)
        assert target is not None  # only unpin goes nowhere
        self.record("operator", **record, evidence={"tier": target})
        if intent.verb == "pin":
            self.memory.pinned = target
            self.memory.next_promotion_at = None
            self.record("pin", to=target, cause=Cause.OPERATOR.value,
                        reason=f"pinned to {target} {by}")
            if self.tier != target:
                await self.start_on(target, Cause.OPERATOR, f"pinned to {target} {by}")
            return f"pinned to {target}"
        if intent.verb == "promote":
            await self.promote(target, f"asked {by}")
            return f"promoting to {target}"
        what = "restarted" if intent.verb == "restart" else f"demoted from {self.tier}"
        await self.start_on(target, Cause.OPERATOR, f"{what} {by}")
        return "restarted" if intent.verb == "restart" else f"demoted to {target}"

    def intent_view(self, usable: Sequence[str], why_not: Mapping[str, str] | None = None
                    ) -> intents.View:
        """What an intent's rules read of this engine (``intents.check``): plain data, with
        the tiers usable for it now (and why the others are not, when that is known)."""
        return intents.View(self.name, self.chain, self.tier, self.memory.pinned, usable,
                            why_not or {})

    async def tick(self) -> None:
        async with self.lock:
            with self.batch():
                await self._check()

    async def _check(self) -> None:
        """One check: the operator's intents, then observe -> decide -> act; recorded once
        (``batch``) when it ends."""
        await self._apply_intents()
        state = self.state
        if state == EngineState.STOPPED:
            return
        if state == EngineState.FAILED:
            if self._due():
                await self._retry(decide.retry_failed(self.chain, self.actuator.usable(self)))
            return
        if state == EngineState.BLOCKED:
            await self._blocked_tick()
            return
        if self.pull_task is not None:
            return  # pulling the model: judged again when the pull ends
        observations = await self.observe()
        await self.judge(observations)
        if self.state == EngineState.HEALTHY:
            await self._way_up(decide.between(self.situation(tiers=False), decide.Schedule(
                self.wall(), self.memory.probation_until, self.memory.next_promotion_at,
                self.fallback.promote_after)))

    def _due(self) -> bool:
        return self.memory.retry_at is not None and self.wall() >= self.memory.retry_at

    async def observe(self) -> list[Observation]:
        found = self._took(self.intake.take())
        start_facts = self.intake.start_facts
        unit = await self.actuator.unit_status(self)
        unit_found = self._unit_observations(unit)
        if unit_found:
            diagnosis = await self.actuator.diagnose(self, unit)
            if diagnosis is not None:
                unit_found = [Observation(False, "unit", diagnosis)]
            elif start_facts and self.state == EngineState.STARTING:
                unit_found = start_facts[-1:]  # the engine's own words on why
        found.extend(unit_found)
        if not unit.running:
            return found
        live = await health.liveness(self.http, self.cfg, self.health.timeout)
        if live.latency_ms is not None:
            self.actuator.observe_check(self, "liveness", live.latency_ms / 1000)
        found.append(live)
        self.checks += 1
        found.extend(await self._canary(live.ok))
        if live.ok:
            found.extend(self._backend())
        failed = [o for o in found if not o.ok]
        self.last_check = {"at": utc(), "ok": not failed, "latency_ms": live.latency_ms,
                           "tokens_per_second": self.canary.tokens_per_second,
                           "error": failed[0].reason if failed else None,
                           "cause": failed[0].cause.value if failed and failed[0].cause
                           else None}
        return found

    def _took(self, taken: Taken) -> list[Observation]:
        """What the intake held since the last check, into the engine's memory: its
        runner's port (a restarted daemon needs it), its backend, its offload (part of the
        model on a GPU tier is reported: the rest computes on the CPU). The findings go on."""
        if self.intake.runner_port is not None:
            self.memory.runner_port = self.intake.runner_port
        backend = self.intake.backend()
        if backend:
            self.memory.backend = backend
        for layers, of in taken.offloads:
            self._offloaded(layers, of)
        return taken.findings

    def _backend(self) -> list[Observation]:
        return observations.backend_observations(
            self.tier, self.intake.devices, self.intake.settled(), self.memory.backend or "",
            self.cfg.kind)

    # ------------------------------------------------------------------ the generation check

    def view(self) -> EngineView:
        """What the records read of this engine (the gauges, ``STATUS=``): plain data."""
        memory, check = self.memory, self.last_check or {}
        learned = self.speed.summary(self.tier) or {}
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
            trouble=cause.description if troubled and cause is not None else None)

    @property
    def speed(self) -> SpeedBook:
        return SpeedBook(self.memory.speed, self.speed_key)

    def _judge_speed(self, rate: float, shared: bool) -> Observation | None:
        """A passed canary's rate against what this engine learned on its tier."""
        tier = self.tier
        if tier is None:
            return None
        verdict = self.speed.judge(tier, rate, busy=shared, gpu=tier in GPU_TIERS)
        evidence = {"tokens_per_second": round(rate, 2), "reference": verdict.reference,
                    "tier": tier, "rule": f"{speed.LOW_RUN} in a row below"
                    f" {speed.SLOW_RATIO:g}x the reference"}
        if verdict.kind == speed.Kind.ADOPTED:
            log.info("speed reference adopted", engine=self.name, tier=tier,
                     rate=round(rate, 2))
            self.record("speed", to="adopted", tier=tier, cause=Cause.SLOW.value,
                        reason=verdict.detail, evidence=evidence)
            return None
        if verdict.kind == speed.Kind.SLOW:
            return Observation.bad("speed", Cause.SLOW, verdict.detail, evidence=evidence,
                                   tokens_per_second=rate)
        if verdict.kind == speed.Kind.CPU:  # on opencl: backend_mismatch (opencl_on_cpu)
            return Observation.bad("speed", Cause.PLACEMENT, f"{verdict.detail}, whatever the"
                                   " engine reports", evidence=evidence, tokens_per_second=rate)
        return None

    async def _canary(self, alive: bool) -> list[Observation]:
        """The one generation check (``checks.canary``): its observations for this check."""
        every = self.health.canary_every
        scheduled = bool(every) and self.checks % every == 0
        on_gpu_ollama = self.cfg.kind == "ollama" and self.tier in GPU_TIERS
        return await self.canary.step(self.cfg, self.health, alive=alive, scheduled=scheduled,
                                      runner_port=self.memory.runner_port,
                                      placement=on_gpu_ollama)

    def _canary_ended(self, result: Observation, phase: str) -> None:
        if result.latency_ms is not None:
            self.actuator.observe_check(self, "canary" if phase == "generate" else "load",
                                        result.latency_ms / 1000)
        if result.ok and phase == "load" and self.tier is not None:
            self.speed.learn_load(self.tier, (result.latency_ms or 0) / 1000)
        if result.ok and phase == "load" and self.cfg.model:
            seconds = (result.latency_ms or 0) / 1000
            self.record("load", to=self.tier, cause=Cause.START.value,
                         reason=f"{self.cfg.model} loaded on {self.tier}: first generation"
                         f" in {seconds:.2f}s", evidence={"seconds": round(seconds, 3)})

    def _model_learned(self, facts: ModelFacts) -> None:
        """The engine said what its model is: a new digest or engine version starts the
        speed reference afresh."""
        if self.speed.identify(facts.identity):
            log.info("speed reference reset: the model or the engine changed",
                     engine=self.name, model=self.cfg.model, version=facts.version)
            self.record("speed", to="reset", tier=self.tier, cause=Cause.START.value,
                        reason=f"{self.cfg.model or 'the model'} or the engine changed"
                        f" (now {facts.identity}): learning its speed afresh",
                        evidence=facts.to_dict())

    def _load_deadline(self, h: HealthSection) -> float:
        """A load's deadline on this tier, learned from this engine's own loads."""
        return self.speed.load_deadline(self.tier, h.load_deadline)

    def _canary_launched(self, phase: str) -> None:
        if phase == "load" and self.cfg.model and self.state == EngineState.STARTING:
            self.transition(self.state, self.cause or Cause.START,  # why it (re)started
                            f"loading {self.cfg.model}", plain=True)

    def _request_completed(self) -> None:
        """The engine's log says a generation request finished: progress, for a waiting
        canary."""
        self.canary.completed()

    def _offloaded(self, layers: int, of: int) -> None:
        """How many of the model's layers went to its GPU: status shows it; part of them on
        a GPU tier is reported (the rest computes on the CPU)."""
        self.memory.offload = f"{layers}/{of}"
        if 0 < layers < of and self.tier in GPU_TIERS:
            log.warning("partial offload: part of the model computes on the CPU",
                        engine=self.name, tier=self.tier, layers=layers, of=of)
            self.record("offload", to="partial", tier=self.tier, cause=Cause.PLACEMENT.value,
                        reason=f"only {layers} of {of} layers on the GPU on {self.tier}: the"
                        " rest computes on the CPU", evidence={"layers": layers, "of": of})

    def _own_blob(self) -> str | None:
        """The blob of this engine's own model, as its manifest names it (Ollama)."""
        if self.cfg.kind != "ollama" or not self.cfg.model:
            return None
        models = names.models_dir(self.cfg.environment, names.user_home(self.cfg.user))
        return names.model_blob(Path(models), self.cfg.model)

    def _forget_checks(self) -> None:
        """A (re)start begins with a clean slate: no stale canary verdicts or devices."""
        self.canary.forget()
        self.memory.runner_port = None
        self.memory.offload = None
        self.failures = 0
        self.nrestarts_seen = None
        self.intake.forget()
        self.memory.backend = None

    def _unit_observations(self, unit: UnitStatus) -> list[Observation]:
        self.main_pid = unit.main_pid
        self.intake.started(unit.main_started)
        seen, self.nrestarts_seen = self.nrestarts_seen, unit.n_restarts
        return observations.unit_observations(unit, seen, self.clock() - self.started_at,
                                              self.health.startup_grace)

    # ------------------------------------------------------------------ decisions

    def situation(self, *, tiers: bool = True, loading: bool = False) -> Situation:
        """What the decision reads of this engine, as plain data. ``tiers=False`` leaves out
        the usable tiers (computed from the host view) where no decision needs them: a check
        where nothing failed, the way back up (it probes afresh)."""
        h = self.health
        return Situation(
            state=self.state, tier=self.tier, chain=tuple(self.chain),
            usable=tuple(self.actuator.usable(self)) if tiers else (),
            pinned=self.memory.pinned,
            promoted_from=self.memory.promoted_from if self._promoting() else None,
            # the start-up grace; an engine that says it loads its model has the load's
            # deadline (learned from its own loads) instead, when that is longer
            in_grace=(self.state == EngineState.STARTING and self.clock() - self.started_at
                      < max(h.startup_grace, self._load_deadline(h) if loading else 0)),
            failures=self.failures, failures_needed=h.failures,
            restarts_on_tier=self.restarts_on_tier,
            restarts_per_tier=self.fallback.restarts_per_tier,
            generation_passed=self.canary.passed or not h.canary_every,
            reboot_required=self.memory.reboot_required,
            may_pull=(self.cfg.pull and self.cfg.kind == "ollama" and self.pull is None))

    async def judge(self, observations: list[Observation]) -> None:
        """Decide (a pure function of the situation and the observations), then act."""
        found = opencl_on_cpu(self.tier, observations)
        failed = any(not o.ok for o in found)
        loading = any(o.finding is not None and o.finding.facts.get("loading") for o in found)
        await self.act(decide.decide(self.situation(tiers=failed, loading=loading), found))

    async def act(self, d: Decision) -> None:
        """Carry a decision out: the only place a check changes the engine."""
        if d.do == Do.WAIT:
            return
        if d.do in (Do.OK, Do.HEALTHY):
            self._passed(d)
            return
        finding = d.finding
        assert finding is not None
        if d.skip_tier and self.tier:
            self.memory.skipped[self.tier] = reason_of(finding.cause, finding.detail)
        if d.reboot:
            self._reboot_required(finding)
        if d.do == Do.COUNT:
            self.failures = d.failures
            self.last_failure = d.observation
            log.info("check failed", engine=self.name, tier=self.tier, cause=finding.cause.value,
                     reason=finding.text(), failures=self.failures)
        elif d.do == Do.HOLD:
            self.transition(EngineState.DEGRADED, finding.cause, finding.detail,
                            evidence=finding.evidence, fix="unpin it to let it fall back",
                            tier_prefix=True)
        elif d.do == Do.RESTART:
            await self._restart(finding)
        elif d.do == Do.DEMOTE:
            await self._demote(finding, d.target)
        elif d.do == Do.ROLLBACK:
            await self._rollback(finding, d)
        elif d.do == Do.PULL:
            self._start_pull()
        else:
            await self.block(finding)

    def _passed(self, d: Decision) -> None:
        """A check that passed: the failure count starts again; healthy at last, or a
        healthy engine's restart budget refilled over time."""
        self.failures = 0
        if d.do == Do.HEALTHY and self.state != EngineState.HEALTHY:
            self._became_healthy()
        elif self.state == EngineState.HEALTHY:
            self._refill_restarts()

    def _refill_restarts(self) -> None:
        """Healthy for ``restarts_refill_after`` on this tier: its restart budget is whole
        again (one rule for the budget over time; the count itself is ``decide``'s)."""
        if self.restarts_on_tier and \
                self.clock() - self.healthy_at >= self.fallback.restarts_refill_after:
            log.info("restart budget refilled", engine=self.name, tier=self.tier,
                     restarts=self.restarts_on_tier)
            self.restarts_on_tier = 0

    def _became_healthy(self) -> None:
        self.healthy_at = self.clock()
        self.intake.start_facts.clear()  # the start worked: what its log said is no cause
        tier = self.tier
        cause, detail = Cause.START, f"serving on {tier}"
        if self.cause is not None and (self.cause == Cause.RETRY or self.cause.blocking):
            cause = Cause.RECOVERED  # after a retry, a pull, a blocked spell
        if self._promoting() and self.memory.probation_until is None:
            cause, detail = Cause.PROMOTION, f"promoted from {self.memory.promoted_from} to {tier}"
            self.memory.probation_until = self.wall() + self.fallback.probation
        self.memory.retry_attempt = 0
        self.memory.retry_at = None
        usable = self.actuator.usable(self)
        best = policy.best_tier(self.chain, usable)
        if (best and tier != best and self.fallback.promote_after > 0
                and not self.memory.pinned and self.memory.next_promotion_at is None):
            self._schedule_promotion()
        if tier == best:
            self.memory.next_promotion_at = None
            self.memory.demoted_from = self.memory.demoted_at = None
        self.transition(EngineState.HEALTHY, cause, detail, plain=True)

    def _reboot_required(self, finding: Finding) -> None:
        self.memory.reboot_required = True
        self.memory.reboot_evidence = str(finding.evidence or finding.detail)
        self.memory.reboot_boot_id = self.actuator.boot_id()
        log.error("reboot required", engine=self.name, tier=self.tier, cause=finding.cause.value,
                  reason=finding.text())

    async def _restart(self, finding: Finding) -> None:
        self.restarts_on_tier += 1
        if finding.cause == Cause.SLOW and self.tier is not None:
            self.speed.restarted(self.tier)  # did the restart change it? (checks.speed)
        self.transition(EngineState.DEGRADED, finding.cause, finding.detail,
                        evidence=finding.evidence, tier_prefix=True)
        assert self.tier is not None
        await self.start_on(self.tier, finding.cause, f"restarting on {self.tier}: "
                            f"{finding.text()}")

    async def _demote(self, finding: Finding, target: str | None) -> None:
        """Down to ``target`` (decided), or, with none left, every usable tier exhausted."""
        self.transition(EngineState.DEGRADED, finding.cause, finding.detail,
                        evidence=finding.evidence, fix=finding.fix, tier_prefix=True)
        if target is None:
            await self.fail(finding)
            return
        usable = self.actuator.usable(self)
        if self.fallback.promote_after > 0 and policy.best_tier(self.chain, usable) != target:
            self._schedule_promotion()
        if self.memory.demoted_from is None and self.tier != target:
            self.memory.demoted_from, self.memory.demoted_at = self.tier, self.wall()
        await self.start_on(target, finding.cause, f"demoted from {self.tier}: "
                            f"{finding.text()}", evidence=finding.evidence)

    async def fail(self, finding: Finding) -> None:
        """Every usable tier exhausted: stop the unit (systemd's restarts would fight the
        backoff) and retry from the bottom of the chain, waiting longer each time."""
        self.memory.retry_attempt += 1
        wait = policy.retry_wait(self.memory.retry_attempt, self.health.interval * 2)
        self.memory.retry_at = self.wall() + wait
        self.memory.next_promotion_at = None
        self.transition(EngineState.FAILED, finding.cause,
                        f"every usable tier exhausted; last: {self.tier}: {finding.text()};"
                        f" retry {self.memory.retry_attempt} in {wait:.0f}s",
                        evidence=finding.evidence)
        self._forget_checks()
        await self.actuator.stop(self)

    async def _retry(self, d: Decision) -> None:
        """A due retry, as decided: start on its target, or fail again when none is left."""
        if d.target is None:
            await self.fail(Finding(Cause.CONFIG, "no usable tier on this host"))
            return
        failed = self.state == EngineState.FAILED
        if failed:
            self.restarts_on_tier = 0
        attempt = self.memory.retry_attempt
        why = (f"retry {attempt} from the bottom: {d.target}" if failed else
               f"retry {attempt} after {(self.cause or Cause.CONFIG).description}")
        await self.start_on(d.target, Cause.RETRY, why)

    # ------------------------------------------------------------------ blocked

    async def block(self, finding: Finding) -> None:
        """No tier change can fix this: say so, with the fix, and retry with backoff."""
        self.memory.retry_attempt += 1
        wait = policy.blocked_wait(self.memory.retry_attempt, self.health.interval * 2)
        self.memory.retry_at = self.wall() + wait
        self._forget_checks()
        self.transition(EngineState.BLOCKED, finding.cause, finding.detail,
                        evidence=finding.evidence, fix=finding.fix)
        if not self._serves_while(finding.cause):
            await self.actuator.stop(self)  # not restarted in a loop meanwhile

    def _serves_while(self, cause: Cause) -> bool:
        """Whether the engine keeps running while blocked by ``cause`` (a wrong key, a model
        Ollama lacks); llama-server without its model file exits."""
        if cause == Cause.MODEL_MISSING and self.cfg.kind == "llama-server":
            return False
        return cause in WHILE_RUNNING

    async def _blocked_tick(self) -> None:
        cause = self.cause or Cause.CONFIG
        if not (self._due() or await self._cleared(cause)):
            return
        d = decide.retry_blocked(self.situation(), self._serves_while(cause))
        if d.do == Do.RECHECK:
            self.transition(EngineState.STARTING, Cause.RETRY,
                            f"retry {self.memory.retry_attempt} after {cause.description}")
            return
        await self._retry(d)

    async def _cleared(self, cause: Cause) -> bool:
        if cause != Cause.MODEL_MISSING or self.cfg.kind == "llama-server":
            return await self.actuator.cleared(self, cause)  # llama-server: its -m file
        if self.cfg.kind != "ollama":
            return False
        return await health.model_listed(self.http, self.cfg, self.health.timeout)

    def _start_pull(self) -> None:
        self.pull = {"model": self.cfg.model, "status": "starting", "completed": 0, "total": 0}
        self.transition(EngineState.STARTING, Cause.MODEL_MISSING,
                        f"pulling {self.cfg.model} (pull = true)")
        self.pull_task = asyncio.create_task(self._pull(), name=f"pull-{self.name}")

    async def _pull(self) -> None:
        """Pull the model through the engine's API; then check again (or block)."""
        assert self.pull is not None

        def step(status: str, share: int) -> None:
            self.record("pull", to=status, cause=Cause.MODEL_MISSING.value,
                         reason=f"pulling {self.cfg.model}: {status} ({share}%)")

        error = await pull.pull(self.http, self.cfg.endpoint, self.cfg.model,
                                self.health.timeout, self.pull, step)
        async with self.lock:
            self.pull_task = None
            if error is None:
                self.transition(EngineState.STARTING, Cause.RETRY,
                                f"pulled {self.cfg.model}; checking again")
                self.canary.launch(self.cfg, self.health)
            else:
                await self.block(Finding(
                    Cause.MODEL_MISSING, f"pulling {self.cfg.model} failed: {error}",
                    fix=f"check the model name, then `ollama pull {self.cfg.model}`"))
            self.wake.set()

    # ------------------------------------------------------------------ the way back up

    def _promoting(self) -> bool:
        """A promotion in progress, or on probation (failing now counts as a failed one)."""
        if self.memory.promoted_from is None:
            return False
        until = self.memory.probation_until
        return until is None or self.wall() < until

    async def _way_up(self, d: Decision) -> None:
        """Between checks of a healthy engine: a probation passed, or a promotion due."""
        if d.do == Do.PASSED:
            log.info("promotion held through probation", engine=self.name, tier=self.tier)
            self.record("probation", to="passed", cause=Cause.PROMOTION.value,
                        reason=f"{self.tier} held for {self.fallback.probation:.0f}s")
            self.memory.promoted_from = self.memory.probation_until = None
            self.memory.promote_wait = None
            await self._way_up(decide.between(self.situation(tiers=False), decide.Schedule(
                self.wall(), None, self.memory.next_promotion_at,
                self.fallback.promote_after)))
        elif d.do == Do.PROMOTE:
            await self.actuator.reprobe()  # what the host has now
            chosen = decide.promotion(self.chain, self.actuator.usable(self), self.tier)
            if chosen.target is None:
                self._schedule_promotion()
            else:
                await self.promote(chosen.target, "promote_after elapsed")

    def _schedule_promotion(self) -> None:
        """The next try of the best tier, after the current wait (``promote_after`` at first)."""
        wait = self.memory.promote_wait or self.fallback.promote_after
        self.memory.promote_wait = wait
        self.memory.next_promotion_at = self.wall() + wait

    async def promote(self, tier: str, why: str) -> None:
        self.memory.promoted_from = self.tier
        self.memory.probation_until = None
        self.memory.next_promotion_at = None
        await self.start_on(tier, Cause.PROMOTION, f"trying {tier} again ({why})")

    async def _rollback(self, finding: Finding, d: Decision) -> None:
        """A promotion failed: the next try waits ``promote_backoff`` times longer; back to
        the tier it came from, or (that one gone too) down as decided."""
        back = self.memory.promoted_from
        self.memory.promoted_from = self.memory.probation_until = None
        wait = policy.next_promotion_wait(self.memory.promote_wait or
                                          self.fallback.promote_after,
                                          self.fallback.promote_backoff)
        self.memory.promote_wait = wait
        self.memory.next_promotion_at = self.wall() + wait
        detail = f"{d.why}: {finding.text()}" if d.why else finding.text()
        self.transition(EngineState.DEGRADED, Cause.PROMOTION_FAILED, detail,
                        evidence=finding.evidence, tier_prefix=True)
        if d.demote or d.target is None:
            await self._demote(finding, d.target)
            return
        await self.start_on(d.target, Cause.PROMOTION_FAILED, f"back to {back}; next try in"
                            f" {wait:.0f}s ({finding.text()})", evidence=finding.evidence)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Check every ``interval``, or at once when woken (log finding, operator action)."""
        try:
            while True:
                # cleared before the check, never after it: a finding, an operator's intent
                # or a canary's end that arrives while the check runs wakes the next at once
                self.wake.clear()
                began = self.clock()
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad check must not end supervision
                    log.exception("check cycle failed", engine=self.name, error=str(exc))
                self.ticks += 1
                # a check every `interval` from start to start: one that waited on a silent
                # endpoint (a wedged GPU's /slots) does not push the next ones back
                rest = max(0.0, self.health.interval - (self.clock() - began))
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    async with asyncio.timeout(rest):  # that meets a wake
                        await self.wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in (self.canary.task, self.pull_task):
                if task is not None:
                    task.cancel()
            for _, done in self.intents:  # the loop ends (shutdown, removal): not applied
                if not done.done():
                    done.set_exception(Refused(503, f"{self.name} is no longer supervised"))
            self.intents.clear()
