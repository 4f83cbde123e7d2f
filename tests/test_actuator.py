"""The actuator and the recorder alone: a switch is a transaction against a fake systemd and
real unit files; a check's events are recorded once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeSystemd, Notes

from llm_supervisor import config
from llm_supervisor.actuator import SystemdActuator
from llm_supervisor.config import EngineConfig
from llm_supervisor.errors import SystemdError
from llm_supervisor.host.tuning import Tuning
from llm_supervisor.host.view import HostView
from llm_supervisor.records.disk import Disk
from llm_supervisor.records.history import EventLog
from llm_supervisor.records.memory import State
from llm_supervisor.records.metrics import EngineView, SupervisorView
from llm_supervisor.records.recorder import Recorder
from llm_supervisor.states import EngineState
from llm_supervisor.systemd import units


def setup(tmp_path: Path) -> tuple[SystemdActuator, FakeSystemd, Recorder, Notes, Disk,
                                   EngineConfig]:
    cfg = config.loads(f'[supervisor]\nunit_dir = "{tmp_path}/units"\nstate_dir = "{tmp_path}"\n'
                       '[[engine]]\nname = "main"\nexec = "/usr/local/bin/ollama serve"\n')
    fake, notes, disk, state = FakeSystemd(), Notes(), Disk(), State()
    recorder = Recorder(events=EventLog(tmp_path / "events"), disk=disk, state=state,
                        state_path=tmp_path / "state.json",
                        notify=notes.notify, gauges=lambda: ({}, SupervisorView()))
    actuator = SystemdActuator(fake, HostView(recorder.event), recorder, lambda: cfg,
                               lambda: units.HostFacts(groups=frozenset({"render", "video"})))
    return actuator, fake, recorder, notes, disk, cfg.engines[0]


def tier_of(tmp_path: Path) -> str:
    text = (tmp_path / "units" / "llm-main.service.d" / "50-tier.conf").read_text()
    return next(line.split("=", 2)[2].strip('"') for line in text.splitlines()
                if "LLM_SUPERVISOR_TIER=" in line)


async def test_a_switch_writes_reloads_resets_and_restarts(tmp_path: Path) -> None:
    actuator, fake, *_ , disk, engine = setup(tmp_path)
    try:
        await actuator.switch(engine, "vulkan", "rocm", None)
        assert tier_of(tmp_path) == "vulkan"
        assert fake.calls == [("daemon-reload",), ("reset-failed", "llm-main.service"),
                              ("restart", "llm-main.service")]
    finally:
        disk.close()


async def test_a_switch_that_fails_puts_the_units_files_back(tmp_path: Path) -> None:
    actuator, fake, *_ , disk, engine = setup(tmp_path)
    try:
        await actuator.switch(engine, "rocm", None, None)

        async def broken(unit: str) -> None:
            raise SystemdError(["systemctl", "restart", unit], "Job failed")

        fake.restart = broken  # type: ignore[method-assign]
        with pytest.raises(SystemdError):
            await actuator.switch(engine, "vulkan", "rocm", None)
        assert tier_of(tmp_path) == "rocm"  # the files say what the unit runs
    finally:
        disk.close()


async def test_a_restart_that_fails_puts_back_the_values_the_engine_runs_with(
        tmp_path: Path) -> None:
    """A restart on the same tier derives the host's values afresh; when it fails, the unit
    goes back to the values the running process was started with (what status reports)."""
    actuator, fake, *_ , disk, engine = setup(tmp_path)
    unit = tmp_path / "units" / "llm-main.service"
    try:
        kept = Tuning({"OLLAMA_NUM_PARALLEL": "7"}, "as at its start")

        async def broken(unit: str) -> None:
            raise SystemdError(["systemctl", "restart", unit], "Job failed")

        fake.restart = broken  # type: ignore[method-assign]
        with pytest.raises(SystemdError):
            await actuator.switch(engine, "rocm", "rocm", kept)
        assert 'Environment="OLLAMA_NUM_PARALLEL=7"' in unit.read_text()
        assert "# as at its start" in unit.read_text()
        assert tier_of(tmp_path) == "rocm"
    finally:
        disk.close()


async def test_a_checks_events_are_recorded_once(tmp_path: Path) -> None:
    actuator, fake, recorder, notes, disk, engine = setup(tmp_path)
    writes: list[str] = []
    write_state = disk.write_state
    disk.write_state = lambda path, text: (writes.append(text), write_state(path, text))  # type: ignore[method-assign]
    try:
        view = EngineView("main", EngineState.STARTING.value, "vulkan")
        actuator.commit(view, [("state", {"to": "degraded", "cause": "gpu_fault"}),
                               ("tier", {"from_": "rocm", "to": "vulkan"}),
                               ("state", {"to": "starting"})])
        await disk.drain()
        lines = (tmp_path / "events" / "current.jsonl").read_text().splitlines()
        assert [json.loads(line)["type"] for line in lines] == ["state", "tier", "state"]
        assert len(writes) == 1 and len([n for n in notes.sent if n.startswith("STATUS=")]) == 1
        assert recorder.generation == 3
        assert recorder.state_error is None
    finally:
        disk.close()


async def test_the_record_reads_the_views_engines_hand_over_and_forgets_a_removed_one(
        tmp_path: Path) -> None:
    """STATUS= and the metrics read each engine's view as its last check handed it over (the
    record never calls an engine); a check without events hands its view over and writes
    nothing; a removed engine is gone from both."""
    actuator, fake, recorder, notes, disk, engine = setup(tmp_path)
    writes: list[str] = []
    write_state = disk.write_state
    disk.write_state = lambda path, text: (writes.append(text), write_state(path, text))  # type: ignore[method-assign]
    try:
        actuator.commit(EngineView("main", "healthy", "rocm"), [("state", {"to": "healthy"})])
        assert notes.sent[-1] == "STATUS=main: healthy on rocm"
        actuator.commit(EngineView("main", "healthy", "rocm", tokens_per_second=42.0), [])
        await disk.drain()
        assert len(writes) == 1 and len(notes.sent) == 1  # no event: nothing written or sent
        assert b'llm_supervisor_canary_tokens_per_second{engine="main"} 42.0' in \
            recorder.metrics_text()
        recorder.show(EngineView("side", "starting", None))
        recorder.update_status()
        assert notes.sent[-1] == "STATUS=main: healthy on rocm; side: starting"
        recorder.forget("main")
        recorder.update_status()
        assert notes.sent[-1] == "STATUS=side: starting"
        assert b'engine="main"' not in recorder.metrics_text()
    finally:
        disk.close()
