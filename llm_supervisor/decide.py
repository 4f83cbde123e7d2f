"""What one check decides: a pure function of the engine's situation and the check's
observations, returning a ``Decision``. No I/O, no clock, no mutation — the engine carries the
decision out (``Engine.act``) and records it once.

The rule (docs/contract.md §5; in depth, docs/decisions.md):

- nothing failed: the failure count goes back to 0; the engine is healthy once a generation
  worked since its start (``generation_passed``); while nothing answered yet, no verdict;
- the most serious failed observation decides (``causes.precedence``), by its cause's action:
  BLOCK → blocked (or a pull, for a missing model with ``pull = true``); REBOOT → reboot
  required, then down to a tier off the GPU; RESTART → restart on the tier; DEMOTE → one
  usable tier down at once (a pinned engine restarts instead, or holds when a restart
  changes nothing); COUNT → one more failed check — ``failures`` in a row restart the tier
  ``restarts_per_tier`` times, then demote;
- within the start-up grace an engine that does not answer yet (``NOT_YET``) gets no verdict;
- a promotion that fails (not healthy within its grace, or failing on probation) goes back to
  the tier it came from (``ROLLBACK``), unless that tier is gone or the GPU needs a reboot;
- a demotion with no usable tier below is a failure of the whole chain (``DEMOTE`` with no
  ``target``).

Between checks, the same way: a failed engine whose retry is due starts again from the bottom
of the chain (``retry_failed``); a blocked one whose retry is due or whose cause cleared starts
where it should (``retry_blocked``) or, while it keeps serving, lets a canary tell; a healthy
one passes its probation or, ``promote_after`` later, tries the best tier again (``between``,
then ``promotion`` with what a fresh probe says).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from llm_supervisor.causes import Action, Cause, Finding, Observation, precedence
from llm_supervisor.policy import best_tier, bottom_tier, is_above, start_tier, tier_below
from llm_supervisor.states import EngineState
from llm_supervisor.tiers import GPU_TIERS

# what the start-up grace excuses: an engine that does not answer yet. A crash, a generation
# past its deadline, a measured rate are verdicts in every phase.
NOT_YET = frozenset({Cause.UNRESPONSIVE, Cause.GENERATION})
# the operator holds the tier and a restart changes nothing: say so, do nothing
RESTART_CHANGES_NOTHING = frozenset({Cause.BACKEND_MISMATCH, Cause.PLACEMENT})
# an engine that serves, only worse (too slow, on the CPU, on the wrong backend): a balancer
# in front may move its users away before the switch (``[agent]``: the drain). Anything else
# — a hang, a crash, a GPU fault, garbage — switches at once: nothing good is being served.
# An operator's switch (restart, demote, pin, promote), a promotion and a reload's restart
# may wait as well.
PLANNED = frozenset({Cause.SLOW, Cause.PLACEMENT, Cause.BACKEND_MISMATCH, Cause.DISCOVERY,
                     Cause.OPERATOR, Cause.PROMOTION, Cause.RELOAD})


class Do(StrEnum):
    WAIT = "wait"          # no verdict: nothing answered yet, or excused by the grace
    OK = "ok"              # the check passed: the failure count goes back to 0
    HEALTHY = "healthy"    # passed, and a generation worked: healthy (if not already)
    COUNT = "count"        # one more failed check, not yet enough to act
    RESTART = "restart"    # restart on ``target`` (the tier it is on)
    DEMOTE = "demote"      # go to ``target``; None: every usable tier exhausted (failed)
    ROLLBACK = "rollback"  # a promotion failed: back to ``target`` (or down, ``demote``)
    HOLD = "hold"          # pinned, and a restart changes nothing: degraded, with the fix
    BLOCK = "block"        # no tier change fixes it: blocked, retried with backoff
    PULL = "pull"          # the model is missing and the engine may pull it
    STAND_DOWN = "stand_down"  # stopped outside the daemon: stopped, held until started
    RETRY = "retry"        # failed or blocked, and its retry is due: start on ``target``
    RECHECK = "recheck"    # blocked while it serves (a model, a key): let a canary tell
    PASSED = "passed"      # a promotion held through its probation
    PROBE = "probe"        # promote_after elapsed: probe the host afresh (``promotion``)
    PROMOTE = "promote"    # the fresh probe offers a better tier: try ``target``
    POSTPONE = "postpone"  # the fresh probe offers nothing better: the next try, later


SWITCHES = frozenset({Do.RESTART, Do.DEMOTE})  # decisions that restart the engine's unit


def planned(d: Decision) -> bool:
    """A switch that may wait for the engine's work to end: a promotion, or a switch for a
    cause of ``PLANNED``."""
    return d.do in (*SWITCHES, Do.PROMOTE) and d.target is not None \
        and d.finding is not None and d.finding.cause in PLANNED


@dataclass(frozen=True)
class Situation:
    """What a decision reads of an engine: plain data, taken before the decision."""

    state: EngineState
    tier: str | None
    chain: tuple[str, ...]
    usable: tuple[str, ...]
    pinned: str | None = None
    promoted_from: str | None = None  # set while a promotion is on trial (load or probation)
    in_grace: bool = False
    failures: int = 0                 # consecutive failed checks before this one
    failures_needed: int = 3
    restarts_on_tier: int = 0
    restarts_per_tier: int = 1
    generation_passed: bool = False
    reboot_required: bool = False
    may_pull: bool = False


@dataclass(frozen=True)
class Decision:
    do: Do
    finding: Finding | None = None
    target: str | None = None
    failures: int = 0          # the failure count after this check
    skip_tier: bool = False    # the engine's build cannot use this tier: skip it from now on
    reboot: bool = False       # a failed GPU reset: reboot required before any GPU tier
    demote: bool = False       # ROLLBACK: the tier it came from is gone; down from here
    why: str = ""              # ROLLBACK: what made the promotion fail
    observation: Observation | None = None  # the failed observation that decided


def decide(s: Situation, found: Sequence[Observation]) -> Decision:
    failed = [o for o in found if not o.ok and o.finding is not None]
    if not failed:
        if not any(o.source == "liveness" for o in found):
            return Decision(Do.WAIT)  # the unit is still activating: nothing answered yet
        return Decision(Do.HEALTHY if s.generation_passed else Do.OK)
    worst = min(failed, key=lambda o: precedence(o.finding.cause))  # type: ignore[union-attr]
    finding = worst.finding
    assert finding is not None
    action = finding.cause.action
    if action == Action.STAND_DOWN:
        return Decision(Do.STAND_DOWN, finding, observation=worst)
    if action == Action.BLOCK:
        pull = finding.cause == Cause.MODEL_MISSING and s.may_pull
        return Decision(Do.PULL if pull else Do.BLOCK, finding, observation=worst)
    if action == Action.REBOOT:
        return _down(s, finding, reboot=True, observation=worst)
    if action == Action.RESTART:
        return Decision(Do.RESTART, finding, target=s.tier, observation=worst)
    if action == Action.DEMOTE:
        skip = finding.cause == Cause.BACKEND_MISMATCH and s.tier is not None
        if s.pinned and finding.cause in RESTART_CHANGES_NOTHING:
            return Decision(Do.HOLD, finding, skip_tier=skip, observation=worst)
        if s.pinned:
            return Decision(Do.RESTART, finding, target=s.tier, skip_tier=skip,
                            observation=worst)
        return _down(s, finding, skip_tier=skip, observation=worst)
    return _count(s, finding, worst)


def _count(s: Situation, finding: Finding, worst: Observation) -> Decision:
    if s.in_grace and finding.cause in NOT_YET:
        return Decision(Do.WAIT, finding, failures=s.failures, observation=worst)
    if s.promoted_from and not s.in_grace and s.state == EngineState.STARTING:
        return _rollback(s, finding, why="not healthy within its grace", observation=worst)
    failures = s.failures + 1
    if failures < s.failures_needed:
        return Decision(Do.COUNT, finding, failures=failures, observation=worst)
    counted = replace(finding, detail=f"{finding.detail} ({failures} checks in a row)")
    if s.pinned or s.restarts_on_tier < s.restarts_per_tier:
        if s.promoted_from and not s.pinned:
            return _rollback(s, counted, failures=failures, observation=worst)
        return Decision(Do.RESTART, counted, target=s.tier, failures=failures,
                        observation=worst)
    return _down(s, counted, failures=failures, observation=worst)


def _usable(s: Situation, *, reboot: bool) -> tuple[str, ...]:
    """The tiers usable once this decision is carried out (a reboot rules the GPU out)."""
    if reboot or s.reboot_required:
        return tuple(t for t in s.usable if t not in GPU_TIERS)
    return s.usable


def _down(s: Situation, finding: Finding, *, reboot: bool = False, skip_tier: bool = False,
          failures: int = 0, observation: Observation | None = None) -> Decision:
    if s.promoted_from:
        return _rollback(s, finding, reboot=reboot, skip_tier=skip_tier, failures=failures,
                         observation=observation)
    usable = _usable(s, reboot=reboot)
    target = tier_below(s.chain, usable, s.tier)
    if (reboot or s.reboot_required) and s.tier not in GPU_TIERS and target is None:
        target = s.tier  # already off the GPU: stay, restart
    return Decision(Do.DEMOTE, finding, target=target, failures=failures, reboot=reboot,
                    skip_tier=skip_tier, observation=observation)


def _rollback(s: Situation, finding: Finding, *, why: str = "", reboot: bool = False,
              skip_tier: bool = False, failures: int = 0,
              observation: Observation | None = None) -> Decision:
    back = s.promoted_from
    usable = _usable(s, reboot=reboot)
    if finding.cause == Cause.FATAL_RESET or back not in usable:
        # the tier it came from is gone too: down from here, as any demotion
        down = _down(replace(s, promoted_from=None), finding, reboot=reboot,
                     skip_tier=skip_tier, failures=failures, observation=observation)
        return replace(down, do=Do.ROLLBACK, demote=True, why=why)
    return Decision(Do.ROLLBACK, finding, target=back, failures=failures, reboot=reboot,
                    skip_tier=skip_tier, why=why, observation=observation)


def retry_failed(chain: Sequence[str], usable: Sequence[str]) -> Decision:
    """Every usable tier was exhausted and the retry is due: from the bottom of the chain."""
    return Decision(Do.RETRY, target=bottom_tier(chain, usable))


def retry_blocked(s: Situation, serves: bool) -> Decision:
    """A blocked engine whose retry is due or whose cause cleared."""
    if serves:  # the engine runs (a missing model, a wrong key): a canary tells
        return Decision(Do.RECHECK)
    return Decision(Do.RETRY, target=start_tier(s.chain, s.usable, pinned=s.pinned,
                                                current=s.tier))


@dataclass(frozen=True)
class Schedule:
    """The wall-clock facts of the way back up."""

    now: float
    probation_until: float | None = None
    next_promotion_at: float | None = None
    promote_after: float = 0.0


def between(s: Situation, t: Schedule) -> Decision:
    """After a check that left the engine healthy: its probation passed, a promotion due, or
    nothing. A promotion asks for a fresh probe first (``promotion`` decides on it)."""
    if t.probation_until is not None and t.now >= t.probation_until:
        return Decision(Do.PASSED)
    due = t.next_promotion_at
    if (due is None or s.pinned or t.promote_after <= 0 or t.now < due
            or s.promoted_from is not None):
        return Decision(Do.WAIT)
    return Decision(Do.PROBE)


def promotion(chain: Sequence[str], usable: Sequence[str], tier: str | None) -> Decision:
    """With what the host has now: the best usable tier, when it is above this one."""
    best = best_tier(chain, usable)
    if best is None or tier is None or not is_above(chain, best, tier):
        return Decision(Do.POSTPONE)  # nothing better now: wait another round
    return Decision(Do.PROMOTE, target=best)
