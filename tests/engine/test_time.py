"""Time: the restart budget refills after a healthy window; the engine's log is judged
against the start of its own unit, not the daemon's clock."""

from __future__ import annotations

from fakes import settle, started

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.states import EngineState


async def hang_once(engine, clock) -> None:
    """A transient fault: `failures` failed checks in a row, then it serves again."""
    for _ in range(engine.checking.failures):
        engine.intake.inbox.append(Observation.bad("canary", Cause.HANG, "no token within 2s"))
        await engine.tick()
        clock.now += engine.checking.interval
    clock.now += engine.checking.startup_grace + 1
    await settle(engine, 2)
    assert engine.state == EngineState.HEALTHY, engine.memory.reason


async def test_two_transient_hangs_weeks_apart_each_get_a_restart():
    engine, actuator, api, clock, _ = await started()
    await hang_once(engine, clock)
    assert actuator.switches == ["rocm", "rocm"]  # restarted on the tier
    clock.now += 14 * 86400  # two weeks of good service
    await settle(engine)
    await hang_once(engine, clock)
    assert actuator.switches == ["rocm", "rocm", "rocm"]  # restarted again, not demoted


async def test_within_the_window_the_budget_still_holds():
    engine, actuator, api, clock, _ = await started()
    await hang_once(engine, clock)
    clock.now += engine.fallback.restarts_refill_after / 2
    await settle(engine)
    for _ in range(engine.checking.failures):
        engine.intake.inbox.append(Observation.bad("canary", Cause.HANG, "no token within 2s"))
        await engine.tick()
    assert actuator.switches[-1] == "vulkan"  # the tier's restart was spent: demoted


def test_an_entry_is_stamped_on_the_monotonic_clock_of_its_boot():
    from llm_supervisor.systemd.journal import logged_at
    entry = {"__MONOTONIC_TIMESTAMP": "5000000", "_BOOT_ID": "abc"}
    assert logged_at(entry, "abc") == 5.0
    assert logged_at(entry, "def") == float("-inf")  # a line of an earlier boot
    assert logged_at({"_BOOT_ID": "abc"}, "abc") is None


async def test_lines_belong_to_the_run_systemd_started_not_to_the_daemons_clock():
    """A daemon restarted while the engine ran: a GPU line the engine logged after its own
    start — but before this daemon started — is acted on; the last words of the run before
    are not. A step of the wall clock changes nothing (no wall clock is read)."""
    from test_engine import make

    from llm_supervisor.host.tuning import Tuning
    from llm_supervisor.systemd.systemctl import UnitStatus

    engine, actuator, api, clock, wall = make()
    engine.memory.tier, engine.memory.state = "rocm", "healthy"
    clock.now = 5000.0  # the daemon starts long after the engine did
    wall.now -= 3600     # and the wall clock stepped back an hour meanwhile
    engine.adopt(running=True, tuning=Tuning())
    actuator.unit = UnitStatus("llm-main.service", "active", "running", 0, 0, 100,
                               main_started=1000.0)
    await engine.tick()  # systemd says when this run began
    assert engine.intake.run_started == 1000.0
    engine.intake.finding(Observation.bad("log", Cause.GPU_FAULT, "ROCm error: old run"), at=990.0)
    assert not engine.intake.inbox  # the run before: not this engine's
    engine.intake.finding(Observation.bad("log", Cause.GPU_FAULT, "ROCm error: this run"), at=1200.0)
    await engine.tick()
    assert actuator.switches == ["vulkan"] and engine.memory.cause == "gpu_fault"


def test_the_journal_stamps_entries_of_this_kernel_boot_not_the_configured_one():
    """The configurable boot_id_path belongs to reboot_required; journald stamps the
    kernel's boot, and the reader compares with that one."""
    from llm_supervisor.systemd.journal import JournalReader, kernel_boot_id
    from llm_supervisor.systemd.systemctl import Systemd
    got: list[float | None] = []
    reader = JournalReader(Systemd())
    assert reader.boot_id == kernel_boot_id().replace("-", "") != ""
    reader.add_unit("llm-a.service", lambda m, c, at, pid: got.append(at))
    for boot in (reader.boot_id, "0" * 32):
        reader.deliver({"__CURSOR": f"s=x;i={len(got) + 1:x};b=b;m=1;t=1;x=0",
                        "_SYSTEMD_UNIT": "llm-a.service", "MESSAGE": "ROCm error",
                        "__MONOTONIC_TIMESTAMP": "7000000", "_BOOT_ID": boot})
    assert got == [7.0, float("-inf")]
