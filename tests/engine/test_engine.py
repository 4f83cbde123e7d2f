"""The engine state machine and its decisions, with a fake actuator (the one interface we own
for side effects), a manual clock and httpx.MockTransport for the engine's HTTP API."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import (
    DROPPED_GFX906,
    DROPPED_IGPU,
    ROCM_MI50,
    RUNNING,
    VULKAN_MI50,
    later,
    make,
    settle,
    started,
)

from llm_supervisor.causes import Action, Cause, Finding, Observation
from llm_supervisor.checks.classify import parse_device, rules_for
from llm_supervisor.config import EngineConfig
from llm_supervisor.engine import Engine
from llm_supervisor.errors import SupervisorError
from llm_supervisor.host.tuning import Tuning
from llm_supervisor.records.metrics import EngineView
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.systemctl import UnitStatus


async def test_healthy_after_start_and_one_failed_check_changes_nothing():
    engine, actuator, api, clock, _ = await started()
    api.alive = False
    await engine.tick()
    api.alive = True
    await settle(engine, 3)
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]
    assert engine.failures == 0


async def test_failures_restart_then_demote():
    engine, actuator, api, clock, _ = await started()
    api.alive = False
    for _ in range(3):
        await engine.tick()
    assert actuator.switches == ["rocm", "rocm"]  # restarted on the same tier
    assert engine.state == EngineState.STARTING
    clock.now += 11
    for _ in range(3):
        await engine.tick()
    assert actuator.switches == ["rocm", "rocm", "vulkan"]
    assert "demoted from rocm" in engine.memory.reason
    assert [e for e in actuator.events if e["type"] == "tier"][-1]["to"] == "vulkan"
    assert engine.memory.next_promotion_at == engine.wall.now + 60


async def test_no_verdict_within_grace_but_a_crash_counts():
    engine, actuator, api, clock, _ = make()
    await engine.start_on("rocm", Cause.START)
    api.alive = False
    for _ in range(10):
        await engine.tick()
    assert actuator.switches == ["rocm"] and engine.state == EngineState.STARTING
    actuator.unit = UnitStatus("u", "activating", "auto-restart", 1, 1, 0)
    for _ in range(3):
        await engine.tick()
    assert actuator.switches == ["rocm", "rocm"]  # a crash loop is no slow start


async def test_hung_canary_while_liveness_answers_is_acted_on():
    engine, actuator, api, clock, _ = await started()
    api.hang = True
    for _ in range(8):
        await settle(engine)
        if len(actuator.switches) > 1:
            break
    assert actuator.switches == ["rocm", "rocm"]
    assert engine.memory.history[-2]["cause"] == "hang"


async def test_slow_tokens_below_the_threshold_count_only_when_set():
    engine, actuator, api, clock, _ = await started(rate=10)
    api.eval_rate = 3.0
    for _ in range(4):
        await settle(engine)
    assert len(actuator.switches) > 1 and engine.memory.history[-2]["cause"] == "slow"
    engine, actuator, api, clock, _ = await started(rate=0)
    api.eval_rate = 3.0
    for _ in range(4):
        await settle(engine)
    assert actuator.switches == ["rocm"] and engine.canary.tokens_per_second == pytest.approx(3.0)


async def test_silent_cpu_fallback_demotes_without_restart():
    engine, actuator, api, clock, _ = await started()
    api.size_vram = 0
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan"]
    assert engine.memory.cause == "placement" and "100% on the CPU" in engine.memory.reason


@pytest.mark.parametrize(("cause", "tiers", "reboot"), [
    (Cause.GPU_FAULT, ["rocm", "vulkan"], False),
    (Cause.DISCOVERY, ["rocm", "vulkan"], False),
    (Cause.RESET, ["rocm", "rocm"], False),
    (Cause.FATAL_RESET, ["rocm", "cpu"], True),
])
async def test_log_findings(cause, tiers, reboot):
    engine, actuator, api, clock, _ = await started()
    engine.intake.inbox.append(Observation.bad("log", cause, "GPU trouble",
                                        evidence="amdgpu: GPU reset begin!"))
    await engine.tick()
    assert actuator.switches == tiers
    assert engine.memory.reboot_required is reboot
    if reboot:
        assert engine.memory.reboot_boot_id == "boot-1"


async def test_a_pin_holds_through_faults():
    engine, actuator, api, clock, _ = await started()
    engine.memory.pinned = "rocm"
    engine.intake.inbox.append(Observation.bad("log", Cause.GPU_FAULT, "ROCm error"))
    await engine.tick()
    api.alive = False
    clock.now += 11
    for _ in range(6):
        await engine.tick()
        clock.now += 11
    assert set(actuator.switches) == {"rocm"}


async def test_end_of_chain_fails_and_retries_from_the_bottom_with_backoff():
    engine, actuator, api, clock, wall = await started(usable=("rocm",))
    api.alive = False

    async def fail_through() -> None:
        for _ in range(3):  # restart once on rocm, then nothing below it
            await engine.tick()
        clock.now += 11
        for _ in range(3):
            await engine.tick()

    await fail_through()
    assert engine.state == EngineState.FAILED and "retry 1 in 2s" in engine.memory.reason
    assert "every usable tier exhausted" in engine.memory.reason
    assert engine.memory.retry_at == wall.now + 2  # persisted, wall clock
    await engine.tick()
    assert actuator.switches == ["rocm", "rocm"]  # waits
    later(clock, wall, 2)
    await engine.tick()
    assert actuator.switches == ["rocm", "rocm", "rocm"]  # retried from the bottom
    clock.now += 11
    for _ in range(3):
        await engine.tick()
    await fail_through()
    assert engine.state == EngineState.FAILED and "retry 2 in 4s" in engine.memory.reason


async def test_promotion_back_up_and_backoff_when_it_fails():
    engine, actuator, api, clock, wall = await started(tier="vulkan")
    assert engine.memory.next_promotion_at == 1000.0 + 60  # scheduled when it became healthy
    wall.now += 61
    await engine.tick()
    assert actuator.switches[-1] == "rocm" and engine.memory.promoted_from == "vulkan"
    assert actuator.reprobes == 1
    api.alive = False  # still broken on rocm: not healthy within its grace
    clock.now += 11
    await engine.tick()
    assert actuator.switches[-1] == "vulkan" and engine.memory.promote_wait == 120
    assert engine.memory.next_promotion_at == wall.now + 120
    assert engine.memory.cause == "promotion_failed"
    api.alive = True
    clock.now += 11
    await settle(engine)
    assert engine.state == EngineState.HEALTHY and engine.tier == "vulkan"
    wall.now += 121
    await engine.tick()
    clock.now += 11
    await settle(engine)
    assert engine.tier == "rocm" and engine.state == EngineState.HEALTHY
    assert engine.memory.next_promotion_at is None and "promoted" in engine.memory.reason
    assert engine.memory.probation_until is not None  # on probation now
    wall.now += 121  # probation (120 s) passed: the promotion held, the wait resets
    await settle(engine)
    assert engine.memory.promoted_from is None and engine.memory.promote_wait is None


async def test_a_promotion_that_fails_within_probation_backs_off():
    """A ROCm path that works for a minute after each promotion, then fails: every flap is a
    failed promotion, so the waits grow 60 -> 120 -> 240 s instead of repeating forever."""
    engine, actuator, api, clock, wall = await started(tier="vulkan")
    waits = []
    for _ in range(3):
        wall.now = engine.memory.next_promotion_at + 1
        await engine.tick()
        assert engine.tier == "rocm"
        clock.now += 11
        await settle(engine)
        assert engine.state == EngineState.HEALTHY and engine.memory.probation_until
        wall.now += 60  # a minute of good service, within probation
        await settle(engine)
        engine.intake.inbox.append(Observation.bad("log", Cause.GPU_FAULT, "ROCm error"))
        await engine.tick()
        assert engine.tier == "vulkan" and engine.memory.cause == "promotion_failed"
        waits.append(engine.memory.promote_wait)
        clock.now += 11
        await settle(engine)
    assert waits == [120, 240, 480]
    assert sum(1 for e in actuator.events if e["type"] == "tier" and e["to"] == "rocm") == 3


# --------------------------------------------------------------------------- causes -> actions

STOPS = {Cause.PORT_IN_USE, Cause.EXEC_MISSING, Cause.PERMISSION, Cause.CONFIG}


@pytest.mark.parametrize("cause", list(Cause), ids=str)
async def test_each_cause_takes_its_action(cause):
    """One table: what every cause does to a healthy engine on rocm (chain rocm, vulkan, cpu)."""
    engine, actuator, api, clock, _ = await started()
    action = cause.action
    ticks = 3 if action == Action.COUNT else 1
    for _ in range(ticks):
        source = "unit" if cause in (Cause.CRASH, Cause.STOPPED) else \
            "canary" if cause.blocking else "log"
        engine.intake.inbox.append(Observation.bad(source, cause, "detail", fix="do this"))
        await engine.tick()
    switches = actuator.switches[1:]
    if action == Action.DEMOTE:
        assert switches == ["vulkan"] and engine.memory.cause == cause.value
        assert engine.memory.demoted_from == "rocm"
    elif action == Action.COUNT:
        assert switches == ["rocm"]  # restart on the same tier first
    elif action == Action.RESTART:
        assert switches == ["rocm"]
    elif action == Action.REBOOT:
        assert switches == ["cpu"] and engine.memory.reboot_required
    elif action == Action.BLOCK:
        assert switches == [] and engine.state == EngineState.BLOCKED
        assert engine.memory.cause == cause.value and engine.memory.fix == "do this"
        assert actuator.stops == (1 if cause in STOPS else 0)
        assert not engine.memory.reboot_required
    elif action == Action.STAND_DOWN:  # the operator's stop: held, neither fought nor counted
        assert switches == [] and engine.state == EngineState.STOPPED
        assert engine.memory.stopped_by == "stopped outside the daemon: detail"
        assert engine.failures == 0
        assert actuator.stops == 0 and engine.memory.fix == "do this"
    else:  # reasons for actions, never observations of a fault: should one come as a failed
        # observation (a bug), it is one failed check, counted, and nothing moves yet
        assert switches == [] and engine.state == EngineState.HEALTHY
        assert engine.failures == 1 and engine.memory.cause == Cause.START.value


async def test_one_counted_failure_among_good_checks_changes_nothing():
    engine, actuator, api, clock, _ = await started()
    engine.intake.inbox.append(Observation.bad("log", Cause.OOM, "cudaMalloc failed: out of memory"))
    await settle(engine, 3)
    assert actuator.switches == ["rocm"] and engine.state == EngineState.HEALTHY


async def test_blocked_engine_clears_by_itself_once_fixed():
    engine, actuator, api, clock, wall = await started()
    actuator.unit = UnitStatus("u", "activating", "auto-restart", 1, 1, 0)
    actuator.diagnosis = Finding(Cause.PORT_IN_USE, "127.0.0.1:11434 is held by pid 812"
                                 " (ollama) of ollama.service", fix="systemctl disable --now"
                                 " ollama.service")
    await engine.tick()
    await engine.tick()
    assert engine.state == EngineState.BLOCKED and actuator.switches == ["rocm"]
    assert "ollama.service" in engine.memory.reason and actuator.stops == 1
    assert engine.memory.retry_at == wall.now + 2
    await engine.tick()
    assert actuator.switches == ["rocm"]  # still held: waits
    actuator.is_cleared = True  # the operator stopped ollama.service
    actuator.unit, actuator.diagnosis = RUNNING, None
    await engine.tick()
    assert actuator.switches == ["rocm", "rocm"] and engine.state == EngineState.STARTING
    clock.now += 11
    await settle(engine)
    assert engine.state == EngineState.HEALTHY and engine.tier == "rocm"
    assert engine.memory.cause == "recovered"


async def test_blocked_backoff_doubles_and_is_capped():
    engine, actuator, api, clock, wall = await started()
    actuator.diagnosis = Finding(Cause.EXEC_MISSING, "/usr/local/bin/ollama does not exist")
    actuator.unit = UnitStatus("u", "failed", "failed", 0, 203, 0)
    waits = []
    for _ in range(10):
        await engine.tick()  # blocked (or retried, then blocked again)
        if engine.state == EngineState.BLOCKED:
            waits.append(engine.memory.retry_at - wall.now)
            later(clock, wall, engine.memory.retry_at - wall.now)
            await engine.tick()  # the retry
    assert waits[:4] == [2, 4, 8, 16] and max(waits) == 300


async def test_missing_model_blocks_without_a_tier_change_and_clears_when_pulled():
    engine, actuator, api, clock, wall = make()
    api.present = False
    await engine.start_on("rocm", Cause.START)
    clock.now += 11
    await settle(engine, 2)
    assert engine.state == EngineState.BLOCKED and actuator.switches == ["rocm"]
    assert engine.memory.cause == "model_missing"
    assert engine.memory.fix.startswith("ollama pull qwen2.5:7b-instruct")
    assert actuator.stops == 0  # it keeps serving whatever else it has
    api.present = True  # the operator ran `ollama pull`
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]


async def test_missing_model_is_pulled_when_allowed():
    engine, actuator, api, clock, wall = make(pull=True)
    api.present = False
    await engine.start_on("rocm", Cause.START)
    clock.now += 11
    await settle(engine)
    assert engine.pull_task is not None or api.pulls == 1
    if engine.pull_task is not None:
        await engine.pull_task
    await settle(engine, 2)
    assert api.pulls == 1 and engine.state == EngineState.HEALTHY
    assert actuator.switches == ["rocm"]
    assert engine.pull_progress and engine.pull_progress["status"] == "success"
    progress = [e for e in actuator.events if e["type"] == "pull"]
    assert progress and progress[-1]["to"] == "success"


async def test_wrong_api_key_blocks_with_the_fix():
    engine, actuator, api, clock, wall = await started()
    api.status = 401
    await settle(engine)
    assert engine.state == EngineState.BLOCKED and engine.memory.cause == "auth"
    assert "api_key_file" in engine.memory.fix and actuator.switches == ["rocm"]




async def test_rocm_tier_running_on_vulkan_is_a_backend_mismatch():
    engine, actuator, api, clock, _ = await started()
    for line in (DROPPED_GFX906, VULKAN_MI50):
        engine.intake.device(parse_device(line))
    assert engine.intake.backend() == "Vulkan: AMD Instinct MI50 (RADV VEGA20)"
    await settle(engine, 2)
    assert actuator.switches == ["rocm", "vulkan"]
    assert engine.memory.cause == "backend_mismatch"
    skipped = engine.memory.skipped["rocm"]
    assert "dropped the ROCm device" in skipped and "gfx906" in skipped
    assert "rocm" not in engine.usable()
    mismatch = [e for e in actuator.events if e["type"] == "tier"][-1]
    assert mismatch["cause"] == "backend_mismatch" and mismatch["to"] == "vulkan"


async def test_dropped_igpu_beside_a_kept_rocm_card_is_not_a_fault():
    engine, actuator, api, clock, _ = await started()
    for line in (DROPPED_IGPU, ROCM_MI50):
        engine.intake.device(parse_device(line))
    await settle(engine, 3)
    assert actuator.switches == ["rocm"] and engine.state == EngineState.HEALTHY
    assert engine.memory.backend == "ROCm: AMD Instinct MI50"


async def test_model_names_compare_as_ollama_normalises_them():
    engine, actuator, api, clock, _ = await started(model="qwen2.5")
    api.ps_name = "qwen2.5:latest"
    api.size_vram = 0
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan"] and engine.memory.cause == "placement"


def test_reboot_required_belongs_to_its_boot():
    engine, actuator, api, clock, wall = make()
    engine.memory.reboot_required = True
    engine.memory.reboot_boot_id = "boot-0"
    engine.expire_facts("boot-0")
    assert engine.memory.reboot_required  # the same boot: still required
    engine.expire_facts("boot-1")
    assert not engine.memory.reboot_required
    assert actuator.events[-1]["type"] == "reboot" and actuator.events[-1]["to"] == "done"


async def test_a_failed_engines_retry_schedule_survives_a_restart():
    engine, actuator, api, clock, wall = await started(usable=("rocm",))
    await engine.fail(Finding(Cause.CRASH, "crashed"))
    due = engine.memory.retry_at
    # a new daemon: the same memory, a new Engine, the unit running (systemd restarts it)
    again = Engine(engine.config, engine.cfg, engine.memory, actuator, engine.http,
                   clock=clock, wall=wall)
    again.adopt(running=True, tuning=Tuning())
    await again.tick()
    assert actuator.switches == ["rocm"] and again.state == EngineState.FAILED
    wall.now = due
    await again.tick()
    assert actuator.switches == ["rocm", "rocm"] and again.state == EngineState.STARTING


async def test_a_pinned_tier_on_the_wrong_backend_is_reported_not_restarted():
    engine, actuator, api, clock, _ = await started()
    engine.memory.pinned = "rocm"
    for line in (DROPPED_GFX906, VULKAN_MI50):
        engine.intake.device(parse_device(line))
    await settle(engine, 3)
    assert actuator.switches == ["rocm"] and engine.state == EngineState.DEGRADED
    assert engine.memory.cause == "backend_mismatch" and "unpin" in engine.memory.fix


async def test_the_model_is_loaded_before_the_engine_is_called_healthy():
    """The first generation after a start loads the model (its deadline is load_timeout):
    healthy only once it worked, and again after every switch."""
    engine, actuator, api, clock, wall = make()
    await engine.start_on("rocm", Cause.START)
    await engine.tick()
    assert engine.state == EngineState.STARTING and "loading qwen2.5:7b-instruct" in \
        engine.memory.reason
    assert engine.canary.phase == "load" and engine.canary.deadline(engine.checking, engine.load_deadline()) == 10.0  # load_timeout: the grace
    await settle(engine)
    assert engine.state == EngineState.HEALTHY and engine.canary.phase == "generate"
    loads = [e for e in actuator.events if e["type"] == "load"]
    assert [e["to"] for e in loads] == ["rocm"] and "first generation in" in loads[0]["reason"]
    assert [c for c, _ in actuator.checks if c == "load"] == ["load"]
    # after a demotion the model is loaded again, on the new tier, before healthy
    engine.intake.inbox.append(Observation.bad("log", Cause.GPU_FAULT, "ROCm error"))
    await engine.tick()
    assert engine.tier == "vulkan" and engine.canary.phase == "load"
    await settle(engine)
    assert engine.state == EngineState.HEALTHY
    assert [e["to"] for e in actuator.events if e["type"] == "load"] == ["rocm", "vulkan"]


async def test_a_switch_that_fails_half_way_is_recorded_and_the_tier_stays_the_units():
    engine, actuator, api, clock, wall = await started()
    actuator.switch_error = SupervisorError("Job for llm-main.service failed")
    engine.intake.inbox.append(Observation.bad("log", Cause.GPU_FAULT, "ROCm error"))
    with pytest.raises(SupervisorError):  # the loop (run) logs it and checks again
        await engine.tick()  # the demotion's switch fails
    assert engine.tier == "rocm" and engine.memory.tier == "rocm"
    # the values of the start that worked stay the ones it runs with (the fake numbers starts)
    assert engine.tuning() == Tuning({"OLLAMA_NUM_PARALLEL": "1"}, "test host")
    failed = [e for e in actuator.events if e["type"] == "switch"]
    assert len(failed) == 1 and failed[0]["to"] == "failed" and failed[0]["cause"] == "gpu_fault"
    assert failed[0]["evidence"]["wanted"] == "vulkan"
    assert "Job for llm-main.service failed" in failed[0]["reason"]
    assert not [e for e in actuator.events if e["type"] == "tier" and e["to"] == "vulkan"]
    assert engine.state == EngineState.DEGRADED and "switching to vulkan failed" in \
        engine.memory.reason
    actuator.switch_error = None  # systemd works again: the next check finishes the demotion
    # the process that still runs logs (no start was made: its lines are judged, not held)
    engine.intake.line("ROCm error: unspecified launch failure", clock.now,
                       rules_for(engine.config.logs)[0], engine.tier, engine.cfg)
    await engine.tick()
    assert engine.tier == "vulkan" and actuator.switches[-1] == "vulkan"
    assert [e["to"] for e in actuator.events if e["type"] == "tier"][-1] == "vulkan"
    assert engine.tuning() == Tuning({"OLLAMA_NUM_PARALLEL": "2"}, "test host")  # this start's


@pytest.mark.parametrize(("pinned", "current", "usable", "tier"), [
    (None, None, ["rocm", "vulkan", "cpu"], "rocm"),        # a first start: the best
    (None, "vulkan", ["rocm", "vulkan", "cpu"], "vulkan"),  # carry on where it runs
    ("cpu", "vulkan", ["rocm", "vulkan", "cpu"], "cpu"),    # the pin wins
    ("rocm", "vulkan", ["vulkan", "cpu"], "vulkan"),        # a pin no longer usable: not it
    (None, "rocm", ["vulkan", "cpu"], "vulkan"),            # its tier went away: the best
    (None, "rocm", [], None),                               # nothing usable: no literal "cpu"
])
def test_one_rule_for_the_start_tier(pinned, current, usable, tier):
    from llm_supervisor import policy
    assert policy.start_tier(("rocm", "vulkan", "opencl", "cpu"), usable, pinned=pinned,
                             current=current) == tier


async def test_a_demotion_is_recorded_once_after_its_switch():
    """Observe -> decide -> act -> record once: the check that demotes hands its events to
    the actuator in one commit (one state save, one STATUS=, one metrics update), in order,
    after the switch they announce."""
    engine, actuator, api, clock, wall = await started()
    commits = len(actuator.commits)
    order: list[str] = []
    switch, commit = actuator.switch, actuator.commit

    async def switching(cfg: EngineConfig, tier: str, running: str | None,
                        kept: Tuning | None) -> Tuning:
        order.append("switch")
        return await switch(cfg, tier, running, kept)

    def committing(view: EngineView, events: list[tuple[str, dict[str, Any]]]) -> None:
        order.append("commit")
        commit(view, events)

    actuator.switch, actuator.commit = switching, committing  # type: ignore[method-assign]
    engine.intake.inbox.append(Observation.bad("log", Cause.GPU_FAULT, "ROCm error"))
    await engine.tick()
    assert actuator.switches[-1] == "vulkan"
    assert actuator.commits[commits:] == [["state", "tier", "state"]]
    assert order == ["switch", "commit"]
    assert actuator.views[-1].tier == "vulkan" and actuator.views[-1].state == "starting"


async def test_failed_checks_are_counted_by_cause_for_the_metrics():
    """Every check that failed (not one the start-up grace excuses, not an operator's stop)
    reaches the metrics once, with the cause its decision took."""
    engine, actuator, api, clock, _ = await started()
    engine.intake.inbox.append(Observation.bad("log", Cause.OOM, "cudaMalloc failed"))
    await engine.tick()
    assert actuator.failures == ["oom"]
    engine.intake.inbox.append(Observation.bad("log", Cause.GPU_FAULT, "ROCm error"))
    await engine.tick()  # demoted: a failed check too
    assert actuator.failures == ["oom", "gpu_fault"]
    engine.intake.inbox.append(Observation.bad("liveness", Cause.UNRESPONSIVE, "refused"))
    await engine.tick()  # just restarted: not answering yet is what its grace excuses
    assert actuator.failures == ["oom", "gpu_fault"]


def test_the_failed_checks_counter_is_exported():
    from llm_supervisor.records.metrics import Metrics

    metrics = Metrics()
    metrics.observe_failure("main", "hang")
    metrics.observe_failure("main", "not a cause")
    text = metrics.render().decode()
    assert 'llm_supervisor_failed_checks_total{cause="hang",engine="main"} 1.0' in text
    assert 'llm_supervisor_failed_checks_total{cause="other",engine="main"} 1.0' in text
