"""BENCHMARKS.md and its plots from dev/bench.py's results (benchmarks/results.json).

    python dev/bench_report.py [benchmarks/results.json]   # re-render without re-measuring
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import checkout  # dev/, the script's own directory

# the issue's goals (benchmarks, not tests)
GOAL_CPU_64 = 10.0        # % of one core at 64 engines, 1 s interval
GOAL_RSS_8 = 45.0         # MiB, daemon plus children, 8 engines
GOAL_RPS_32 = 2000.0      # status req/s at 32 clients
GOAL_P99_32 = 5.0         # ms
GOAL_READY_8 = 0.5        # s
GOAL_FAILOVER = 0.3       # s of overhead
GOAL_STATUS = 1.3         # x the bare interpreter's start
# SETTINGS in dev/bench.py: failures 3 x interval 1 s, restarts_per_tier 1 (two rounds)
DETECTION_BUDGET = 3 * 1.0 * 2


NOT_IN_RUN = "not measured: not in this run's results"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def fig(row: dict[str, Any], key: str, spec: str) -> str:
    """``row[key]`` formatted by ``spec``; a figure the run does not have, said so."""
    value = row.get(key)
    return NOT_IN_RUN if value is None else format(value, spec)


def measured(rows: Callable[[int], dict[str, Any]], xs: list[int],
             key: str) -> tuple[list[int], list[float]]:
    """The points of ``key`` the run has (a plot leaves the others out, never draws 0)."""
    got = [(x, rows(x)[key]) for x in xs if rows(x).get(key) is not None]
    return [x for x, _ in got], [y for _, y in got]


def plot(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list, list]],
         *, bar: bool = False, goal: float | None = None, logy: bool = False) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if bar:
        labels = list(series)
        values = [series[k][1][0] for k in labels]
        ax.barh(labels, values, color=["#2b6cb0"] + ["#a0aec0"] * (len(labels) - 1))
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        if goal is not None:
            ax.axvline(goal, color="#c53030", linestyle="--", label="goal")
            ax.legend()
    else:
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", label=name)
        if goal is not None:
            ax.axhline(goal, color="#c53030", linestyle="--", label="goal")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.legend()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def at(rows: dict[str, Any], part: str, n: int) -> dict[str, Any]:
    """The figures of ``part`` ("scale" or "load") at ``n`` engines or clients; {} if none
    (results.json has string keys, a fresh run int ones)."""
    return rows[part].get(str(n)) or rows[part].get(n) or {}


def render(r: dict[str, Any], figures: Path) -> str:
    figures.mkdir(parents=True, exist_ok=True)
    ours, ref = r["fleet"]["subject"], r["fleet"]["reference"]
    where = checkout.measured_at(r["provenance"]) if "provenance" in r else \
        f"at {r['subject']}, on {r['when']}"
    out = [f"# Benchmarks\n\nMeasured by `{r.get('command', 'dev/bench')}` {where}: this"
           " tree against"
           f" {r['reference']} (the reference), both under a real systemd in a throwaway"
           " container on that machine, shared with other work: expect noise. Simulated"
           " engines (`llm-supervisor-simengine`), checked every 1 s, a canary every 5th"
           " check. Re-render with `dev/bench_report.py`; raw numbers in "
           "`benchmarks/results.json`.\n"]
    out += status_section(r["status"], figures)
    out += load_section(ours, ref, figures)
    out += scale_section(ours, ref, figures)
    out += failover_section(r["failover"], r["engine_start"], figures)
    out.append("## Event history (dev/bench_events.py, 20,000 events)\n\n```\n"
               f"{r['events']}\n```\n")
    return "\n".join(out) + "\n"


def status_section(st: dict[str, Any], figures: Path) -> list[str]:
    bare = st["python -c pass"]["median"]
    subject = st["llm-supervisorctl status"]["median"]
    out = ["## `status` commands\n\nWall time from spawn to exit and peak RSS, median "
           "of the runs, interleaved, inside the container.\n"]
    out.append("| command | median ms | p90 ms | peak RSS MiB | × bare interpreter |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for label, v in st.items():
        out.append(f"| `{label}` | {v['median']:.1f} | {v['p90']:.1f} | {v['rss']:.1f} | "
                   f"{v['median'] / bare:.2f} |")
    out.append(f"\nGoal: `llm-supervisorctl status` within {GOAL_STATUS}× of the bare "
               f"interpreter: {subject / bare:.2f}× — {met(subject <= GOAL_STATUS * bare)}.\n")
    plot(figures / "status.png", "status commands (median wall time)", "", "ms",
         {k: ([0], [v["median"]]) for k, v in st.items()}, bar=True)
    out.append("![status commands](benchmarks/status.png)\n")
    return out


def load_section(ours: dict[str, Any], ref: dict[str, Any], figures: Path) -> list[str]:
    out = ["## Socket load (8 engines)\n\n`GET /v1/status` over the control socket, "
           "one connection per request, N concurrent clients (asyncio, in the "
           "container); the median of rounds alternating between the two daemons.\n"]
    out.append("| clients | req/s | p50 ms | p99 ms | reference req/s | reference p50 ms | "
               "reference p99 ms |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for clients in (1, 8, 32):
        a, b = at(ours, "load", clients), at(ref, "load", clients)
        if a:
            out.append(f"| {clients} | {fig(a, 'rps', ',.0f')} | {fig(a, 'p50', '.1f')} | "
                       f"{fig(a, 'p99', '.1f')} | {fig(b, 'rps', ',.0f')} | "
                       f"{fig(b, 'p50', '.1f')} | {fig(b, 'p99', '.1f')} |")
    if not any(at(ours, "load", clients) for clients in (1, 8, 32)):
        out.append("| - | not measured: the run had no 8 engines (`--engines`) | | | | | |")
    a32 = at(ours, "load", 32)
    if a32:
        out.append(f"\nGoal: ≥ {GOAL_RPS_32:,.0f} req/s with p99 < {GOAL_P99_32:.0f} ms at 32 "
                   f"clients: {a32['rps']:,.0f} req/s ({met(a32['rps'] >= GOAL_RPS_32)}), p99 "
                   f"{a32['p99']:.1f} ms ({met(a32['p99'] < GOAL_P99_32)}).\n")
        xs = [c for c in (1, 8, 32) if at(ours, "load", c)]
        plot(figures / "load_rps.png", "status req/s (8 engines)", "clients", "req/s",
             {"this tree": measured(lambda c: at(ours, "load", c), xs, "rps"),
              "reference": measured(lambda c: at(ref, "load", c), xs, "rps")})
        plot(figures / "load_p99.png", "status p99 latency (8 engines)", "clients", "ms",
             {"this tree": measured(lambda c: at(ours, "load", c), xs, "p99"),
              "reference": measured(lambda c: at(ref, "load", c), xs, "p99")}, goal=GOAL_P99_32)
        out.append("![req/s](benchmarks/load_rps.png) ![p99](benchmarks/load_p99.png)\n")
    return out


def scale_section(ours: dict[str, Any], ref: dict[str, Any], figures: Path) -> list[str]:
    counts = sorted(int(n) for n in ours["scale"])
    out = ["## CPU and memory by engine count\n\nCPU: the daemon's cgroup (the daemon "
           "and every child it ran, short-lived ones included) over a window once all "
           "engines are healthy, in % of one core. RSS: median of samples, the daemon "
           "alone and its whole cgroup. READY: `systemctl start llm-supervisor` until it "
           "returns (Type=notify: READY=1).\n"]
    out.append("| engines | CPU % | ref CPU % | RSS daemon MiB | ref | RSS with children MiB "
               "| ref | processes | ref | READY s | ref READY s |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in counts:
        a, b = at(ours, "scale", n), at(ref, "scale", n)
        cells = [fig(row, key, spec) for key, spec in (
            ("cpu", ".1f"), ("rss", ".0f"), ("rss_all", ".0f"), ("procs", "d"), ("ready", ".2f"))
            for row in (a, b)]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    goals = []
    if 64 in counts:
        cpu = at(ours, "scale", 64)["cpu"]
        goals.append(f"64 engines under {GOAL_CPU_64:.0f} % of a core: {cpu:.1f} % — "
                     f"{met(cpu < GOAL_CPU_64)}")
    if 8 in counts:
        rss, ready = at(ours, "scale", 8)["rss_all"], at(ours, "scale", 8)["ready"]
        goals.append(f"daemon plus children ≤ {GOAL_RSS_8:.0f} MiB at 8 engines: {rss:.0f} MiB"
                     f" — {met(rss <= GOAL_RSS_8)}")
        goals.append(f"READY ≤ {GOAL_READY_8:g} s at 8 engines: {ready:.2f} s — "
                     f"{met(ready <= GOAL_READY_8)}")
    out.append("\nGoals: " + ("; ".join(goals) or
                              "not measured: the run had neither 8 nor 64 engines") + ".\n")
    for key, title, unit, goal in (("cpu", "CPU (% of one core)", "%", GOAL_CPU_64),
                                   ("rss_all", "RSS, daemon plus children", "MiB", GOAL_RSS_8),
                                   ("ready", "systemctl start → READY", "s", GOAL_READY_8)):
        plot(figures / f"scale_{key}.png", title, "engines", unit,
             {"this tree": measured(lambda n: at(ours, "scale", n), counts, key),
              "reference": measured(lambda n: at(ref, "scale", n), counts, key)}, goal=goal)
    out.append("![CPU](benchmarks/scale_cpu.png) ![RSS](benchmarks/scale_rss_all.png) "
               "![READY](benchmarks/scale_ready.png)\n")
    return out


def failover_section(fo: dict[str, Any], start: float, figures: Path) -> list[str]:
    out = ["## Failover\n\nOne engine healthy on ROCm; then its ROCm start crashes every "
           "time (a fault plan, then `kill -9`): time until it is healthy on Vulkan. "
           f"Overhead = that time − the engine's own start ({start:.2f} s, unit start "
           "until it answers HTTP, measured here) − the detection budget "
           f"({DETECTION_BUDGET:.0f} s: `failures` 3 × `interval` 1 s, for the restart on "
           "the same tier and again for the demotion). systemd alone (`Restart=on-failure`)"
           " restarts the broken ROCm tier forever: it never serves again.\n"]
    out.append("| | fault → healthy on Vulkan s | overhead s |")
    out.append("| --- | ---: | ---: |")
    for label in ("subject", "reference"):
        total = fo[label]["total"]
        out.append(f"| {'this tree' if label == 'subject' else 'reference'} | {total:.2f} | "
                   f"{total - start - DETECTION_BUDGET:.2f} |")
    out.append("| systemd alone | never | — |")
    over = fo["subject"]["total"] - start - DETECTION_BUDGET
    out.append(f"\nGoal: overhead ≤ {GOAL_FAILOVER} s: {over:.2f} s — "
               f"{met(over <= GOAL_FAILOVER)}. (Negative: a crash pushed by systemd is acted on"
               " before the polling budget runs out.)\n")
    plot(figures / "failover.png", "fault → healthy on the next tier", "", "s",
         {"this tree": ([0], [fo["subject"]["total"]]),
          "reference": ([0], [fo["reference"]["total"]]),
          "engine start + budget": ([0], [start + DETECTION_BUDGET])}, bar=True)
    out.append("![failover](benchmarks/failover.png)\n")
    return out


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).resolve().parent.parent / "benchmarks/results.json"
    results = json.loads(source.read_text())
    (source.parent.parent / "BENCHMARKS.md").write_text(render(results, source.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
