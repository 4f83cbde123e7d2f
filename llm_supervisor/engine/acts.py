"""A decision carried out: the only place a check changes the engine (``act``), and the moves
between checks a decision names — a due retry, a blocked engine's retry, a pull, the way
back up (probation passed, a promotion due) and back down (a failed promotion).

Each act reads the engine's ``Core`` and changes it through its own few moves (``transition``,
``start_on``, ``fail``, ``block``); decisions come from ``decide`` (pure). Nothing here calls
the engine's machine.
"""

from __future__ import annotations

import asyncio

import structlog

from llm_supervisor import decide, policy
from llm_supervisor.causes import Cause, Finding
from llm_supervisor.checks import health, pull
from llm_supervisor.decide import Decision, Do
from llm_supervisor.engine.core import Core, reason_of
from llm_supervisor.states import EngineState

log = structlog.get_logger("llm-supervisor")


async def act(e: Core, d: Decision) -> None:
    """Carry a check's decision out."""
    if d.do == Do.WAIT:
        return
    if d.do in (Do.OK, Do.HEALTHY):
        passed(e, d)
        return
    finding = d.finding
    assert finding is not None
    if d.skip_tier and e.tier:
        e.memory.skipped[e.tier] = reason_of(finding.cause, finding.detail)
    if d.reboot:
        reboot_required(e, finding)
    if d.do == Do.COUNT:
        e.failures = d.failures
        e.last_failure = d.observation
        log.info("check failed", engine=e.name, tier=e.tier, cause=finding.cause.value,
                 reason=finding.text(), failures=e.failures)
    elif d.do == Do.HOLD:
        e.transition(EngineState.DEGRADED, finding.cause, finding.detail,
                     evidence=finding.evidence, fix="unpin it to let it fall back",
                     tier_prefix=True)
    elif d.do in (Do.RESTART, Do.DEMOTE, Do.ROLLBACK, Do.PROMOTE):
        await switch(e, d, finding)
    elif d.do == Do.PULL:
        start_pull(e)
    elif d.do == Do.STAND_DOWN:
        stand_down(e, finding)
    else:
        await e.block(finding)


async def switch(e: Core, d: Decision, finding: Finding) -> None:
    """A decision that restarts the engine's unit: on its tier, down, back, or (after its
    drain) up, or as an operator asked (after its drain)."""
    if d.do == Do.PROMOTE and d.target is not None:  # after its drain
        await promote(e, d.target, finding.detail)
    elif finding.cause in (Cause.OPERATOR, Cause.RELOAD) and d.target is not None:
        await e.start_on(d.target, finding.cause, finding.detail)  # asked, after its drain
    elif d.do == Do.RESTART:
        await restart(e, finding)
    elif d.do == Do.DEMOTE:
        await demote(e, finding, d.target)
    elif d.do == Do.ROLLBACK:
        await rollback(e, finding, d)


def stand_down(e: Core, finding: Finding) -> None:
    """Stopped outside the daemon (``systemctl stop``, a clean exit): the operator's hand.
    Stopped, held so (no restart, no count, no demotion) until someone starts it."""
    e.memory.stopped_by = finding.text()
    e.held_pid = 0  # it is down: any process from now on is someone's start
    e.forget_checks()
    e.transition(EngineState.STOPPED, finding.cause, finding.detail, evidence=finding.evidence,
                 fix=finding.fix)


async def held_tick(e: Core) -> None:
    """A check of an engine held stopped: supervised again once someone started its unit
    (``systemctl start``); what its log said meanwhile is no concern."""
    e.intake.take()
    unit = await e.actuator.unit_status(e.cfg)
    if not (unit.running or unit.active_state == "activating") or \
            (unit.main_pid and unit.main_pid == e.held_pid):  # the stop is still under way
        return
    e.memory.stopped_by = None
    e.forget_checks()
    e.started_at = e.clock()
    e.intake.began(unit.main_started or e.started_at)  # its lines since its process began
    e.transition(EngineState.STARTING, Cause.OPERATOR, f"started outside the daemon"
                 f" ({unit.active_state}/{unit.sub_state}): supervised again", plain=True)


def passed(e: Core, d: Decision) -> None:
    """A check that passed: the failure count starts again; healthy at last, or a healthy
    engine's restart budget refilled over time."""
    e.failures = 0
    if d.do == Do.HEALTHY and e.state != EngineState.HEALTHY:
        became_healthy(e)
    elif e.state == EngineState.HEALTHY:
        refill_restarts(e)


def refill_restarts(e: Core) -> None:
    """Healthy for ``restarts_refill_after`` on this tier: its restart budget is whole again
    (one rule for the budget over time; the count itself is ``decide``'s)."""
    if e.restarts_on_tier and e.clock() - e.healthy_at >= e.fallback.restarts_refill_after:
        log.info("restart budget refilled", engine=e.name, tier=e.tier,
                 restarts=e.restarts_on_tier)
        e.restarts_on_tier = 0


def became_healthy(e: Core) -> None:
    e.healthy_at = e.clock()
    e.intake.start_facts.clear()  # the start worked: what its log said is no cause
    tier, memory = e.tier, e.memory
    cause, detail = Cause.START, f"serving on {tier}"
    if e.cause is not None and (e.cause == Cause.RETRY or e.cause.blocking):
        cause = Cause.RECOVERED  # after a retry, a pull, a blocked spell
    if e.promoting() and memory.probation_until is None:
        cause, detail = Cause.PROMOTION, f"promoted from {memory.promoted_from} to {tier}"
        memory.probation_until = e.wall() + e.fallback.probation
    memory.retry_attempt = 0
    memory.retry_at = None
    best = policy.best_tier(e.chain, e.usable())
    if (best and tier != best and e.fallback.promote_after > 0
            and not memory.pinned and memory.next_promotion_at is None):
        schedule_promotion(e)
    if tier == best:
        memory.next_promotion_at = None
        memory.demoted_from = memory.demoted_at = None
    e.transition(EngineState.HEALTHY, cause, detail, plain=True)


def reboot_required(e: Core, finding: Finding) -> None:
    e.memory.reboot_required = True
    e.memory.reboot_evidence = str(finding.evidence or finding.detail)
    e.memory.reboot_boot_id = e.actuator.boot_id()
    e.memory.reboot_card = finding.facts.get("card") or e.memory.reboot_card
    log.error("reboot required", engine=e.name, tier=e.tier, cause=finding.cause.value,
              card=e.memory.reboot_card, reason=finding.text())


async def restart(e: Core, finding: Finding) -> None:
    e.restarts_on_tier += 1
    if finding.cause == Cause.SLOW and e.tier is not None:
        e.speedbook.restarted(e.tier)  # did the restart change it? (checks.speed)
    e.transition(EngineState.DEGRADED, finding.cause, finding.detail,
                 evidence=finding.evidence, tier_prefix=True)
    assert e.tier is not None
    await e.start_on(e.tier, finding.cause, f"restarting on {e.tier}: {finding.text()}")


async def demote(e: Core, finding: Finding, target: str | None) -> None:
    """Down to ``target`` (decided), or, with none left, every usable tier exhausted."""
    e.transition(EngineState.DEGRADED, finding.cause, finding.detail,
                 evidence=finding.evidence, fix=finding.fix, tier_prefix=True)
    if target is None:
        await e.fail(finding)
        return
    if e.fallback.promote_after > 0 and policy.best_tier(e.chain, e.usable()) != target:
        schedule_promotion(e)
    if e.memory.demoted_from is None and e.tier != target:
        e.memory.demoted_from, e.memory.demoted_at = e.tier, e.wall()
    await e.start_on(target, finding.cause, f"demoted from {e.tier}: {finding.text()}",
                     evidence=finding.evidence)


def due(e: Core) -> bool:
    """A failed or blocked engine's retry is due."""
    return e.memory.retry_at is not None and e.wall() >= e.memory.retry_at


async def retry(e: Core, d: Decision) -> None:
    """A due retry, as decided: start on its target, or fail again when none is left."""
    if d.target is None:
        await e.fail(Finding(Cause.CONFIG, "no usable tier on this host"))
        return
    failed = e.state == EngineState.FAILED
    if failed:
        e.restarts_on_tier = 0
    attempt = e.memory.retry_attempt
    why = (f"retry {attempt} from the bottom: {d.target}" if failed else
           f"retry {attempt} after {(e.cause or Cause.CONFIG).description}")
    await e.start_on(d.target, Cause.RETRY, why)


async def blocked_tick(e: Core) -> None:
    """A blocked engine's check: retried when due or when its cause cleared."""
    cause = e.cause or Cause.CONFIG
    if not (due(e) or await cleared(e, cause)):
        return
    d = decide.retry_blocked(e.situation(), e.serves_while(cause))
    if d.do == Do.RECHECK:
        e.transition(EngineState.STARTING, Cause.RETRY,
                     f"retry {e.memory.retry_attempt} after {cause.description}")
        return
    await retry(e, d)


async def cleared(e: Core, cause: Cause) -> bool:
    if cause != Cause.MODEL_MISSING or e.cfg.kind == "llama-server":
        return await e.actuator.cleared(e.cfg, e.tier, cause)  # llama-server: its -m file
    if e.cfg.kind != "ollama":
        return False
    return await health.model_listed(e.http, e.cfg, e.checking.timeout)


def start_pull(e: Core) -> None:
    e.pull_progress = {"model": e.cfg.model, "status": "starting", "completed": 0, "total": 0}
    e.transition(EngineState.STARTING, Cause.MODEL_MISSING,
                 f"pulling {e.cfg.model} (pull = true)")
    e.pull_task = asyncio.create_task(pull_model(e), name=f"pull-{e.name}")


async def pull_model(e: Core) -> None:
    """Pull the model through the engine's API; then check again (or block)."""
    assert e.pull_progress is not None
    model = e.cfg.model

    def step(status: str, share: int) -> None:  # each step in the record as it comes
        e.record("pull", to=status, cause=Cause.MODEL_MISSING.value,
                 reason=f"pulling {model}: {status} ({share}%)")

    error = await pull.pull(e.http, e.cfg.endpoint, model, e.checking.timeout,
                            e.pull_progress, step)
    async with e.lock:
        e.pull_task = None
        if error is None:
            e.transition(EngineState.STARTING, Cause.RETRY, f"pulled {model}; checking again")
            e.loading(e.canary.launch(e.cfg, e.checking))
        else:
            await e.block(Finding(
                Cause.MODEL_MISSING, f"pulling {model} failed: {error}",
                fix=f"check the model name, then `ollama pull {model}`"))
        e.wake.set()


# ---------------------------------------------------------------------- the way back up


async def way_up(e: Core, d: Decision) -> None:
    """Between checks of a healthy engine: a probation passed, or a promotion due."""
    if d.do == Do.PASSED:
        log.info("promotion held through probation", engine=e.name, tier=e.tier)
        e.record("probation", to="passed", cause=Cause.PROMOTION.value,
                 reason=f"{e.tier} held for {e.fallback.probation:.0f}s")
        e.memory.promoted_from = e.memory.probation_until = None
        e.memory.promote_wait = None
        await way_up(e, decide.between(e.situation(tiers=False), schedule(e, probation=False)))
    elif d.do == Do.PROBE:
        await e.actuator.reprobe()  # what the host has now
        chosen = decide.promotion(e.chain, e.usable(), e.tier)
        if chosen.do == Do.PROMOTE and chosen.target is not None:
            if e.config.agent.enabled:  # a balancer asks: its users go first (the drain)
                e.begin_drain(Decision(Do.PROMOTE, Finding(Cause.PROMOTION,
                                                           "promote_after elapsed"),
                                       chosen.target))
                return
            await promote(e, chosen.target, "promote_after elapsed")
        else:
            schedule_promotion(e)


def schedule(e: Core, *, probation: bool = True) -> decide.Schedule:
    """When the way up moves next, as the decision reads it."""
    return decide.Schedule(e.wall(), e.memory.probation_until if probation else None,
                           e.memory.next_promotion_at, e.fallback.promote_after)


def schedule_promotion(e: Core) -> None:
    """The next try of the best tier, after the current wait (``promote_after`` at first)."""
    wait = e.memory.promote_wait or e.fallback.promote_after
    e.memory.promote_wait = wait
    e.memory.next_promotion_at = e.wall() + wait


async def promote(e: Core, tier: str, why: str) -> None:
    e.memory.promoted_from = e.tier
    e.memory.probation_until = None
    e.memory.next_promotion_at = None
    await e.start_on(tier, Cause.PROMOTION, f"trying {tier} again ({why})")


async def rollback(e: Core, finding: Finding, d: Decision) -> None:
    """A promotion failed: the next try waits ``promote_backoff`` times longer; back to the
    tier it came from, or (that one gone too) down as decided."""
    back = e.memory.promoted_from
    e.memory.promoted_from = e.memory.probation_until = None
    wait = policy.next_promotion_wait(e.memory.promote_wait or e.fallback.promote_after,
                                      e.fallback.promote_backoff)
    e.memory.promote_wait = wait
    e.memory.next_promotion_at = e.wall() + wait
    detail = f"{d.why}: {finding.text()}" if d.why else finding.text()
    e.transition(EngineState.DEGRADED, Cause.PROMOTION_FAILED, detail,
                 evidence=finding.evidence, tier_prefix=True)
    if d.demote or d.target is None:
        await demote(e, finding, d.target)
        return
    await e.start_on(d.target, Cause.PROMOTION_FAILED, f"back to {back}; next try in"
                     f" {wait:.0f}s ({finding.text()})", evidence=finding.evidence)
