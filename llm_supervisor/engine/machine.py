"""One engine's loop: every ``interval`` (or at once when woken) a check — the operator's
intents, then observe -> decide -> act — recorded once when it ends.

It observes (the intake's lines, the unit, liveness, the canary, the backend), asks the pure
``decide`` and hands the decision to ``acts``. What the engine is and its few moves are its
``Core``; every observation carries a cause (``llm_supervisor.causes``), and the cause decides
the action.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

import llm_supervisor.engine.acts as acts
from llm_supervisor import decide, intents
from llm_supervisor.causes import Cause, Finding, Observation
from llm_supervisor.checks import health, observations, speed
from llm_supervisor.checks.canary import Ended, Look
from llm_supervisor.checks.model import ModelFacts
from llm_supervisor.checks.observations import opencl_on_cpu
from llm_supervisor.checks.progress import working
from llm_supervisor.decide import Decision, Do
from llm_supervisor.engine.core import Core
from llm_supervisor.engine.intake import Taken
from llm_supervisor.errors import Refused
from llm_supervisor.intents import Intent
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.systemctl import UnitStatus
from llm_supervisor.tiers import GPU_TIERS
from llm_supervisor.timefmt import utc

log = structlog.get_logger("llm-supervisor")


class Engine(Core):
    """An engine under supervision: its ``Core`` (what it is, its few moves) and its loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queued: list[tuple[Intent, asyncio.Future[str]]] = []  # the operator's intents

    # ------------------------------------------------------------------ the check cycle

    def submit(self, intent: Intent) -> asyncio.Future[str]:
        """Queue an operator's intent and wake the loop; the future carries the outcome."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.queued.append((intent, done))
        self.wake.set()
        return done

    async def _apply_intents(self) -> None:
        answers: list[tuple[asyncio.Future[str], str | BaseException]] = []
        while self.queued:
            intent, done = self.queued.pop(0)
            if done.done():  # the asker gave up before it was taken: not applied
                continue
            try:
                answers.append((done, await self.apply(intent)))
            except Exception as exc:  # refused, or the switch failed: the asker hears why
                answers.append((done, exc))
        if answers:
            self.commit()  # recorded before the asker hears it is done
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
        usable = self.usable()
        record = {"cause": Cause.OPERATOR.value, "reason": intent.reason}
        by = f"by uid {intent.uid}"
        if intent.verb == "unpin":
            self.record("operator", **record, evidence=None)
            self.memory.pinned = None
            self.record("unpin", cause=Cause.OPERATOR.value, reason=f"unpinned {by}")
            return "unpinned"
        target = intents.check(self.intent_view(usable), intent.verb, intent.tier)
        if intent.verb == "stop":
            await self._stop_asked(by)
            return "stopped"
        assert target is not None  # only unpin and stop go nowhere
        self.record("operator", **record, evidence={"tier": target})
        if intent.verb == "start":
            self.memory.stopped_by = None
            await self.start_on(target, Cause.OPERATOR, f"started {by}")
            return f"started on {target}"
        if intent.verb == "pin":
            self.memory.pinned = target
            self.memory.next_promotion_at = None
            self.record("pin", to=target, cause=Cause.OPERATOR.value,
                        reason=f"pinned to {target} {by}")
            if self.tier != target:
                return await self._switch_asked(Do.DEMOTE, target, f"pinned to {target} {by}",
                                                f"pinned to {target}")
            return f"pinned to {target}"
        if intent.verb == "promote":
            if self._drains():
                return await self._switch_asked(Do.PROMOTE, target, f"asked {by}",
                                                f"promoting to {target}")
            await acts.promote(self, target, f"asked {by}")
            return f"promoting to {target}"
        what = "restarted" if intent.verb == "restart" else f"demoted from {self.tier}"
        return await self._switch_asked(
            Do.RESTART if intent.verb == "restart" else Do.DEMOTE, target, f"{what} {by}",
            "restarted" if intent.verb == "restart" else f"demoted to {target}")

    def _drains(self) -> bool:
        """Does a switch of this engine wait for its users to go (a balancer asks)?"""
        return self.config.agent.enabled and self.state == EngineState.HEALTHY

    async def _switch_asked(self, do: Do, target: str, detail: str, done: str) -> str:
        """An operator's switch: at once, or, with a balancer asking, after the drain (the
        asker hears so at once: the switch follows when the requests in flight are done)."""
        if do == Do.PROMOTE:
            self.begin_drain(Decision(do, Finding(Cause.OPERATOR, detail), target))
        elif not self.drain_first(target, Cause.OPERATOR, detail):
            await self.start_on(target, Cause.OPERATOR, detail)
            return done
        return (f"draining: {done} once the requests in flight are done (at most"
                f" {self.config.agent.drain_timeout:g}s)")

    def intent_view(self, usable: Sequence[str], why_not: Mapping[str, str] | None = None
                    ) -> intents.View:
        """What an intent's rules read of this engine (``intents.check``): plain data, with
        the tiers usable for it now (and why the others are not, when that is known)."""
        return intents.View(self.name, self.chain, self.tier, self.memory.pinned, usable,
                            why_not or {}, self.memory.stopped_by)

    async def _stop_asked(self, by: str) -> None:
        """``llm-supervisorctl stop``: held stopped, its unit stopped, until started."""
        self.record("operator", cause=Cause.OPERATOR.value, reason=f"stop {by}", evidence=None)
        self.memory.stopped_by = f"llm-supervisorctl stop {by}"
        self.held_pid = self.main_pid  # until the stop is done, it is no start of anyone's
        self.forget_checks()
        self.transition(EngineState.STOPPED, Cause.OPERATOR, self.memory.stopped_by, plain=True,
                        fix=f"`llm-supervisorctl start {self.name}` to serve again")
        await self.actuator.stop(self.cfg)

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
            if self.memory.stopped_by:  # the operator's: until they start it
                await acts.held_tick(self)
            return
        if state == EngineState.FAILED:
            if acts.due(self):
                await acts.retry(self, decide.retry_failed(self.chain, self.usable()))
            return
        if state == EngineState.BLOCKED:
            await acts.blocked_tick(self)
            return
        if self.pull_task is not None:
            return  # pulling the model: judged again when the pull ends
        observations = await self.observe()
        await self.judge(observations)
        if self.state == EngineState.HEALTHY and self.drain is None:
            await acts.way_up(self, decide.between(self.situation(tiers=False),
                                                   acts.schedule(self)))

    async def observe(self) -> list[Observation]:
        unit = await self.actuator.unit_status(self.cfg)
        unit_found = self._unit_observations(unit)  # first: a new process begins its run
        found = self._took(self.intake.take())      # ... and what its log said is taken
        start_facts = self.intake.start_facts
        if unit_found:
            diagnosis = await self.actuator.diagnose(self.cfg, self.tier, unit)
            if diagnosis is not None:
                unit_found = [Observation(False, "unit", diagnosis)]
            elif start_facts and self.state == EngineState.STARTING:
                unit_found = start_facts[-1:]  # the engine's own words on why
        found.extend(unit_found)
        if not unit.running:
            return found
        live = await health.liveness(self.http, self.cfg, self.checking.timeout)
        if live.latency_ms is not None:
            self.actuator.observe_check(self.name, "liveness", live.latency_ms / 1000)
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
            self.cfg.kind, self.actuator.cards(self.cfg))

    # ------------------------------------------------------------------ the generation check

    async def _canary(self, alive: bool) -> list[Observation]:
        """The one generation check (``checks.canary``): a canary that ended is the
        engine's to judge (its timings, its speed), then the canary's step for this check."""
        every, h = self.checking.canary_every, self.checking
        ended = self.canary.harvest()
        judged = self._canary_ended(ended) if ended is not None else None
        step = await self.canary.step(self.cfg, h, Look(
            alive=alive, scheduled=bool(every) and self.checks % every == 0,
            runner_port=self.memory.runner_port,
            placement=self.cfg.kind == "ollama" and self.tier in GPU_TIERS,
            load_deadline=self.load_deadline(), pid=self.main_pid), ended, judged)
        if step.learned is not None:
            self._model_learned(step.learned)
        if step.launched is not None:
            self.loading(step.launched)
        return step.found

    def _canary_ended(self, ended: Ended) -> Observation | None:
        """A canary's end: its timing, a load's record; a passed one's speed, judged."""
        result, seconds = ended.result, (ended.result.latency_ms or 0) / 1000
        if result.latency_ms is not None:
            self.actuator.observe_check(self.name, "canary" if ended.phase == "generate"
                                        else "load", seconds)
        if result.ok and ended.phase == "load" and self.tier is not None:
            self.speedbook.learn_load(self.tier, seconds)
            if self.cfg.model:
                self.record("load", to=self.tier, cause=Cause.START.value,
                            reason=f"{self.cfg.model} loaded on {self.tier}: first generation"
                            f" in {seconds:.2f}s", evidence={"seconds": round(seconds, 3)})
        rate = result.tokens_per_second
        return self._judge_speed(rate, ended.shared) if result.ok and rate else None

    def _judge_speed(self, rate: float, shared: bool) -> Observation | None:
        """A passed canary's rate against what this engine learned on its tier."""
        tier = self.tier
        if tier is None:
            return None
        verdict = self.speedbook.judge(tier, rate, busy=shared, gpu=tier in GPU_TIERS)
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

    def _model_learned(self, facts: ModelFacts) -> None:
        """The engine said what its model is: a new digest or engine version starts the
        speed reference afresh."""
        if self.speedbook.identify(facts.identity):
            log.info("speed reference reset: the model or the engine changed",
                     engine=self.name, model=self.cfg.model, version=facts.version)
            self.record("speed", to="reset", tier=self.tier, cause=Cause.START.value,
                        reason=f"{self.cfg.model or 'the model'} or the engine changed"
                        f" (now {facts.identity}): learning its speed afresh",
                        evidence=facts.to_dict())

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

    def _unit_observations(self, unit: UnitStatus) -> list[Observation]:
        self._restarted_outside(unit)
        new = bool(unit.main_pid) and unit.main_pid != self.replaced_pid
        if new:
            self.main_pid, self.replaced_pid = unit.main_pid, 0  # (none between two processes)
        if self.intake.asked:
            self._run_began(unit, new)
        else:
            self.intake.started(unit.main_started)
        seen, self.nrestarts_seen = self.nrestarts_seen, unit.n_restarts
        return observations.unit_observations(unit, seen, self.clock() - self.started_at,
                                              self.checking.startup_grace)

    def _run_began(self, unit: UnitStatus, new: bool) -> None:
        """After a start of ours, the run begins with the first process systemd started
        since (ExecMainStartTimestampMonotonic): what the replaced process said as it was
        stopped (a GPU error as a wedged runner dies) is not the new run's fault. The start
        resets NRestarts (``reset-failed``): one above 0 says systemd restarted a process of
        this start before a check saw one, whose words explain its crash — the run counts
        from when the start was asked, as it does with no start time known (a new process, a
        failed unit) or once the grace is over (a start that never shows a process is
        judged, never waited on)."""
        asked_at = self.intake.run_started
        if unit.main_started >= asked_at:  # a process of this start began
            self.intake.began(unit.main_started if unit.n_restarts == 0 else asked_at)
        elif (not unit.main_started and (new or unit.active_state == "failed"
                                         or unit.sub_state == "auto-restart")) or \
                self.clock() - self.started_at > self.checking.startup_grace:
            self.intake.began(asked_at)

    def _restarted_outside(self, unit: UnitStatus) -> None:
        """Another main process than the one this engine's last check saw, with neither
        systemd's restart count nor a start of ours behind it: someone restarted it
        (``systemctl restart``). No fault: a fresh start, its grace and a clean slate."""
        seen = self.nrestarts_seen
        if not (self.main_pid and unit.main_pid and unit.main_pid != self.main_pid
                and seen is not None and unit.n_restarts == seen):
            return
        was = self.main_pid
        log.info("engine restarted outside the daemon", engine=self.name, tier=self.tier,
                 pid=unit.main_pid, was=was)
        self.forget_checks()
        self.nrestarts_seen = unit.n_restarts
        self.started_at = self.clock()
        self.intake.began(unit.main_started or self.started_at)  # since its process began
        self.record("restart", to=self.tier, tier=self.tier, cause=Cause.OPERATOR.value,
                    reason="restarted outside the daemon (systemctl restart): a fresh start,"
                    " no fault", evidence={"pid": unit.main_pid, "was": was})
        if self.state != EngineState.STARTING:
            self.transition(EngineState.STARTING, Cause.OPERATOR, "restarted outside the"
                            " daemon (systemctl restart)", plain=True)

    # ------------------------------------------------------------------ decisions

    async def judge(self, observations: list[Observation]) -> None:
        """Decide (a pure function of the situation and the observations), then act."""
        found = opencl_on_cpu(self.tier, observations)
        failed = any(not o.ok for o in found)
        loading = any(o.finding is not None and o.finding.facts.get("loading") for o in found)
        d = decide.decide(self.situation(tiers=failed, loading=loading), found)
        if d.finding is not None and d.do not in (Do.WAIT, Do.STAND_DOWN):  # not excused
            self.actuator.observe_failure(self.name, d.finding.cause.value)
        if self.drain is not None:
            await self._draining(d)
        elif decide.planned(d) and self.config.agent.enabled \
                and self.state == EngineState.HEALTHY:
            self.begin_drain(d)
        else:
            await acts.act(self, d)

    # ------------------------------------------------------------------ the drain

    async def _draining(self, d: Decision) -> None:
        """While draining: a fault that cannot wait (not a planned switch) switches at once;
        other checks go on as usual; the planned switch goes ahead once drained."""
        assert self.drain is not None
        if d.do not in (Do.WAIT, Do.OK, Do.HEALTHY, Do.COUNT) and not decide.planned(d):
            self.drain = None
            self.record("drain", to="cancelled", tier=self.tier,
                        cause=d.finding.cause.value if d.finding else None,
                        reason="drain cancelled: a fault that cannot wait")
            await acts.act(self, d)
            return
        if not decide.planned(d):
            await acts.act(self, d)
        drained = await self._drained()
        if drained is None:
            return
        planned, self.drain = self.drain.decision, None
        self.record("drain", to="done", tier=self.tier, reason=drained)
        await acts.act(self, planned)

    async def _drained(self) -> str | None:
        """Why the drain is over, or None while it is not: the balancer has had an agent
        interval to hear of it, and nothing is in flight (the engine's own words, else the
        kernel's view of its clients); or its time is up."""
        assert self.drain is not None
        now, agent = self.clock(), self.config.agent
        if now >= self.drain.until:
            return f"drain timed out after {agent.drain_timeout:g}s"
        if now - self.drain.since < agent.interval:
            return None
        reading = await health.progress(self.http, self.cfg, self.memory.runner_port,
                                        self.checking.timeout, self.canary.view)
        if reading is None or working(reading):
            return None
        return f"drained in {now - self.drain.since:.0f}s: nothing in flight"

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
                rest = max(0.0, self.checking.interval - (self.clock() - began))
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    async with asyncio.timeout(rest):  # that meets a wake
                        await self.wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in (self.canary.task, self.pull_task):
                if task is not None:
                    task.cancel()
            for _, done in self.queued:  # the loop ends (shutdown, removal): not applied
                if not done.done():
                    done.set_exception(Refused(503, f"{self.name} is no longer supervised"))
            self.queued.clear()
