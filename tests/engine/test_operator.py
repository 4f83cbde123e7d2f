"""The operator's hand is law: a stop the daemon did not make (``systemctl stop``, an admin's
kill with a clean exit) holds the engine stopped — no restart, no count, no demotion — until
someone starts it; a restart outside the daemon is a fresh start, no fault; the operator's
own ``stop``/``start``; crashes stay crashes."""

from __future__ import annotations

import dataclasses

import pytest
from fakes import DROPPED_GFX906, ROCM_MI50, RUNNING, VULKAN_MI50, later, settle, started

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks import classify
from llm_supervisor.errors import Refused
from llm_supervisor.intents import Intent
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.systemctl import UnitStatus

SERVING = dataclasses.replace(RUNNING, main_pid=4242)
# what systemd shows after `systemctl stop` (SIGTERM, which it counts as clean)
STOPPED = UnitStatus("llm-main.service", "inactive", "dead", 0, 15, 0, "success",
                     raw={"ExecMainCode": "2", "ExecMainStatus": "15"})
EXITED_0 = UnitStatus("llm-main.service", "inactive", "dead", 0, 0, 0, "success",
                      raw={"ExecMainCode": "1", "ExecMainStatus": "0"})
# a start job waiting its turn in systemd's queue: inactive/dead, Result=success, as a stop
QUEUED = UnitStatus("llm-main.service", "inactive", "dead", 0, 0, 0, "success", job=134,
                    raw={"Job": "134"})


async def serving():
    engine, actuator, api, clock, wall = await started()
    actuator.unit = SERVING
    await settle(engine)
    assert engine.state == EngineState.HEALTHY and engine.main_pid == 4242
    return engine, actuator, api, clock, wall


@pytest.mark.parametrize("unit, how", [(STOPPED, "ended by signal 15"),
                                       (EXITED_0, "exited with status 0")])
async def test_a_stop_outside_the_daemon_is_held_never_fought(unit, how):
    engine, actuator, api, clock, wall = await serving()
    actuator.unit = unit
    for _ in range(10):  # well past `failures`, the grace and the restart budget
        await engine.tick()
        later(clock, wall, engine.checking.startup_grace)
    assert engine.state == EngineState.STOPPED and how in engine.memory.reason
    assert engine.memory.cause == Cause.STOPPED.value
    assert engine.memory.stopped_by == engine.memory.reason  # what status and STATUS= say
    assert actuator.switches == ["rocm"] and actuator.stops == 0  # not started, not stopped
    assert engine.failures == 0 and engine.tier == "rocm" and not engine.memory.skipped
    stops = [e for e in actuator.events if e["type"] == "state" and e["to"] == "stopped"]
    assert len(stops) == 1 and "systemctl start" in stops[0]["fix"]
    assert engine.view().trouble == engine.memory.stopped_by  # STATUS= says why
    # someone starts it again: supervised again, a fresh start with its grace
    actuator.unit = dataclasses.replace(SERVING, main_pid=5151)
    await engine.tick()
    assert engine.state == EngineState.STARTING and engine.memory.stopped_by is None
    assert "started outside the daemon" in engine.memory.reason
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]


async def test_a_restart_outside_the_daemon_is_a_fresh_start_never_a_fault():
    engine, actuator, api, clock, wall = await serving()
    actuator.unit = dataclasses.replace(SERVING, main_pid=4343)  # NRestarts unchanged
    await engine.tick()
    restarts = [e for e in actuator.events if e["type"] == "restart"]
    assert len(restarts) == 1 and restarts[0]["cause"] == Cause.OPERATOR.value
    assert restarts[0]["evidence"] == {"pid": 4343, "was": 4242}
    assert engine.failures == 0 and engine.state == EngineState.STARTING
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]


async def test_a_start_of_its_own_is_no_restart_outside():
    engine, actuator, api, clock, wall = await serving()
    await engine.start_on("rocm", Cause.OPERATOR, "restarted by uid 0")
    actuator.unit = dataclasses.replace(SERVING, main_pid=4444)
    await settle(engine, 2)
    assert not [e for e in actuator.events if e["type"] == "restart"]
    assert engine.state == EngineState.HEALTHY


async def test_a_start_of_its_own_seen_before_the_old_process_left_is_no_restart_outside():
    """Our restart is queued, not waited for: the next check may still see the process it
    replaces (the demo's demotion showed it as an operator's restart, one check later)."""
    engine, actuator, api, clock, wall = await serving()
    await engine.start_on("vulkan", Cause.HANG, "demoted")
    await engine.tick()  # the old process, 4242, is still stopping
    assert engine.main_pid == 0
    actuator.unit = dataclasses.replace(SERVING, main_pid=4444)  # the new one
    await settle(engine, 2)
    assert not [e for e in actuator.events if e["type"] == "restart"], actuator.events
    assert engine.state == EngineState.HEALTHY and engine.main_pid == 4444
    actuator.unit = dataclasses.replace(SERVING, main_pid=4545)  # then an admin's restart
    await engine.tick()
    assert [e["cause"] for e in actuator.events if e["type"] == "restart"] == ["operator"]


@pytest.mark.parametrize("unit", [
    dataclasses.replace(SERVING, n_restarts=1),  # systemd restarted it: its own restart
    UnitStatus("llm-main.service", "activating", "auto-restart", 0, 9, 0, "signal"),
    UnitStatus("llm-main.service", "failed", "failed", 0, 1, 0, "exit-code"),
    UnitStatus("llm-main.service", "inactive", "dead", 0, 1, 0, "exit-code"),
])
async def test_a_crash_stays_a_crash(unit):
    engine, actuator, api, clock, wall = await serving()
    actuator.unit = unit
    await engine.tick()
    assert engine.failures == 1 and engine.last_failure is not None
    assert engine.last_failure.cause == Cause.CRASH and engine.memory.stopped_by is None


async def test_a_stop_under_way_is_no_verdict():
    engine, actuator, api, clock, wall = await serving()
    actuator.unit = UnitStatus("llm-main.service", "deactivating", "stop-sigterm", 0, 0, 4242)
    later(clock, wall, engine.checking.startup_grace + 1)
    await engine.tick()
    assert engine.failures == 0 and engine.state == EngineState.HEALTHY


async def test_stop_and_start_asked_of_the_daemon():
    engine, actuator, api, clock, wall = await serving()
    done = engine.submit(Intent("stop", 0))
    await engine.tick()
    assert done.result() == "stopped" and actuator.stops == 1
    assert engine.state == EngineState.STOPPED
    assert engine.memory.stopped_by == "llm-supervisorctl stop by uid 0"
    actuator.unit = STOPPED
    for _ in range(5):
        await engine.tick()
        later(clock, wall, engine.checking.startup_grace)
    assert engine.state == EngineState.STOPPED and actuator.switches == ["rocm"]
    for verb in ("restart", "demote", "promote", "stop"):
        refused = engine.submit(Intent(verb, 0))
        await engine.tick()
        with pytest.raises(Refused) as exc:
            refused.result()
        assert exc.value.status == 409
    started_ = engine.submit(Intent("start", 0))
    actuator.unit = SERVING
    await engine.tick()
    assert started_.result() == "started on rocm" and actuator.switches == ["rocm", "rocm"]
    assert engine.memory.stopped_by is None
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY
    refused = engine.submit(Intent("start", 0))
    await engine.tick()
    with pytest.raises(Refused, match="not stopped"):
        refused.result()


async def test_a_restart_outside_seen_half_way_is_still_a_fresh_start():
    """A check that lands inside `systemctl restart` (no main process yet) does not lose the
    process it saw before."""
    engine, actuator, api, clock, wall = await serving()
    actuator.unit = UnitStatus("llm-main.service", "activating", "start", 0, 0, 0)
    await engine.tick()
    actuator.unit = dataclasses.replace(SERVING, main_pid=4545)
    await engine.tick()
    assert [e for e in actuator.events if e["type"] == "restart"]
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]


async def test_a_failed_reset_of_a_card_no_longer_its_own_asks_no_reboot_of_it():
    """The operator moved the engine to another card (`gpus`): the reboot was the old card's."""
    engine, actuator, api, clock, wall = await serving()
    engine.memory.reboot_required, engine.memory.reboot_card = True, "0000:43:00.0"
    moved = engine.cfg.model_copy(update={"gpus": ("0000:83:00.0",)})
    engine.configure(engine.config, moved)
    assert not engine.memory.reboot_required and engine.memory.reboot_card is None
    engine.memory.reboot_required = True  # a reset that named no card: kept
    engine.configure(engine.config, engine.cfg.model_copy(update={"gpus": ()}))
    assert engine.memory.reboot_required


@pytest.mark.parametrize("tier, cause", [("rocm", Cause.START), ("rocm", Cause.OPERATOR),
                                         ("rocm", Cause.RELOAD), ("vulkan", Cause.HANG),
                                         ("rocm", Cause.PROMOTION)])
async def test_a_start_of_its_own_waiting_in_systemds_queue_is_no_stop(tier, cause):
    """Its start is queued, not yet run (a loaded host): the unit looks stopped, but a job
    is queued for it. Not the operator's stop, and once it runs no start outside the daemon
    (which would start the engine's log afresh and lose its first lines) — whichever start:
    the first, the operator's, a reload's, a demotion's, a promotion's."""
    engine, actuator, api, clock, wall = await serving()
    await engine.start_on(tier, cause, "a start of its own")
    actuator.unit = QUEUED
    for _ in range(3):  # within the grace
        await engine.tick()
        later(clock, wall, 1)
    assert engine.state == EngineState.STARTING and engine.memory.stopped_by is None
    actuator.unit = dataclasses.replace(SERVING, main_pid=4444)
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY and engine.failures == 0
    assert not [e for e in actuator.events if e["type"] == "restart"
                or e.get("to") == "stopped" or e.get("cause") == Cause.OPERATOR.value
                and "outside" in e.get("reason", "")]


async def test_a_start_that_stays_queued_past_the_grace_is_a_failed_start():
    engine, actuator, api, clock, wall = await serving()
    await engine.start_on("rocm", Cause.OPERATOR, "restarted by uid 0")
    actuator.unit = QUEUED
    later(clock, wall, engine.checking.startup_grace + 1)
    await engine.tick()
    assert engine.state != EngineState.STOPPED and engine.memory.stopped_by is None
    assert engine.last_failure is not None and engine.last_failure.finding is not None
    assert engine.last_failure.finding.cause == Cause.CRASH
    assert "its start (job 134) is still queued" in engine.last_failure.finding.detail


async def test_after_a_start_outside_the_new_process_lines_count_from_its_own_start():
    """Its first lines (the devices it found or dropped) may be logged before a check sees
    the new process: they are this run's, the old process's are not."""
    engine, actuator, api, clock, wall = await serving()
    actuator.unit = dataclasses.replace(SERVING, main_pid=4343, main_started=clock.now - 2)
    await engine.tick()
    assert engine.intake.this_run(clock.now - 1) and not engine.intake.this_run(clock.now - 3)


async def test_after_a_start_outside_the_new_process_first_lines_are_kept():
    """The new process logged its devices before a check saw it (they were routed while the
    old run was current): a start outside the daemon begins a clean slate, but keeps them —
    a ROCm engine that dropped its card is judged on it. The old process's last words go."""
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]
    engine.intake.line(ROCM_MI50, clock.now - 3, rules, engine.tier, engine.cfg)
    for line in (DROPPED_GFX906, VULKAN_MI50):  # the new process's first lines
        engine.intake.line(line, clock.now - 1, rules, engine.tier, engine.cfg)
    actuator.unit = dataclasses.replace(SERVING, main_pid=4343, main_started=clock.now - 2)
    await engine.tick()
    assert [e for e in actuator.events if e["type"] == "restart"]  # seen as a fresh start
    await settle(engine, 3)
    assert actuator.switches == ["rocm", "vulkan"]
    assert "dropped the ROCm device" in engine.memory.skipped["rocm"]


async def test_after_a_start_outside_the_old_process_last_words_are_not_judged():
    """The old process's last words (a GPU error as it was killed) were routed before a check
    saw the restart: the restart is seen first, so they are not the new run's fault."""
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]
    engine.intake.line("HIP error: hipErrorLaunchFailure", clock.now - 3, rules, engine.tier,
                       engine.cfg)
    actuator.unit = dataclasses.replace(SERVING, main_pid=4343, main_started=clock.now - 2)
    await settle(engine, 3)
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]
    assert engine.failures == 0 and engine.last_failure is None


async def test_the_replaced_process_last_words_are_not_the_new_runs_fault():
    """A demotion restarts the engine; the process it replaces, stopped on a wedged GPU, logs
    a GPU error as it dies — after the start was asked, before the new process began. Not
    the new tier's fault: one demotion, not two. Whatever the new process logs is judged."""
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]

    def logs(line: str, at: float) -> None:
        engine.intake.line(line, at, rules, engine.tier, engine.cfg)

    logs("HIP error: hipErrorLaunchFailure", clock.now)
    await engine.tick()
    assert actuator.switches == ["rocm", "vulkan"]
    asked = clock.now
    actuator.unit = dataclasses.replace(SERVING, active_state="deactivating",
                                        sub_state="stop-sigterm")  # the old one stopping
    later(clock, wall, 1)
    logs("HIP error: hipErrorLaunchFailure (the old runner, stopped)", clock.now)
    await engine.tick()  # still the old process: nothing taken
    later(clock, wall, 1)
    actuator.unit = dataclasses.replace(SERVING, main_pid=5151, main_started=asked + 1.5)
    await settle(engine, 3)
    assert actuator.switches == ["rocm", "vulkan"] and engine.state == EngineState.HEALTHY
    assert engine.failures == 0
    logs("ggml_vulkan: vk::DeviceLostError", clock.now)  # the new process's own: judged
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan", "cpu"]


async def test_a_failed_gpu_reset_as_the_replaced_process_stops_is_kept():
    """The kernel's word is about the card, whichever process ran: a reset that failed while
    a demotion's restart stopped the old process still asks for a reboot."""
    engine, actuator, api, clock, wall = await serving()
    engine.intake.finding(Observation.bad("log", Cause.GPU_FAULT, "HIP error"), clock.now)
    await engine.tick()
    assert actuator.switches == ["rocm", "vulkan"]
    asked = clock.now
    later(clock, wall, 1)
    found = classify.classify(classify.rules_for(engine.config.logs)[1],
                              "amdgpu 0000:43:00.0: amdgpu: GPU Recovery Failed", tier="vulkan",
                              kernel=True)
    assert found is not None and found.cause == Cause.FATAL_RESET
    engine.intake.finding(found, clock.now)
    later(clock, wall, 1)
    actuator.unit = dataclasses.replace(SERVING, main_pid=5151, main_started=asked + 1.5)
    await settle(engine, 2)
    assert engine.memory.reboot_required and actuator.switches == ["rocm", "vulkan", "cpu"]


async def test_a_line_that_came_during_the_switch_is_judged_on_the_new_tier():
    """The new process logged a GPU error while the switch was still under way (the engine's
    tier was still the CPU's, where GPU lines are no fault): judged on the tier it runs."""
    engine, actuator, api, clock, wall = await started(tier="cpu")
    rules = classify.rules_for(engine.config.logs)[0]
    switch = actuator.switch

    async def switching(*args):
        tuning = await switch(*args)  # systemd started the new process (now)...
        later(clock, wall, 0.5)       # ... which logs before the switch is done
        engine.intake.line("ggml_vulkan: vk::DeviceLostError", clock.now, rules, engine.tier,
                           engine.cfg)
        return tuning

    actuator.switch = switching
    await engine.start_on("vulkan", Cause.PROMOTION)
    assert engine.tier == "vulkan"
    actuator.switch = switch
    await settle(engine)
    assert actuator.switches == ["cpu", "vulkan", "cpu"]
    assert engine.memory.cause == Cause.GPU_FAULT.value


async def test_a_process_of_the_start_that_crashed_before_a_check_keeps_its_words():
    """The start resets NRestarts (reset-failed). Its first process logged a GPU error and
    crashed; systemd started another before a check saw either: NRestarts 1 says so, and the
    first one's words count (from the ask), whatever NRestarts was before the start."""
    engine, actuator, api, clock, wall = await serving()
    actuator.unit = dataclasses.replace(SERVING, n_restarts=1)  # one crash, long ago
    await settle(engine)
    rules = classify.rules_for(engine.config.logs)[0]
    engine.intake.line("HIP error: hipErrorLaunchFailure", clock.now, rules, engine.tier,
                       engine.cfg)
    await engine.tick()
    assert actuator.switches == ["rocm", "vulkan"]
    asked = clock.now
    later(clock, wall, 0.5)
    engine.intake.line("ggml_vulkan: vk::DeviceLostError", clock.now, rules, engine.tier,
                       engine.cfg)  # its first process, which then crashed
    later(clock, wall, 3)
    actuator.unit = dataclasses.replace(SERVING, main_pid=6000, n_restarts=1,
                                        main_started=asked + 3)  # systemd's second process
    await engine.tick()
    assert actuator.switches == ["rocm", "vulkan", "cpu"]


async def test_a_fault_logged_in_the_hold_survives_a_chatty_log():
    """Thousands of ordinary lines after the new process's GPU error, before a check saw
    it: only the lines that meant something are kept to be routed again."""
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]

    def logs(line: str) -> None:
        engine.intake.line(line, clock.now, rules, engine.tier, engine.cfg)

    await engine.start_on("vulkan", Cause.OPERATOR)
    asked = clock.now
    later(clock, wall, 1)
    logs("ggml_vulkan: vk::DeviceLostError")
    for i in range(5000):
        logs(f"llama_model_loader: - kv {i}: general.name str = qwen")
    actuator.unit = dataclasses.replace(SERVING, main_pid=6000, main_started=asked + 0.5)
    await engine.tick()
    assert actuator.switches == ["rocm", "vulkan", "cpu"]
    assert len(engine.intake.routed) < 10


async def test_an_adopted_engine_is_not_judged_on_the_run_before():
    """The daemon restarted while the engine ran: its journal reader goes on from its cursor,
    and the last words of the run before the one systemd now shows are read again first."""
    from fakes import make

    from llm_supervisor.host.tuning import Tuning

    engine, actuator, api, clock, wall = make()
    engine.memory.tier, engine.memory.state = "vulkan", "healthy"
    clock.now = 5000.0
    engine.adopt(running=True, tuning=Tuning())
    rules = classify.rules_for(engine.config.logs)[0]
    engine.intake.line("ggml_vulkan: vk::DeviceLostError", 990.0, rules, engine.tier,
                       engine.cfg)  # the run before, read from the cursor
    actuator.unit = dataclasses.replace(SERVING, main_started=1000.0)
    await settle(engine, 2)
    assert actuator.switches == [] and engine.state == EngineState.HEALTHY


async def test_a_line_judged_before_the_restart_outside_was_seen_is_not_judged_again():
    """systemd's word (pushed over D-Bus) may come after the new process's first lines: a
    check takes them while the unit still shows the old process. When the next check sees
    the restart, the run is rebuilt from the lines, but what was judged is not judged twice."""
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]
    restarted = clock.now
    later(clock, wall, 1)
    engine.intake.line("cudaMalloc failed: out of memory", clock.now, rules, engine.tier,
                       engine.cfg)
    await engine.tick()  # the status still shows 4242
    assert engine.failures == 1
    actuator.unit = dataclasses.replace(SERVING, main_pid=4343, main_started=restarted)
    await engine.tick()
    assert [e for e in actuator.events if e["type"] == "restart"]
    assert engine.failures == 0  # a fresh start: the one failure is not counted again


async def test_the_replaced_process_last_words_read_late_are_known_by_their_pid():
    """journald stamps a line when it reads it: on a busy host the dying process's last
    words may be stamped after the new process began. The processes the start replaced (the
    main one and its runners) wrote them: not the new run's, whatever their stamp — for a
    while; then a PID is anyone's again."""
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]

    def logs(line: str, pid: int) -> None:
        engine.intake.line(line, clock.now, rules, engine.tier, engine.cfg, pid)

    logs("HIP error: hipErrorLaunchFailure", 4242)
    await engine.tick()
    assert actuator.switches == ["rocm", "vulkan"]
    asked = clock.now
    actuator.unit = dataclasses.replace(SERVING, main_pid=5151, main_started=asked + 0.5)
    later(clock, wall, 1)  # read after the new process began
    logs("HW Exception by GPU node-1 (Agent handle: 0x5) reason :GPU Hang", 4243)  # a runner
    await settle(engine, 3)
    assert actuator.switches == ["rocm", "vulkan"] and engine.state == EngineState.HEALTHY
    logs("ggml_vulkan: vk::DeviceLostError", 5152)  # the new process's runner: judged
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan", "cpu"]


async def test_a_pid_of_a_replaced_process_is_anyones_again_after_a_while():
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]
    await engine.start_on("vulkan", Cause.OPERATOR)
    actuator.unit = dataclasses.replace(SERVING, main_pid=5151, main_started=clock.now + 0.5)
    later(clock, wall, 1)
    await settle(engine, 3)
    later(clock, wall, 60)
    engine.intake.line("ggml_vulkan: vk::DeviceLostError", clock.now, rules, engine.tier,
                       engine.cfg, 4242)  # a PID used again, long after
    await settle(engine)
    assert actuator.switches == ["rocm", "vulkan", "cpu"]


async def test_a_second_start_during_the_hold_still_knows_the_first_ones_replaced():
    engine, actuator, api, clock, wall = await serving()
    rules = classify.rules_for(engine.config.logs)[0]
    alive = {4242: frozenset({4242, 4243})}  # 4242 and its runner, gone once replaced
    engine.family = lambda pid: alive.pop(pid, frozenset())
    await engine.start_on("vulkan", Cause.OPERATOR)    # replaces 4242 (and its runner)
    await engine.start_on("vulkan", Cause.RELOAD)      # before any check saw a process
    actuator.unit = dataclasses.replace(SERVING, main_pid=5151, main_started=clock.now + 0.5)
    later(clock, wall, 1)
    engine.intake.line("HIP error: hipErrorLaunchFailure", clock.now, rules, engine.tier,
                       engine.cfg, 4243)  # the first one's runner, read late
    await settle(engine, 3)
    assert actuator.switches == ["rocm", "vulkan", "vulkan"]
    assert engine.state == EngineState.HEALTHY
