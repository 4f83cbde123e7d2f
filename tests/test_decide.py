"""The decision alone: a pure function of a situation and observations (no engine, no I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.decide import Decision, Do, Situation, decide
from llm_supervisor.states import EngineState

LIVE = Observation(True, "liveness")
ON_ROCM = Situation(state=EngineState.HEALTHY, tier="rocm", chain=("rocm", "vulkan", "cpu"),
                    usable=("rocm", "vulkan", "cpu"), generation_passed=True)


def bad(cause: Cause, source: str = "log") -> Observation:
    return Observation.bad(source, cause, "detail")


@pytest.mark.parametrize(("situation", "found", "do", "target"), [
    (ON_ROCM, [LIVE], Do.HEALTHY, None),
    (replace(ON_ROCM, generation_passed=False), [LIVE], Do.OK, None),
    (ON_ROCM, [], Do.WAIT, None),                                      # nothing answered yet
    (ON_ROCM, [LIVE, bad(Cause.GPU_FAULT)], Do.DEMOTE, "vulkan"),
    (ON_ROCM, [LIVE, bad(Cause.RESET)], Do.RESTART, "rocm"),
    (ON_ROCM, [LIVE, bad(Cause.FATAL_RESET)], Do.DEMOTE, "cpu"),       # off the GPU
    (ON_ROCM, [LIVE, bad(Cause.HANG, "canary")], Do.COUNT, None),
    (replace(ON_ROCM, failures=2), [bad(Cause.HANG, "canary")], Do.RESTART, "rocm"),
    (replace(ON_ROCM, failures=2, restarts_on_tier=1), [bad(Cause.STALL, "canary")],
     Do.DEMOTE, "vulkan"),
    (replace(ON_ROCM, tier="cpu", failures=2, restarts_on_tier=1), [bad(Cause.CRASH, "unit")],
     Do.DEMOTE, None),                                                 # chain exhausted
    (replace(ON_ROCM, state=EngineState.STARTING, in_grace=True),
     [bad(Cause.UNRESPONSIVE, "liveness")], Do.WAIT, None),            # not answering yet
    (replace(ON_ROCM, state=EngineState.STARTING, in_grace=True),
     [LIVE, bad(Cause.HANG, "canary")], Do.COUNT, None),               # a hung load counts
    (replace(ON_ROCM, pinned="rocm"), [LIVE, bad(Cause.GPU_FAULT)], Do.RESTART, "rocm"),
    (replace(ON_ROCM, pinned="rocm"), [LIVE, bad(Cause.PLACEMENT)], Do.HOLD, None),
    (ON_ROCM, [LIVE, bad(Cause.MODEL_MISSING, "canary")], Do.BLOCK, None),
    (replace(ON_ROCM, may_pull=True), [LIVE, bad(Cause.MODEL_MISSING, "canary")], Do.PULL,
     None),
    (replace(ON_ROCM, promoted_from="vulkan"), [LIVE, bad(Cause.GPU_FAULT)], Do.ROLLBACK,
     "vulkan"),
    (replace(ON_ROCM, promoted_from="vulkan", state=EngineState.STARTING),
     [bad(Cause.UNRESPONSIVE, "liveness")], Do.ROLLBACK, "vulkan"),    # not healthy in grace
    (replace(ON_ROCM, promoted_from="vulkan"), [LIVE, bad(Cause.FATAL_RESET)], Do.ROLLBACK,
     "cpu"),                                                           # its tier is gone too
])
def test_decide(situation, found, do, target):
    decision = decide(situation, found)
    assert decision.do == do, decision
    if do in (Do.RESTART, Do.DEMOTE, Do.ROLLBACK):
        assert decision.target == target, decision


def test_the_most_serious_observation_decides_and_the_count_is_returned():
    decision = decide(ON_ROCM, [bad(Cause.HANG, "canary"), bad(Cause.FATAL_RESET)])
    assert decision.do == Do.DEMOTE and decision.reboot and decision.target == "cpu"
    counted = decide(replace(ON_ROCM, failures=1), [bad(Cause.SLOW, "canary")])
    assert counted.do == Do.COUNT and counted.failures == 2
    backend = decide(ON_ROCM, [LIVE, bad(Cause.BACKEND_MISMATCH, "backend")])
    assert backend.skip_tier and backend.target == "vulkan"
    assert "(3 checks in a row)" in decide(replace(ON_ROCM, failures=2),
                                           [bad(Cause.HANG, "canary")]).finding.detail


def test_between_checks_the_way_back_up_and_the_retries():
    from llm_supervisor.decide import Schedule, between, promotion, retry_blocked, retry_failed

    on_vulkan = replace(ON_ROCM, tier="vulkan")
    assert between(on_vulkan, Schedule(now=100, next_promotion_at=200,
                                       promote_after=60)).do == Do.WAIT
    assert between(on_vulkan, Schedule(now=200, next_promotion_at=200,
                                       promote_after=60)).do == Do.PROBE
    assert between(replace(on_vulkan, pinned="vulkan"),
                   Schedule(now=300, next_promotion_at=200, promote_after=60)).do == Do.WAIT
    assert between(on_vulkan, Schedule(now=300, next_promotion_at=200,
                                       promote_after=0)).do == Do.WAIT  # "0" = never
    assert between(ON_ROCM, Schedule(now=500, probation_until=400)).do == Do.PASSED
    assert promotion(ON_ROCM.chain, ("rocm", "vulkan", "cpu"), "vulkan") == \
        Decision(Do.PROMOTE, target="rocm")
    assert promotion(ON_ROCM.chain, ("vulkan", "cpu"), "vulkan") == Decision(Do.POSTPONE)
    assert retry_failed(ON_ROCM.chain, ("rocm", "vulkan", "cpu")).target == "cpu"
    assert retry_failed(ON_ROCM.chain, ()).target is None
    blocked = replace(ON_ROCM, state=EngineState.BLOCKED, tier="vulkan")
    assert retry_blocked(blocked, serves=True).do == Do.RECHECK
    assert retry_blocked(blocked, serves=False).target == "vulkan"
