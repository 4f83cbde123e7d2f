"""Prometheus metrics: engine up/state/tier, tier switches by reason, check latency, canary
tokens/s, reloads by result, tier availability.

Each ``Metrics`` owns its registry (no global one). Gauges come from the last ``refresh()``
snapshot, built into families at scrape time, so an engine removed by a reload disappears;
counters and the histogram are fed by ``observe_event`` / ``observe_check``. Served on
``GET /metrics`` via ``render()``, and optionally written for node-exporter's textfile collector.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llm_supervisor.causes import Cause
from llm_supervisor.states import EngineState
from llm_supervisor.tiers import TIERS

TEXTFILE = "llm_supervisor.prom"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
RELOAD_RESULTS = frozenset({"applied", "rejected"})

def _tier_label(tier: str | None) -> str:
    if tier is None:
        return "none"
    return tier if tier in TIERS else "other"


def _cause_label(cause: Any) -> str:
    """The cause an event carries; a bounded label whatever the event holds."""
    return cause if cause in CAUSES else "other"


CAUSES = frozenset(c.value for c in Cause)


@dataclass(frozen=True)
class SupervisorView:
    """The supervisor's own health: plain data for the gauges."""

    degraded: bool = False
    events_dropped: int = 0
    followers_dropped: int = 0
    connections_refused: int = 0


@dataclass(frozen=True)
class EngineView:
    """What the gauges and ``STATUS=`` read of one engine: plain data, built by the engine
    (``Engine.view``), so the records never read an engine and tests need no daemon."""

    name: str
    state: str
    tier: str | None
    reboot_required: bool = False
    tokens_per_second: float | None = None
    demoted: bool = False
    busy: bool = False
    speed_reference: float | None = None
    pinned: str | None = None
    demoted_from: str | None = None
    demoted_at: float | None = None
    trouble: str | None = None  # why, for a blocked, failed or degraded engine
    best_reference: float | None = None  # tokens/s learned on the best tier of its chain
    slots: int | None = None    # requests it serves at once, when known
    draining: bool = False      # a planned switch waits for its users to go (``[agent]``)


class _Snapshot(Collector):
    """The gauges, built from the last refresh at each scrape."""

    def __init__(self) -> None:
        self.engines: tuple[EngineView, ...] = ()
        self.probes: dict[str, bool] = {}
        self.health = SupervisorView()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("llm_supervisor_engine_up", "1 when the engine is healthy",
                               labels=["engine"])
        state = GaugeMetricFamily("llm_supervisor_engine_state",
                                  "1 for the engine's current state", labels=["engine", "state"])
        tier = GaugeMetricFamily("llm_supervisor_engine_tier",
                                 "1 for the tier the engine runs on", labels=["engine", "tier"])
        reboot = GaugeMetricFamily("llm_supervisor_engine_reboot_required",
                                   "1 when a failed GPU reset needs a reboot", labels=["engine"])
        demoted = GaugeMetricFamily("llm_supervisor_engine_demoted",
                                    "1 when the engine runs below the tier it fell from",
                                    labels=["engine"])
        busy = GaugeMetricFamily("llm_supervisor_engine_busy",
                                 "1 while a canary is overdue and the engine makes progress"
                                 " (busy, not broken)", labels=["engine"])
        draining = GaugeMetricFamily("llm_supervisor_engine_draining",
                                     "1 while a planned switch waits for the requests in flight"
                                     " (the balancer sends it nothing new)", labels=["engine"])
        rate = GaugeMetricFamily("llm_supervisor_canary_tokens_per_second",
                                 "The last successful canary's generation rate",
                                 labels=["engine"])
        reference = GaugeMetricFamily("llm_supervisor_speed_reference_tokens_per_second",
                                      "The generation rate this engine learned on its tier"
                                      " (the median of its healthy canaries)",
                                      labels=["engine", "tier"])
        for e in self.engines:
            up.add_metric([e.name], float(e.state == EngineState.HEALTHY))
            for s in EngineState:
                state.add_metric([e.name, s.value], float(e.state == s))
            for t in TIERS:
                tier.add_metric([e.name, t], float(e.tier == t))
            reboot.add_metric([e.name], float(e.reboot_required))
            demoted.add_metric([e.name], float(e.demoted))
            busy.add_metric([e.name], float(e.busy))
            draining.add_metric([e.name], float(e.draining))
            if e.tokens_per_second is not None:
                rate.add_metric([e.name], e.tokens_per_second)
            if e.speed_reference is not None and e.tier is not None:
                reference.add_metric([e.name, e.tier], e.speed_reference)
        available = GaugeMetricFamily("llm_supervisor_tier_available",
                                      "1 when the host probe found the tier", labels=["tier"])
        for t in TIERS:
            if t in self.probes:
                available.add_metric([t], float(self.probes[t]))
        degraded = GaugeMetricFamily("llm_supervisor_degraded", "1 when the supervisor cannot"
                                     " keep its records (a full or failing state disk)")
        degraded.add_metric([], float(self.health.degraded))
        dropped = CounterMetricFamily("llm_supervisor_events_dropped", "Events lost (backlog"
                                      " overflow on a full disk) or followers dropped for lag",
                                      labels=["what"])
        dropped.add_metric(["events"], self.health.events_dropped)
        dropped.add_metric(["followers"], self.health.followers_dropped)
        refused = CounterMetricFamily("llm_supervisor_connections_refused",
                                      "Control socket connections turned away by a cap")
        refused.add_metric([], self.health.connections_refused)
        yield from (up, state, tier, reboot, demoted, busy, draining, rate, reference, available,
                    degraded, dropped, refused)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self.tier_switches = Counter(
            "llm_supervisor_tier_switches_total", "Tier switches, by cause",
            ["engine", "from", "to", "cause"], registry=self.registry)
        self.reloads = Counter("llm_supervisor_reloads_total", "Config reloads, by result",
                               ["result"], registry=self.registry)
        self.failed_checks = Counter(
            "llm_supervisor_failed_checks_total", "Checks that failed (outside the start-up"
            " grace), by the cause the decision took", ["engine", "cause"],
            registry=self.registry)
        self.check_latency = Histogram(
            "llm_supervisor_check_latency_seconds", "How long a health check took",
            ["engine", "check"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def refresh(self, engines: Iterable[EngineView], probes: Mapping[str, bool],
                health: SupervisorView | None = None) -> None:
        """Replace the gauges' snapshot: engines as they are now, probes as tier -> present."""
        self._snapshot.engines = tuple(engines)
        self._snapshot.probes = dict(probes)
        self._snapshot.health = health or SupervisorView()

    def observe_event(self, event: Mapping[str, Any]) -> None:
        """Count what an event says; events other than tier switches and reloads are ignored."""
        if event.get("type") == "tier":
            self.tier_switches.labels(event.get("engine") or "", _tier_label(event.get("from")),
                                      _tier_label(event.get("to")),
                                      _cause_label(event.get("cause"))).inc()
        elif event.get("type") == "reload":
            result = event.get("to")
            self.reloads.labels(result if result in RELOAD_RESULTS else "other").inc()

    def observe_check(self, engine: str, check: str, seconds: float) -> None:
        self.check_latency.labels(engine, check).observe(seconds)

    def observe_failure(self, engine: str, cause: str) -> None:
        self.failed_checks.labels(engine, _cause_label(cause)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self, directory: Path) -> Path:
        """Write ``llm_supervisor.prom`` for node-exporter: a temp file, then a rename."""
        path = directory / TEXTFILE
        write_to_textfile(str(path), self.registry)
        return path
