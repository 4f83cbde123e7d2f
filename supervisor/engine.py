"""One engine: its state machine, the signals it reads, and the decisions it takes.

Every state change goes through ``transition()``, which records one event with its reason.
Side effects (writing units, talking to systemd, probing the host) go through an
``Actuator`` the daemon provides, so the decisions are testable with a fake one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import structlog

from supervisor import health, policy
from supervisor.config import GPU_TIERS, Config, EngineConfig, FallbackSection, HealthSection
from supervisor.health import Observation
from supervisor.history import utc
from supervisor.state import EngineMemory
from supervisor.states import CHECK, FATAL_RESET, FAULT, RESET, EngineState
from supervisor.systemd import UnitStatus

log = structlog.get_logger("llm-supervisor")


class Actuator(Protocol):
    async def switch(self, engine: Engine, tier: str) -> None:
        """Write the engine's units for ``tier`` and (re)start it there."""

    async def unit_status(self, engine: Engine) -> UnitStatus: ...

    async def reprobe(self) -> None: ...

    def usable(self, engine: Engine) -> list[str]: ...

    def observe_check(self, engine: Engine, check: str, seconds: float) -> None: ...

    def record(self, engine: Engine, type: str, **fields: Any) -> None:
        """Persist the engine's memory and append an event."""


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
        self.inbox: list[Observation] = []   # log-classifier findings, handled next tick
        self.failures = 0                    # consecutive failed checks
        self.last_failure: Observation | None = None
        self.restarts_on_tier = 0
        self.started_at = clock()
        self.started_wall = wall()
        self.nrestarts_seen: int | None = None
        self.checks = 0
        self.last_check: dict[str, Any] | None = None
        self.canary_task: asyncio.Task[Observation] | None = None
        self.canary_failure: Observation | None = None
        self.canary_started = float("-inf")
        self.tokens_per_second: float | None = None
        self.promoting_from: str | None = None
        self.retry_attempt = 0
        self.retry_at: float | None = None
        self.configure(config, engine)

    def configure(self, config: Config, engine: EngineConfig) -> None:
        """Take (new) settings; used at start and by reload, never restarts anything."""
        self.config = config
        self.cfg = engine
        self.health: HealthSection = config.health_for(engine)
        self.chain = config.chain_for(engine)

    # ------------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def state(self) -> EngineState:
        return EngineState(self.memory.state)

    @property
    def tier(self) -> str | None:
        return self.memory.tier

    def transition(self, to: EngineState, reason: str, evidence: Any = None) -> None:
        """The one way an engine changes state: one logged event, with its reason."""
        before = self.state
        if before == to and self.memory.reason == reason:
            return
        self.memory.state = to.value
        self.memory.since = self.wall()
        self.memory.reason = reason
        self.memory.remember({"ts": utc(), "from": before.value, "to": to.value,
                              "tier": self.tier, "reason": reason})
        level = {EngineState.FAILED: "error", EngineState.DEGRADED: "warning"}.get(to, "info")
        getattr(log, level)("engine state", engine=self.name, tier=self.tier,
                            reason=reason, **{"from": before.value, "to": to.value})
        self.actuator.record(self, "state", from_=before.value, to=to.value, reason=reason,
                             evidence=evidence, tier=self.tier)

    # ------------------------------------------------------------------ start / adopt

    def adopt(self, running: bool) -> None:
        """After a daemon (re)start: carry on with the persisted tier without restarting."""
        self.nrestarts_seen = None
        if running and self.state in (EngineState.HEALTHY, EngineState.DEGRADED):
            self.started_at = self.clock() - self.health.startup_grace  # no grace: it runs
        else:
            self.started_at = self.clock()

    async def start_on(self, tier: str, reason: str, evidence: Any = None) -> None:
        """(Re)start on ``tier``: units rewritten, unit restarted, grace begins."""
        before = self.tier
        self.memory.tier = tier
        self._forget_checks()
        self.started_at = self.clock()
        self.started_wall = self.wall()
        if before != tier:
            self.restarts_on_tier = 0
            self.actuator.record(self, "tier", from_=before, to=tier, reason=reason,
                                 evidence=evidence)
            if before is not None and policy.is_above(self.chain, before, tier):
                log.warning("engine demoted", engine=self.name, tier=tier, reason=reason,
                            **{"from": before})
        self.transition(EngineState.STARTING, reason, evidence)
        await self.actuator.switch(self, tier)

    # ------------------------------------------------------------------ the check cycle

    def finding(self, observation: Observation, realtime_us: int = 0) -> None:
        """A log line said something: handle it at once, unless it predates this start."""
        if realtime_us and realtime_us / 1e6 < self.started_wall:
            return  # the previous run's last words
        self.inbox.append(observation)
        self.wake.set()

    async def tick(self) -> None:
        async with self.lock:
            if self.state == EngineState.STOPPED:
                return
            if self.state == EngineState.FAILED:
                if self.retry_at is not None and self.clock() >= self.retry_at:
                    await self._retry_from_bottom()
                return
            observations = await self.observe()
            await self.judge(observations)
            if self.state == EngineState.HEALTHY:
                await self._maybe_promote()

    async def observe(self) -> list[Observation]:
        found = list(self.inbox)
        self.inbox.clear()
        unit = await self.actuator.unit_status(self)
        found.extend(self._unit_observations(unit))
        if not unit.running:
            return found
        live = await health.liveness(self.http, self.cfg, self.health.timeout)
        if live.latency_ms is not None:
            self.actuator.observe_check(self, "liveness", live.latency_ms / 1000)
        found.append(live)
        self.checks += 1
        found.extend(await self._canary(live.ok))
        failed = [o for o in found if not o.ok]
        self.last_check = {"at": utc(), "ok": not failed, "latency_ms": live.latency_ms,
                           "tokens_per_second": self.tokens_per_second,
                           "error": failed[0].reason if failed else None}
        return found

    async def _canary(self, alive: bool) -> list[Observation]:
        """The generation canary runs in the background, so a hung GPU cannot stall checks.

        A failed canary stands until a canary succeeds: every check meanwhile counts as
        failed (and starts a new canary), so a hang is acted on after ``failures`` checks
        rather than ``failures`` canary timeouts.
        """
        found: list[Observation] = []
        task = self.canary_task
        if task is not None and task.done():
            self.canary_task = None
            result = task.result()
            if result.latency_ms is not None:
                self.actuator.observe_check(self, "canary", result.latency_ms / 1000)
            if result.ok:
                self.canary_failure = None
                self.tokens_per_second = result.tokens_per_second
                if self.cfg.kind == "ollama" and self.tier in GPU_TIERS:
                    found.append(await health.placement(self.http, self.cfg,
                                                        self.health.timeout))
            else:
                self.canary_failure = result
        every = self.health.canary_every
        due = every and (self.checks % every == 0 or self.canary_failure is not None)
        rested = self.clock() - self.canary_started >= self.health.interval * 0.9
        if alive and due and rested and self.canary_task is None:
            self.canary_started = self.clock()
            self.canary_task = asyncio.create_task(health.canary(
                self.http, self.cfg, self.health.canary_timeout,
                self.health.min_tokens_per_second))
            self.canary_task.add_done_callback(self._canary_done)
        if self.canary_failure is not None:
            found.append(self.canary_failure)
        return found

    def _canary_done(self, task: asyncio.Task[Observation]) -> None:
        """Wake the loop at once when the canary starts failing; later results wait a tick."""
        if task.cancelled() or task.exception() is not None:
            return
        if not task.result().ok and self.canary_failure is None:
            self.wake.set()

    def _forget_checks(self) -> None:
        """A (re)start begins with a clean slate: no stale canary verdicts."""
        if self.canary_task is not None:
            self.canary_task.cancel()
            self.canary_task = None
        self.canary_failure = None
        self.failures = 0
        self.nrestarts_seen = None
        self.inbox.clear()

    def _unit_observations(self, unit: UnitStatus) -> list[Observation]:
        seen, self.nrestarts_seen = self.nrestarts_seen, unit.n_restarts
        if seen is not None and unit.n_restarts > seen:
            return [Observation(
                False, "unit", f"crashed: systemd restarted it {unit.n_restarts - seen} time(s)"
                f" (exit status {unit.exec_main_status})", evidence=unit.raw)]
        down = (unit.active_state in ("failed", "inactive", "deactivating")
                or unit.sub_state in ("auto-restart", "dead", "failed"))
        stuck = (not unit.running and self.clock() - self.started_at
                 > self.health.startup_grace)
        if down or stuck:
            return [Observation(
                False, "unit", f"not running: {unit.active_state}/{unit.sub_state}"
                f" (exit status {unit.exec_main_status}, result {unit.result or '-'})",
                evidence=unit.raw)]
        return []  # running, or still activating within its grace

    async def judge(self, observations: list[Observation]) -> None:
        now = self.clock()
        severe = [o for o in observations if not o.ok and o.severity != CHECK]
        if severe:
            order = {FATAL_RESET: 0, FAULT: 1, RESET: 2}
            await self._on_fault(min(severe, key=lambda o: order.get(o.severity, 9)))
            return
        failed = [o for o in observations if not o.ok]
        if not failed:
            if not any(o.source == "liveness" for o in observations):
                return  # the unit is still activating: nothing answered yet
            self.failures = 0
            if self.state != EngineState.HEALTHY:
                self._became_healthy()
            return
        first = failed[0]
        in_grace = (self.state == EngineState.STARTING
                    and now - self.started_at < self.health.startup_grace)
        crashed = any(o.source == "unit" for o in failed)
        if in_grace and not crashed:
            return  # still starting: GPU discovery and model load take their time
        if self.promoting_from is not None and not in_grace:
            await self._rollback(f"not healthy within its grace: {first.reason}", first)
            return
        self.failures += 1
        self.last_failure = first
        if self.failures < self.health.failures:
            log.info("check failed", engine=self.name, tier=self.tier, reason=first.reason,
                     failures=self.failures)
            return
        reason = f"{first.reason} ({self.failures} checks in a row)"
        if self.promoting_from is not None:
            await self._rollback(reason, first)
        elif self.memory.pinned or self.restarts_on_tier < self.fallback.restarts_per_tier:
            await self._restart(reason, first)
        else:
            await self._demote(reason, first)

    @property
    def fallback(self) -> FallbackSection:
        return self.config.fallback

    def _became_healthy(self) -> None:
        tier = self.tier
        reason = f"serving on {tier}"
        if self.promoting_from is not None:
            reason = f"promoted from {self.promoting_from} to {tier}"
            self.promoting_from = None
            self.memory.promote_wait = None
        self.retry_attempt = 0
        self.retry_at = None
        usable = self.actuator.usable(self)
        best = policy.best_tier(self.chain, usable)
        if (best and tier != best and self.fallback.promote_after > 0
                and not self.memory.pinned and self.memory.next_promotion_at is None):
            self._schedule_promotion()
        if tier == best:
            self.memory.next_promotion_at = None
        self.transition(EngineState.HEALTHY, reason)

    async def _on_fault(self, fault: Observation) -> None:
        if fault.severity == FATAL_RESET:
            self.memory.reboot_required = True
            self.memory.reboot_evidence = fault.evidence or fault.reason
            log.error("reboot required", engine=self.name, tier=self.tier, reason=fault.reason)
        reason = fault.reason
        if fault.severity == RESET or self.memory.pinned:
            await self._restart(reason, fault)
        elif self.promoting_from is not None:
            await self._rollback(reason, fault)
        else:
            await self._demote(reason, fault)

    async def _restart(self, reason: str, why: Observation) -> None:
        self.restarts_on_tier += 1
        self.transition(EngineState.DEGRADED, f"{self.tier}: {reason}", why.evidence or None)
        assert self.tier is not None
        await self.start_on(self.tier, f"restarting on {self.tier}: {reason}")

    async def _demote(self, reason: str, why: Observation) -> None:
        self.transition(EngineState.DEGRADED, f"{self.tier}: {reason}", why.evidence or None)
        usable = self.actuator.usable(self)
        target = policy.tier_below(self.chain, usable, self.tier)
        if self.memory.reboot_required and self.tier not in GPU_TIERS and target is None:
            target = self.tier  # already off the GPU: stay, restart
        if target is None:
            self.fail(f"every usable tier exhausted; last: {self.tier}: {reason}")
            return
        if self.fallback.promote_after > 0 and policy.best_tier(self.chain, usable) != target:
            self._schedule_promotion()
        await self.start_on(target, f"demoted from {self.tier}: {reason}", why.evidence or None)

    def fail(self, reason: str) -> None:
        self.retry_attempt += 1
        wait = policy.retry_wait(self.retry_attempt, self.health.interval * 2)
        self.retry_at = self.clock() + wait
        self.memory.next_promotion_at = None
        self.transition(EngineState.FAILED, f"{reason}; retry {self.retry_attempt} in"
                        f" {wait:.0f}s")

    async def _retry_from_bottom(self) -> None:
        usable = self.actuator.usable(self)
        target = policy.bottom_tier(self.chain, usable)
        if target is None:
            self.fail("no usable tier on this host")
            return
        self.restarts_on_tier = 0
        await self.start_on(target, f"retry {self.retry_attempt} from the bottom: {target}")

    # ------------------------------------------------------------------ the way back up

    async def _maybe_promote(self) -> None:
        due = self.memory.next_promotion_at
        if (due is None or self.memory.pinned or self.fallback.promote_after <= 0
                or self.wall() < due):
            return
        await self.actuator.reprobe()
        usable = self.actuator.usable(self)
        best = policy.best_tier(self.chain, usable)
        if best is None or self.tier is None or not policy.is_above(self.chain, best, self.tier):
            self._schedule_promotion()
            return
        await self.promote(best, "promote_after elapsed")

    def _schedule_promotion(self) -> None:
        """The next try of the best tier, after the current wait (``promote_after`` at first)."""
        wait = self.memory.promote_wait or self.fallback.promote_after
        self.memory.promote_wait = wait
        self.memory.next_promotion_at = self.wall() + wait

    async def promote(self, tier: str, why: str) -> None:
        self.promoting_from = self.tier
        self.memory.next_promotion_at = None
        await self.start_on(tier, f"promotion: trying {tier} again ({why})")

    async def _rollback(self, reason: str, why: Observation) -> None:
        back = self.promoting_from
        self.promoting_from = None
        wait = policy.next_promotion_wait(self.memory.promote_wait or
                                          self.fallback.promote_after,
                                          self.fallback.promote_backoff)
        self.memory.promote_wait = wait
        self.memory.next_promotion_at = self.wall() + wait
        self.transition(EngineState.DEGRADED, f"{self.tier}: promotion failed: {reason}",
                        why.evidence or None)
        assert back is not None
        await self.start_on(back, f"back to {back} after a failed promotion; next try in"
                            f" {wait:.0f}s")

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Check every ``interval``, or at once when woken (log finding, operator action)."""
        try:
            while True:
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad check must not end supervision
                    log.exception("check cycle failed", engine=self.name, error=str(exc))
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.health.interval)
                except TimeoutError:
                    pass
        finally:
            if self.canary_task is not None:
                self.canary_task.cancel()
