"""The daemon's lifecycle alone, through its injectable seams: a fake systemd (the one
interface the lifecycle talks to systemd through), a recording notifier, and the shutdown
trigger ``serve`` takes instead of signals. Startup writes the units, reconciles and says
READY=1 once the socket answers; a reload adds an engine; shutdown says STOPPING=1, saves the
state and leaves the engines running (nothing is stopped)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from fakes import FakeSystemd, Notes, SlowStarts

from llm_supervisor.control import client
from llm_supervisor.daemon import Setup, Supervisor
from llm_supervisor.systemd import units


def write_config(tmp: Path, engines: list[str]) -> Path:
    path = tmp / "etc" / "supervisor.toml"
    path.parent.mkdir(exist_ok=True)
    text = f"""
[supervisor]
socket = "{tmp}/run/control.sock"
socket_group = "root"
state_dir = "{tmp}/state"
unit_dir = "{tmp}/units"
watch_config = false
probe_timeout = "5s"
kfd_path = "{tmp}/no-kfd"
[health]
interval = "1s"
startup_grace = "60s"
[tiers.rocm]
available = "never"
[tiers.vulkan]
available = "never"
"""
    for name in engines:
        text += (f'[[engine]]\nname = "{name}"\nexec = "/bin/sleep infinity"\n'
                 f'listen = "127.0.0.1:{1 + engines.index(name)}"\nchain = ["cpu"]\n'
                 'user = "root"\ngroup = "root"\n')
    path.write_text(text)
    return path


async def until(predicate, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def test_building_the_daemon_touches_no_file(tmp_path: Path) -> None:
    """``Setup.read`` does the reading; the ``Supervisor`` built from it is whole (what
    startup and the control API read is there) and has written nothing: no state, no socket,
    no units."""
    setup = Setup.read(write_config(tmp_path, ["main"]))
    before = sorted(tmp_path.rglob("*"))
    sup = Supervisor(setup, systemd=FakeSystemd(), notifier=Notes())
    assert sorted(tmp_path.rglob("*")) == before
    assert sup.generation == 0 and sup.control.refused == 0 and sup.journal.cursor is None
    assert sup.state_path == tmp_path / "state" / "state.json" and sup.engines == {}


async def test_startup_reload_and_shutdown_through_the_seams(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["main"])
    fake, notes = FakeSystemd(), Notes()
    sup = Supervisor(Setup.read(config), systemd=fake, notifier=notes)
    stop = asyncio.Event()
    serving = asyncio.create_task(sup.serve(shutdown_trigger=stop))
    try:
        await until(lambda: "READY=1" in notes.sent)
        assert (tmp_path / "units" / "llm-main.service").is_file()  # before READY
        await until(lambda: ("restart", "llm-main.service") in fake.calls)  # then started
        assert fake.calls.index(("daemon-reload",)) < fake.calls.index(
            ("restart", "llm-main.service"))  # files first, one daemon-reload, then start
        socket = str(tmp_path / "run" / "control.sock")
        status = await asyncio.to_thread(client.request, socket, "GET", "/v1/status")
        document = json.loads(status.body)
        assert [e["name"] for e in document["engines"]] == ["main"]
        assert document["engines"][0]["tier"] == "cpu"
        assert any(s.startswith("STATUS=main: starting on cpu") for s in notes.sent), notes.sent

        write_config(tmp_path, ["main", "added"])  # a reload adds an engine
        ok, outcome = await sup.reload("test")
        assert ok and outcome["diff"]["added"] == ["added"], outcome
        assert ("restart", "llm-added.service") in fake.calls
        assert fake.calls.count(("restart", "llm-main.service")) == 1  # untouched
        assert any(s.startswith("RELOADING=1") for s in notes.sent)
        # the client's reload --json prints the daemon's answer: applied, or rejected and why
        from llm_supervisor.control.cli import cli
        code = await asyncio.to_thread(cli, ["--socket", socket, "reload", "--json"])
        assert code == 0
        (tmp_path / "etc" / "supervisor.toml").write_text("[[engine]]\nname = 'x y'\n")
        code = await asyncio.to_thread(cli, ["--socket", socket, "reload", "--json"])
        assert code == 1
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)
    assert "STOPPING=1" in notes.sent
    assert not [c for c in fake.calls if c[0] == "stop"]  # engines keep serving
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert set(state["engines"]) == {"main", "added"}
    assert state["engines"]["main"]["tier"] == "cpu"
    events = (tmp_path / "state" / "events" / "current.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["type"] for line in events]
    assert kinds[0] in ("probe", "started") and "reload" in kinds and kinds[-1] == "stopped"


async def test_ready_waits_for_no_start_and_the_engines_show_as_starting(tmp_path: Path) -> None:
    """READY comes once the units are written and the socket answers: the starts are systemd's
    jobs and run after it. Until an engine is placed it shows as starting, whatever its record
    said before (here: healthy on another tier), and its checks do not run."""
    config = write_config(tmp_path, ["one", "two"])
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"engines": {
        "one": {"tier": "vulkan", "state": "healthy", "reason": "healthy: canary ok"}}}))
    fake, notes = SlowStarts(), Notes()
    sup = Supervisor(Setup.read(config), systemd=fake, notifier=notes)
    stop = asyncio.Event()
    serving = asyncio.create_task(sup.serve(shutdown_trigger=stop))
    try:
        await until(lambda: "READY=1" in notes.sent)
        assert not [c for c in fake.calls if c[0] == "restart"]  # no start has run yet
        socket = str(tmp_path / "run" / "control.sock")
        status = await asyncio.to_thread(client.request, socket, "GET", "/v1/status")
        engines = {e["name"]: e for e in json.loads(status.body)["engines"]}
        assert engines["one"]["state"] == engines["two"]["state"] == "starting"
        assert engines["one"]["reason"] == "starting on cpu", engines["one"]
        assert not {"one", "two"} & set(sup.tasks)  # no check judges an unplaced engine
        fake.release.set()
        await until(lambda: {"one", "two"} <= set(sup.tasks))
        assert fake.calls.count(("restart", "llm-one.service")) == 1
        assert sup.engines["one"].tier == "cpu" and sup.engines["one"].placing is None
        events = (state / "events" / "current.jsonl").read_text().splitlines()
        tiers = [json.loads(e) for e in events if json.loads(e)["type"] == "tier"]
        assert [(t["engine"], t["from"], t["to"]) for t in tiers if t["engine"] == "one"] == \
            [("one", "vulkan", "cpu")]  # recorded once the switch was done
    finally:
        fake.release.set()
        stop.set()
        await asyncio.wait_for(serving, 30)


async def serve_once(config: Path, fake: FakeSystemd, monkeypatch, cpus: int,
                     body: Callable[[Supervisor], Awaitable[None]] | None = None) -> None:
    """One life of the daemon on a host with ``cpus`` CPUs: until its engine "main" is placed
    and checked, then ``body``, then shutdown."""
    monkeypatch.setattr(units, "read_cpu_count", lambda: cpus)
    notes, stop = Notes(), asyncio.Event()
    sup = Supervisor(Setup.read(config), systemd=fake, notifier=notes)
    serving = asyncio.create_task(sup.serve(shutdown_trigger=stop))
    try:
        await until(lambda: "READY=1" in notes.sent and "main" in sup.tasks)
        if body is not None:
            await body(sup)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)


async def test_an_engine_keeps_its_derived_values_across_a_daemon_restart(
        tmp_path: Path, monkeypatch) -> None:
    """The host's facts change under a running engine (here its CPU count; on a real host its
    model's first pull makes the VRAM bound known): a restarted daemon adopts the engine with
    the values it was started with, does not restart it, and says what its next start will
    get. An operator's restart applies them."""
    config = write_config(tmp_path, ["main"])
    socket = str(tmp_path / "run" / "control.sock")
    unit = tmp_path / "units" / "llm-main.service"
    fake = FakeSystemd()

    def document() -> dict:
        return json.loads(client.request(socket, "GET", "/v1/engines/main").body)

    async def first(sup: Supervisor) -> None:
        assert 'Environment="OLLAMA_NUM_PARALLEL=2"' in unit.read_text()
        doc = await asyncio.to_thread(document)
        assert doc["derived_environment"]["OLLAMA_NUM_PARALLEL"] == "2"
        assert doc["derived_next"] is None

    await serve_once(config, fake, monkeypatch, 8, first)
    assert fake.calls.count(("restart", "llm-main.service")) == 1
    state = tmp_path / "state" / "state.json"
    assert json.loads(state.read_text())["engines"]["main"]["tuning"]["environment"] == {
        "OLLAMA_NUM_PARALLEL": "2", "OLLAMA_MAX_LOADED_MODELS": "1"}
    calls = len(fake.calls)

    async def second(sup: Supervisor) -> None:
        assert 'Environment="OLLAMA_NUM_PARALLEL=2"' in unit.read_text()
        assert ("daemon-reload",) not in fake.calls[calls:]  # no file was rewritten
        doc = await asyncio.to_thread(document)
        assert doc["derived_environment"]["OLLAMA_NUM_PARALLEL"] == "2"  # what it runs with
        assert doc["derived_next"]["environment"]["OLLAMA_NUM_PARALLEL"] == "16"
        assert "64 CPUs" in doc["derived_next"]["why"]
        assert fake.calls.count(("restart", "llm-main.service")) == 1  # adopted, not restarted
        done = await asyncio.to_thread(client.request, socket, "POST",
                                       "/v1/engines/main/restart", {})
        assert done.status == 200, done.body
        await until(lambda: fake.calls.count(("restart", "llm-main.service")) == 2)
        assert 'Environment="OLLAMA_NUM_PARALLEL=16"' in unit.read_text()
        doc = await asyncio.to_thread(document)
        assert doc["derived_environment"]["OLLAMA_NUM_PARALLEL"] == "16"
        assert doc["derived_next"] is None

    await serve_once(config, fake, monkeypatch, 64, second)


async def test_an_engine_started_by_an_older_build_keeps_its_unit_files_values(
        tmp_path: Path, monkeypatch) -> None:
    """A state.json without kept values (an older build's, or a daemon that died between a
    start and saving it): the values are read from the engine's own unit, so a daemon that
    now derives others still adopts the engine instead of restarting it."""
    config = write_config(tmp_path, ["main"])
    fake = FakeSystemd()
    state = tmp_path / "state" / "state.json"

    await serve_once(config, fake, monkeypatch, 8)
    document = json.loads(state.read_text())
    del document["engines"]["main"]["tuning"]
    state.write_text(json.dumps(document))
    calls = len(fake.calls)
    await serve_once(config, fake, monkeypatch, 64)
    assert ("restart", "llm-main.service") not in fake.calls[calls:]
    assert ("daemon-reload",) not in fake.calls[calls:]
    assert json.loads(state.read_text())["engines"]["main"]["tuning"]["environment"][
        "OLLAMA_NUM_PARALLEL"] == "2"


async def test_a_reload_removes_an_engine_before_the_one_daemon_reload(
        tmp_path: Path, monkeypatch) -> None:
    """The reload's plan applied (``llm_supervisor.reconcile``): an engine gone from the config
    is unsupervised, stopped and its files removed, then systemd reloads once; the engine kept
    is neither restarted nor stopped."""
    config = write_config(tmp_path, ["main", "gone"])
    fake = FakeSystemd()

    async def remove(sup: Supervisor) -> None:
        await until(lambda: "gone" in sup.tasks)
        calls = len(fake.calls)
        write_config(tmp_path, ["main"])
        ok, outcome = await sup.reload("test")
        assert ok and outcome["diff"]["removed"] == ["gone"], outcome
        assert fake.calls[calls:] == [("stop", "llm-gone.service"), ("daemon-reload",)]
        assert not (tmp_path / "units" / "llm-gone.service").exists()
        assert set(sup.engines) == {"main"} and "gone" not in sup.tasks
        assert "gone" not in sup.state.engines

    await serve_once(config, fake, monkeypatch, 8, remove)
