"""Reload's plan alone (``llm_supervisor.reconcile``): from two configs, their diff, the host's
tiers and the running engines' facts to the steps, in the order the daemon applies them —
no engine, no systemd, no disk."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from llm_supervisor import config, reconcile
from llm_supervisor.diff import ConfigDiff, diff
from llm_supervisor.host.view import EngineFacts, HostView
from llm_supervisor.reconcile import (
    NO_TIER,
    AddEngine,
    Configure,
    Fail,
    FollowKernel,
    ReloadSystemd,
    RemoveEngine,
    Replace,
    StartOn,
    Supervise,
    UseConfig,
    WriteUnits,
    configured,
    plan,
)
from llm_supervisor.systemd.units import HostFacts


@dataclasses.dataclass(frozen=True)
class Probe:
    present: bool
    reason: str = "probed (test)"


HOST = HostFacts(frozenset({"render", "video"}))
PROBES = {"rocm": Probe(True), "vulkan": Probe(True), "opencl": Probe(False)}
ENGINE = '[[engine]]\nname = "{name}"\nlisten = "127.0.0.1:{port}"\n'


def conf(*names: str, extra: str = "", **engine_extra: str) -> config.Config:
    """A config of ollama engines (``engine_extra``: lines added to one engine's table)."""
    text = extra
    for port, name in enumerate(names, start=11434):
        text += ENGINE.format(name=name, port=port) + engine_extra.get(name, "")
    return config.loads(text)


def facts(cfg: config.Config, name: str, tier: str | None, **fields: object) -> EngineFacts:
    engine = cfg.engine(name)
    assert engine is not None
    return EngineFacts(name, engine, tier, **fields)  # type: ignore[arg-type]


def planned(old: config.Config, new: config.Config, engines: dict[str, EngineFacts], *,
            change: ConfigDiff | None = None, probes: dict[str, Probe] | None = None,
            device_skips: dict[str, dict[str, str]] | None = None,
            waiting: frozenset[str] = frozenset(),
            held: frozenset[str] = frozenset()) -> list[reconcile.Step]:
    if change is None:
        change = diff(old, new, {name: f.tier for name, f in engines.items()}, HOST)
    return plan(old, new, change, engines, probes=PROBES if probes is None else probes,
                device_skips=device_skips or {}, waiting=waiting, held=held)


def test_an_added_engine_is_written_added_started_then_supervised() -> None:
    old, new = conf("a"), conf("a", "c")
    assert planned(old, new, {"a": facts(old, "a", "rocm")}) == [
        WriteUnits((("c", "rocm"),)),  # the units first: a foreign file stops it all here
        UseConfig(),
        ReloadSystemd(),
        Configure("a"),
        AddEngine("c"),
        StartOn("c", "rocm", "added by reload: starting on rocm"),
        Supervise("c"),  # once started: its checks never judge a unit half-written
    ]


def test_a_changed_engine_restarts_on_the_tier_it_is_on() -> None:
    old = conf("a", "b")
    new = conf("a", "b", a='environment = { OLLAMA_NUM_PARALLEL = "2" }\n')
    engines = {"a": facts(old, "a", "vulkan"), "b": facts(old, "b", "rocm")}
    assert planned(old, new, engines) == [
        WriteUnits((("a", "vulkan"),)),
        UseConfig(),
        ReloadSystemd(),
        Configure("a"),
        Configure("b"),
        StartOn("a", "vulkan", "config changed: restarting on vulkan"),
    ]


def test_an_engine_the_operator_stopped_takes_its_new_units_and_is_neither_started_nor_moved(
        ) -> None:
    """The operator's hand is law: a reload writes a held engine's units with the new
    settings, but starts it only when the operator does; nor does it move one whose tier
    went away."""
    old = conf("a", "b")
    new = conf("a", "b", a='environment = { OLLAMA_NUM_PARALLEL = "2" }\n')
    engines = {"a": facts(old, "a", "vulkan"), "b": facts(old, "b", "rocm")}
    assert planned(old, new, engines, held=frozenset({"a"})) == [
        WriteUnits((("a", "vulkan"),)), UseConfig(), ReloadSystemd(), Configure("a"),
        Configure("b")]
    gone = {**PROBES, "rocm": Probe(False, "gone")}
    assert planned(old, old, engines, probes=gone, held=frozenset({"b"})) == [
        UseConfig(), Configure("a"), Configure("b")]
    assert Replace("b", "vulkan", "rocm") in planned(old, old, engines, probes=gone)


def test_a_removed_engine_goes_before_systemd_reloads_and_is_not_configured() -> None:
    old, new = conf("a", "b"), conf("a")
    engines = {"a": facts(old, "a", "rocm"), "b": facts(old, "b", "rocm")}
    assert planned(old, new, engines) == [
        UseConfig(), RemoveEngine("b"), ReloadSystemd(), Configure("a")]


def test_no_change_configures_and_nothing_else() -> None:
    old = new = conf("a")
    assert planned(old, new, {"a": facts(old, "a", "rocm")}) == [UseConfig(), Configure("a")]


def test_an_engine_with_no_usable_tier_fails_and_nothing_is_written_for_it() -> None:
    old = conf("a")
    new = conf("a", "c", c='chain = ["rocm"]\n')
    probes = {"rocm": Probe(False, "no /dev/kfd"), "vulkan": Probe(True)}
    steps = planned(old, new, {"a": facts(old, "a", "vulkan")}, probes=probes)
    assert steps == [UseConfig(), Configure("a"), AddEngine("c"), Fail("c", NO_TIER),
                     Supervise("c")]


def test_a_pinned_tier_wins_while_usable() -> None:
    old = conf("a")
    new = conf("a", a='environment = { OLLAMA_NUM_PARALLEL = "2" }\n')
    pinned = {"a": facts(old, "a", "rocm", pinned="vulkan")}
    assert StartOn("a", "vulkan", "config changed: restarting on vulkan") in planned(
        old, new, pinned)
    gone = {"rocm": Probe(True), "vulkan": Probe(False)}  # a pin the host no longer has
    assert StartOn("a", "rocm", "config changed: restarting on rocm") in planned(
        old, new, pinned, probes=gone)


def test_an_engine_left_on_a_tier_it_may_no_longer_use_moves() -> None:
    """Availability is retuned, not a change: nothing restarts the engine but the plan, which
    moves it off rocm — not a failed or blocked one, whose retry schedule stands."""
    old = conf("a", "b")
    new = conf("a", "b", extra='[tiers.rocm]\navailable = "never"\n')
    engines = {"a": facts(old, "a", "rocm"), "b": facts(old, "b", "rocm")}
    steps = planned(old, new, engines, waiting=frozenset({"b"}))
    assert steps == [UseConfig(), Configure("a"), Configure("b"), Replace("a", "vulkan", "rocm")]
    assert steps[-1].why == "config changed: rocm is no longer usable"  # type: ignore[union-attr]


def test_an_engine_that_may_use_no_tier_any_more_is_left_to_its_checks() -> None:
    old = conf("a", a='chain = ["rocm"]\n')
    new = conf("a", extra='[tiers.rocm]\navailable = "never"\n', a='chain = ["rocm"]\n')
    assert planned(old, new, {"a": facts(old, "a", "rocm")}) == [UseConfig(), Configure("a")]


def test_a_pending_reboot_and_the_builds_devices_rule_tiers_out() -> None:
    old = conf("a")
    new = conf("a", "c", a='environment = { OLLAMA_NUM_PARALLEL = "2" }\n')
    engines = {"a": facts(old, "a", "rocm", reboot_required=True)}
    steps = planned(old, new, engines, device_skips={"c": {"rocm": "no ROCm device listed"}})
    assert steps[0] == WriteUnits((("c", "vulkan"), ("a", "cpu")))


def test_a_changed_engine_forgets_the_tiers_it_showed_it_cannot_use() -> None:
    """``Engine.configure`` forgets them when the engine's own settings change (another build
    or flags); a unit changed by anything else keeps them: the plan reads the engine as it
    will be once configured."""
    old = conf("a")
    new = conf("a", a='environment = { OLLAMA_NUM_PARALLEL = "2" }\n')
    skipped = {"rocm": "rocm: backend fell back to the CPU"}
    engines = {"a": facts(old, "a", "vulkan", pinned="rocm", skipped=skipped)}
    assert StartOn("a", "rocm", "config changed: restarting on rocm") in planned(
        old, new, engines)
    kept = planned(old, old, engines, change=ConfigDiff(changed=("a",)))
    assert StartOn("a", "vulkan", "config changed: restarting on vulkan") in kept


def test_configured_reads_the_engine_as_the_new_config_makes_it() -> None:
    old = conf("a")
    new = conf("a", a='environment = { OLLAMA_NUM_PARALLEL = "2" }\n')
    running = facts(old, "a", "vulkan", skipped={"rocm": "dropped the device"})
    assert configured(running, old, "a") == running
    assert configured(running, new, "a") == dataclasses.replace(running, cfg=new.engines[0],
                                                               skipped={})
    assert configured(None, new, "a") == EngineFacts("a", new.engines[0])
    with pytest.raises(ValueError):
        configured(running, conf("b"), "a")


def test_the_plan_and_the_host_view_place_by_one_rule() -> None:
    """What the plan moves an engine to is what the host view (the engines' own decisions)
    says, device skips and the engine's own skips both counted."""
    old = conf("a")
    new = conf("a", extra='[tiers.rocm]\navailable = "never"\n')
    running = facts(old, "a", "rocm", skipped={"vulkan": "vulkan: garbage output"})
    view = HostView(lambda type, **fields: None)
    view.probes = {"rocm": Probe(True), "vulkan": Probe(True)}  # type: ignore[dict-item]
    view.device_skips = {"a": {"opencl": "no OpenCL device"}}
    steps = planned(old, new, {"a": running}, probes=view.probes,  # type: ignore[arg-type]
                    device_skips=view.device_skips)
    assert steps[-1] == Replace("a", "cpu", "rocm")
    assert view.place(new, configured(running, new, "a")) == "cpu"
    assert [c.tier for c in view.choices(new, running) if not c.usable] == [
        "rocm", "vulkan", "opencl"]


def test_a_changed_kernel_match_is_followed_last() -> None:
    old = conf("a")
    new = conf("a", extra='[logs]\nkernel_match = "_TRANSPORT=kernel SYSLOG_IDENTIFIER=k"\n')
    assert planned(old, new, {"a": facts(old, "a", "rocm")})[-1] == FollowKernel()


def test_the_plan_imports_neither_the_engine_nor_the_daemon() -> None:
    tree = ast.parse(Path(reconcile.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.split(".")[:2] in (
        ["llm_supervisor", "engine"], ["llm_supervisor", "daemon"])}, imported
