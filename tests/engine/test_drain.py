"""Planned switches drain first (``[agent]``): an engine that serves, only worse, is taken
out of the balancer (weight 0) and switched once its requests in flight are done, or at
``drain_timeout``; a fault that cannot wait switches at once; without a balancer, no drain."""

from __future__ import annotations

from fakes import SETTINGS, settle, started

from llm_supervisor import config
from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks.progress import Reading
from llm_supervisor.control.agent import agent_line, readyz
from llm_supervisor.states import EngineState

AGENT = '\n[agent]\nenabled = true\ninterval = "2s"\ndrain_timeout = "30s"\n'


def behind_a_balancer(engine, in_flight: list[int]) -> None:
    """The engine's config with [agent] on; ``in_flight[0]`` requests in flight, as the
    kernel's view of its clients says."""
    with_agent = config.loads(SETTINGS.format(rate=0, model="qwen2.5:7b-instruct",
                                              pull="false") + AGENT)
    engine.configure(with_agent, with_agent.engines[0])

    async def view(cfg):
        return Reading(in_flight=in_flight[0], source="tcp")

    engine.canary.view = view


async def draining(in_flight: list[int]):
    """An engine found on the CPU (placement) while the balancer asks; once the drain
    begins, ``in_flight[0]`` requests are in flight (before it, none: a busy engine's
    canary waits behind its users)."""
    engine, actuator, api, clock, wall = await started()
    then, in_flight[0] = in_flight[0], 0
    behind_a_balancer(engine, in_flight)
    api.size_vram = 0  # it computes on the CPU now: serving, only slowly (placement)
    await settle(engine)
    in_flight[0] = then
    return engine, actuator, api, clock


async def test_a_planned_switch_waits_for_the_requests_in_flight():
    in_flight = [2]
    engine, actuator, api, clock = await draining(in_flight)
    assert engine.drain is not None and actuator.switches == ["rocm"]
    view = engine.view()
    assert view.draining and engine.state == EngineState.HEALTHY
    assert agent_line(view, None).startswith("up 0%") and readyz(view)[0] == 503
    began = [e for e in actuator.events if e["type"] == "drain"]
    assert began and began[0]["to"] == "vulkan" and began[0]["cause"] == "placement"
    for _ in range(5):
        await settle(engine)
    assert actuator.switches == ["rocm"]  # two requests still in flight
    in_flight[0] = 0
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan"] and engine.drain is None
    done = [e for e in actuator.events if e["type"] == "drain"][-1]
    assert done["to"] == "done" and "nothing in flight" in done["reason"]
    assert not engine.view().draining


async def test_a_drain_ends_at_its_timeout_whatever_is_in_flight():
    engine, actuator, api, clock = await draining([1])
    assert engine.drain is not None
    start = clock.now
    while len(actuator.switches) == 1:
        await settle(engine)
        assert clock.now - start <= 30 + 3
    assert actuator.switches == ["rocm", "vulkan"]
    assert "timed out after 30s" in [e for e in actuator.events if e["type"] == "drain"][-1][
        "reason"]


async def test_a_fault_that_cannot_wait_switches_at_once():
    engine, actuator, api, clock = await draining([3])
    assert engine.drain is not None
    engine.intake.finding(Observation.bad("log", Cause.GPU_FAULT, "ROCm error"), None)
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan"] and engine.drain is None
    assert [e["to"] for e in actuator.events if e["type"] == "drain"] == ["vulkan", "cancelled"]
    assert engine.memory.cause == "gpu_fault"


async def test_without_a_balancer_a_planned_switch_goes_at_once():
    engine, actuator, api, clock, wall = await started()
    api.size_vram = 0
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan"] and engine.drain is None
    assert not [e for e in actuator.events if e["type"] == "drain"]


async def test_a_promotion_drains_first_too():
    """On vulkan after a demotion, promote_after elapsed: the way back up waits for the
    requests in flight like any planned switch, then tries rocm."""
    engine, actuator, api, clock, wall = await started(tier="vulkan")
    in_flight = [1]
    behind_a_balancer(engine, in_flight)
    engine.memory.next_promotion_at = wall.now  # due
    await settle(engine)
    assert engine.drain is not None and engine.drain.decision.target == "rocm"
    assert actuator.switches == ["vulkan"]
    for _ in range(4):
        await settle(engine)
    assert actuator.switches == ["vulkan"]
    in_flight[0] = 0
    await settle(engine)
    assert actuator.switches == ["vulkan", "rocm"] and engine.memory.promoted_from == "vulkan"
    assert [e["to"] for e in actuator.events if e["type"] == "drain"] == ["rocm", "done"]


async def test_an_operators_restart_drains_first_and_says_so_at_once():
    from llm_supervisor.intents import Intent

    engine, actuator, api, clock, wall = await started()
    in_flight = [1]
    behind_a_balancer(engine, in_flight)
    answer = await engine.apply(Intent("restart", 0))
    assert answer.startswith("draining: restarted once the requests in flight are done")
    assert actuator.switches == ["rocm"] and engine.drain is not None
    for _ in range(4):
        await settle(engine)
    assert actuator.switches == ["rocm"]
    in_flight[0] = 0
    await settle(engine)
    assert actuator.switches == ["rocm", "rocm"] and engine.memory.cause == "operator"
    assert engine.restarts_on_tier == 0  # the operator's: no restart counted against the tier
    clock.now += 11  # past its grace: healthy again
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY
    in_flight[0] = 1
    answer = await engine.apply(Intent("pin", 0, "vulkan"))
    assert answer.startswith("draining: pinned to vulkan") and engine.memory.pinned == "vulkan"
    in_flight[0] = 0
    for _ in range(3):
        await settle(engine)
    assert actuator.switches[-1] == "vulkan"
    # an engine that is not serving is switched at once: there is nobody to drain
    answer = await engine.apply(Intent("restart", 0))
    assert answer == "restarted" and engine.drain is None
