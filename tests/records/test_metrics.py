"""Metrics: what a scrape of ``render()`` and the textfile hold, parsed back with
prometheus_client's own parser."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from llm_supervisor import config
from llm_supervisor.causes import Cause
from llm_supervisor.engine import Engine
from llm_supervisor.records.memory import EngineMemory
from llm_supervisor.records.metrics import TEXTFILE, EngineView, Metrics
from llm_supervisor.states import EngineState

Labels = frozenset[tuple[str, str]]


def samples(text: bytes | str) -> dict[tuple[str, Labels], float]:
    if isinstance(text, bytes):
        text = text.decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(found: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def names(found: dict[tuple[str, Labels], float], name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in found if n == name]


MAIN = EngineView("main", "healthy", "rocm", tokens_per_second=41.5)
SMALL = EngineView("small", "degraded", "vulkan", reboot_required=True)
PROBES = {"rocm": True, "vulkan": True, "opencl": False, "cpu": True}


def test_render_holds_the_gauges_from_the_last_refresh():
    metrics = Metrics()
    metrics.refresh([MAIN, SMALL], PROBES)
    found = samples(metrics.render())
    assert metrics.content_type == CONTENT_TYPE_LATEST
    assert metrics.content_type.startswith("text/plain; version=")

    assert get(found, "llm_supervisor_engine_up", engine="main") == 1
    assert get(found, "llm_supervisor_engine_up", engine="small") == 0
    for state in EngineState:
        assert get(found, "llm_supervisor_engine_state", engine="small", state=state.value) == (
            1 if state == EngineState.DEGRADED else 0)
    assert {t["tier"]: get(found, "llm_supervisor_engine_tier", **t)
            for t in names(found, "llm_supervisor_engine_tier") if t["engine"] == "main"} == {
        "rocm": 1, "vulkan": 0, "opencl": 0, "cpu": 0}
    assert get(found, "llm_supervisor_engine_reboot_required", engine="main") == 0
    assert get(found, "llm_supervisor_engine_reboot_required", engine="small") == 1
    assert get(found, "llm_supervisor_canary_tokens_per_second", engine="main") == 41.5
    assert names(found, "llm_supervisor_canary_tokens_per_second") == [{"engine": "main"}]
    assert {t["tier"]: get(found, "llm_supervisor_tier_available", **t)
            for t in names(found, "llm_supervisor_tier_available")} == {
        "rocm": 1, "vulkan": 1, "opencl": 0, "cpu": 1}


def test_refresh_replaces_the_snapshot_so_removed_engines_disappear():
    metrics = Metrics()
    metrics.refresh([MAIN, SMALL], PROBES)
    metrics.refresh([MAIN], {})
    found = samples(metrics.render())
    assert names(found, "llm_supervisor_engine_up") == [{"engine": "main"}]
    assert names(found, "llm_supervisor_tier_available") == []


def test_a_demotion_counts_a_switch_and_moves_the_tier_gauge():
    metrics = Metrics()
    metrics.refresh([MAIN], PROBES)
    event = {"ts": "2026-11-22T16:00:00Z", "engine": "main", "type": "tier", "from": "rocm",
             "to": "vulkan", "cause": "hang", "reason": "demoted from rocm: generation hung:"
             " no token within 2s (3 checks in a row)", "evidence": None}
    metrics.observe_event(event)
    metrics.observe_event({"type": "state", "engine": "main", "from": "healthy",
                           "to": "degraded", "reason": "rocm: canary hung"})
    metrics.refresh([EngineView("main", "starting", "vulkan")], PROBES)
    found = samples(metrics.render())

    switch = {"engine": "main", "from": "rocm", "to": "vulkan", "cause": "hang"}
    assert get(found, "llm_supervisor_tier_switches_total", **switch) == 1
    assert names(found, "llm_supervisor_tier_switches_total") == [switch]
    assert get(found, "llm_supervisor_engine_tier", engine="main", tier="vulkan") == 1
    assert get(found, "llm_supervisor_engine_tier", engine="main", tier="rocm") == 0
    assert get(found, "llm_supervisor_engine_up", engine="main") == 0
    assert names(found, "llm_supervisor_canary_tokens_per_second") == []

    metrics.observe_event(event)
    found = samples(metrics.render())
    assert get(found, "llm_supervisor_tier_switches_total", **switch) == 2


def test_a_first_start_has_from_none_and_unknown_tiers_stay_bounded():
    metrics = Metrics()
    metrics.observe_event({"type": "tier", "engine": "main", "from": None, "to": "rocm",
                           "cause": "start", "reason": "starting on rocm"})
    metrics.observe_event({"type": "tier", "engine": "main", "from": "rocm", "to": "tpu",
                           "cause": "something new", "reason": "x"})
    found = samples(metrics.render())
    assert get(found, "llm_supervisor_tier_switches_total", engine="main", to="rocm",
               cause="start", **{"from": "none"}) == 1
    assert get(found, "llm_supervisor_tier_switches_total", engine="main", to="other",
               cause="other", **{"from": "rocm"}) == 1


def test_reloads_are_counted_by_result():
    metrics = Metrics()
    for result in ("applied", "rejected", "applied", "bogus"):
        metrics.observe_event({"type": "reload", "to": result, "reason": "SIGHUP: ..."})
    found = samples(metrics.render())
    assert get(found, "llm_supervisor_reloads_total", result="applied") == 2
    assert get(found, "llm_supervisor_reloads_total", result="rejected") == 1
    assert get(found, "llm_supervisor_reloads_total", result="other") == 1


def test_the_latency_histogram_counts_observations_into_buckets():
    metrics = Metrics()
    for seconds in (0.0004, 0.003, 0.2, 4.0, 45.0):
        metrics.observe_check("main", "liveness", seconds)
    metrics.observe_check("main", "canary", 1.5)
    found = samples(metrics.render())

    def bucket(le: str, check: str = "liveness") -> float:
        return get(found, "llm_supervisor_check_latency_seconds_bucket", engine="main",
                   check=check, le=le)

    assert bucket("0.001") == 1
    assert bucket("0.005") == 2
    assert bucket("0.25") == 3
    assert bucket("5.0") == 4
    assert bucket("30.0") == 4
    assert bucket("+Inf") == 5
    assert bucket("1.0", "canary") == 0 and bucket("2.5", "canary") == 1
    assert get(found, "llm_supervisor_check_latency_seconds_count", engine="main",
               check="liveness") == 5
    assert math.isclose(get(found, "llm_supervisor_check_latency_seconds_sum", engine="main",
                            check="liveness"), 49.2034)


def test_the_textfile_is_written_whole_and_leaves_no_temp_file(tmp_path: Path):
    metrics = Metrics()
    metrics.refresh([MAIN], PROBES)
    metrics.observe_event({"type": "reload", "to": "applied"})
    (tmp_path / TEXTFILE).write_text("stale\n")
    path = metrics.write_textfile(tmp_path)

    assert path == tmp_path / "llm_supervisor.prom"
    assert [p.name for p in tmp_path.iterdir()] == ["llm_supervisor.prom"]
    assert path.read_bytes() == metrics.render()
    found = samples(path.read_text())
    assert get(found, "llm_supervisor_engine_up", engine="main") == 1
    assert get(found, "llm_supervisor_reloads_total", result="applied") == 1


def test_two_instances_share_nothing():
    one, two = Metrics(), Metrics()
    one.refresh([MAIN], PROBES)
    one.observe_event({"type": "reload", "to": "applied"})
    one.observe_check("main", "canary", 0.5)
    found = samples(two.render())
    assert {name for name, _ in found} == {  # only the supervisor's own, all zero
        "llm_supervisor_degraded", "llm_supervisor_events_dropped_total",
        "llm_supervisor_connections_refused_total"} and not any(found.values())
    assert ("llm_supervisor_engine_up", frozenset({("engine", "main")})) in samples(one.render())


@pytest.mark.parametrize("cause", list(Cause), ids=str)
def test_the_cause_label_is_the_events_cause(cause: Cause):
    """The label is the cause the event carries (data), never recovered from its reason."""
    metrics = Metrics()
    metrics.observe_event({"type": "tier", "engine": "e", "from": "rocm", "to": "vulkan",
                           "cause": cause.value, "reason": "demoted from rocm by uid 0"})
    found = samples(metrics.render())
    assert get(found, "llm_supervisor_tier_switches_total", engine="e", to="vulkan",
               cause=cause.value, **{"from": "rocm"}) == 1


def test_the_demoted_gauge():
    metrics = Metrics()
    metrics.refresh([EngineView("low", "healthy", "vulkan", demoted=True), MAIN], PROBES)
    found = samples(metrics.render())
    assert get(found, "llm_supervisor_engine_demoted", engine="low") == 1
    assert get(found, "llm_supervisor_engine_demoted", engine="main") == 0


async def test_engine_view_reads_a_real_engine():
    cfg = config.loads('[[engine]]\nname = "main"\nmodel = "qwen2.5:7b-instruct"\n')
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404))
                                 ) as http:
        engine = Engine(cfg, cfg.engines[0], EngineMemory(), actuator=None,  # type: ignore[arg-type]
                        http=http)
        assert engine.view() == EngineView("main", "stopped", None)
        engine.memory.state = EngineState.HEALTHY.value
        engine.memory.tier = "vulkan"
        engine.memory.reboot_required = True
        engine.last_check = {"ok": True, "latency_ms": 3.0, "tokens_per_second": 12.5}
        assert engine.view() == EngineView("main", "healthy", "vulkan", True, 12.5)
        engine.memory.demoted_from = "rocm"
        assert engine.view().demoted


def test_the_supervisors_own_health():
    from llm_supervisor.records.metrics import SupervisorView
    metrics = Metrics()
    metrics.refresh([], {}, SupervisorView(degraded=True, events_dropped=3,
                                           followers_dropped=2, connections_refused=7))
    found = samples(metrics.render())
    assert get(found, "llm_supervisor_degraded") == 1
    assert get(found, "llm_supervisor_events_dropped_total", what="events") == 3
    assert get(found, "llm_supervisor_events_dropped_total", what="followers") == 2
    assert get(found, "llm_supervisor_connections_refused_total") == 7
    metrics.refresh([], {})
    assert get(samples(metrics.render()), "llm_supervisor_degraded") == 0
