"""BENCHMARKS.md and its plots from dev/bench.py's results (benchmarks/results.json).

    python dev/bench_report.py [benchmarks/results.json]   # re-render without re-measuring
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# the goals (benchmarks, not tests)
GOAL_CPU_64 = 10.0        # % of one core at 64 engines, 1 s interval
GOAL_RSS_8 = 45.0         # MiB, daemon plus children, 8 engines
GOAL_RPS_32 = 2000.0      # status req/s at 32 clients
GOAL_P99_32 = 5.0         # ms
GOAL_READY_8 = 0.5        # s
GOAL_FAILOVER = 0.3       # s of overhead
GOAL_STATUS = 1.3         # x the bare interpreter's start
# SETTINGS in dev/bench.py: failures 3 x interval 1 s, restarts_per_tier 1 (two rounds)
DETECTION_BUDGET = 3 * 1.0 * 2


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


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


def render(r: dict[str, Any], figures: Path) -> str:
    figures.mkdir(parents=True, exist_ok=True)
    ours, ref = r["fleet"]["subject"], r["fleet"]["reference"]
    counts = sorted(int(n) for n in ours["scale"])

    def scale(rows: dict[str, Any], n: int) -> dict[str, Any]:
        return rows["scale"].get(str(n)) or rows["scale"].get(n) or {}

    def load(rows: dict[str, Any], n: int) -> dict[str, Any]:
        return rows["load"].get(str(n)) or rows["load"].get(n) or {}

    out = [f"# Benchmarks\n\nMeasured by `dev/bench` on {r['when']}, at {r['subject']} (this "
           f"tree) against {r['reference']} (the reference), both under a real systemd 252 in "
           "a throwaway container on this 2-core machine, shared with other work: expect "
           "noise. Simulated engines (`llm-supervisor-simengine`), checked every 1 s, a "
           "canary every 5th check. Re-render with `dev/bench_report.py`; raw numbers in "
           "`benchmarks/results.json`.\n"]

    # ---------------------------------------------------------------- status commands
    st = r["status"]
    bare = st["python -c pass"]["median"]
    subject = st["llm-supervisorctl status"]["median"]
    out.append("## `status` commands\n\nWall time from spawn to exit and peak RSS, median "
               "of the runs, interleaved, inside the container.\n")
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

    # ---------------------------------------------------------------- socket load
    out.append("## Socket load (8 engines)\n\n`GET /v1/status` over the control socket, "
               "one connection per request, N concurrent clients (asyncio, in the "
               "container); the median of rounds alternating between the two daemons.\n")
    out.append("| clients | req/s | p50 ms | p99 ms | reference req/s | reference p50 ms | "
               "reference p99 ms |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for clients in (1, 8, 32):
        a, b = load(ours, clients), load(ref, clients)
        if a:
            out.append(f"| {clients} | {a['rps']:,.0f} | {a['p50']:.1f} | {a['p99']:.1f} | "
                       f"{b.get('rps', 0):,.0f} | {b.get('p50', 0):.1f} | {b.get('p99', 0):.1f} |")
    a32 = load(ours, 32)
    if a32:
        out.append(f"\nGoal: ≥ {GOAL_RPS_32:,.0f} req/s with p99 < {GOAL_P99_32:.0f} ms at 32 "
                   f"clients: {a32['rps']:,.0f} req/s ({met(a32['rps'] >= GOAL_RPS_32)}), p99 "
                   f"{a32['p99']:.1f} ms ({met(a32['p99'] < GOAL_P99_32)}).\n")
        xs = [c for c in (1, 8, 32) if load(ours, c)]
        plot(figures / "load_rps.png", "status req/s (8 engines)", "clients", "req/s",
             {"this tree": (xs, [load(ours, c)["rps"] for c in xs]),
              "reference": (xs, [load(ref, c).get("rps", 0) for c in xs])})
        plot(figures / "load_p99.png", "status p99 latency (8 engines)", "clients", "ms",
             {"this tree": (xs, [load(ours, c)["p99"] for c in xs]),
              "reference": (xs, [load(ref, c).get("p99", 0) for c in xs])}, goal=GOAL_P99_32)
        out.append("![req/s](benchmarks/load_rps.png) ![p99](benchmarks/load_p99.png)\n")

    # ---------------------------------------------------------------- CPU and RSS
    out.append("## CPU and memory by engine count\n\nCPU: the daemon's cgroup (the daemon "
               "and every child it ran, short-lived ones included) over a window once all "
               "engines are healthy, in % of one core. RSS: median of samples, the daemon "
               "alone and its whole cgroup. READY: `systemctl start llm-supervisor` until it "
               "returns (Type=notify: READY=1).\n")
    out.append("| engines | CPU % | ref CPU % | RSS daemon MiB | ref | RSS with children MiB "
               "| ref | processes | ref | READY s | ref READY s |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in counts:
        a, b = scale(ours, n), scale(ref, n)
        out.append(f"| {n} | {a['cpu']:.1f} | {b.get('cpu', 0):.1f} | {a['rss']:.0f} | "
                   f"{b.get('rss', 0):.0f} | {a['rss_all']:.0f} | {b.get('rss_all', 0):.0f} | "
                   f"{a['procs']} | {b.get('procs', 0)} | {a['ready']:.2f} | "
                   f"{b.get('ready', 0):.2f} |")
    goals = []
    if 64 in counts:
        cpu = scale(ours, 64)["cpu"]
        goals.append(f"64 engines under {GOAL_CPU_64:.0f} % of a core: {cpu:.1f} % — "
                     f"{met(cpu < GOAL_CPU_64)}")
    if 8 in counts:
        rss, ready = scale(ours, 8)["rss_all"], scale(ours, 8)["ready"]
        goals.append(f"daemon plus children ≤ {GOAL_RSS_8:.0f} MiB at 8 engines: {rss:.0f} MiB"
                     f" — {met(rss <= GOAL_RSS_8)}")
        goals.append(f"READY ≤ {GOAL_READY_8:g} s at 8 engines: {ready:.2f} s — "
                     f"{met(ready <= GOAL_READY_8)}")
    out.append("\nGoals: " + "; ".join(goals) + ".\n")
    for key, title, unit, goal in (("cpu", "CPU (% of one core)", "%", GOAL_CPU_64),
                                   ("rss_all", "RSS, daemon plus children", "MiB", GOAL_RSS_8),
                                   ("ready", "systemctl start → READY", "s", GOAL_READY_8)):
        plot(figures / f"scale_{key}.png", title, "engines", unit,
             {"this tree": (counts, [scale(ours, n)[key] for n in counts]),
              "reference": (counts, [scale(ref, n).get(key, 0) for n in counts])}, goal=goal)
    out.append("![CPU](benchmarks/scale_cpu.png) ![RSS](benchmarks/scale_rss_all.png) "
               "![READY](benchmarks/scale_ready.png)\n")

    # ---------------------------------------------------------------- failover
    fo = r["failover"]
    start = r["engine_start"]
    out.append("## Failover\n\nOne engine healthy on ROCm; then its ROCm start crashes every "
               "time (a fault plan, then `kill -9`): time until it is healthy on Vulkan. "
               f"Overhead = that time − the engine's own start ({start:.2f} s, unit start "
               "until it answers HTTP, measured here) − the detection budget "
               f"({DETECTION_BUDGET:.0f} s: `failures` 3 × `interval` 1 s, for the restart on "
               "the same tier and again for the demotion). systemd alone (`Restart=on-failure`)"
               " restarts the broken ROCm tier forever: it never serves again.\n")
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

    out.append("## Event history (dev/bench_events.py, 20,000 events)\n\n```\n"
               f"{r['events']}\n```\n")
    return "\n".join(out) + "\n"


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).resolve().parent.parent / "benchmarks/results.json"
    results = json.loads(source.read_text())
    (source.parent.parent / "BENCHMARKS.md").write_text(render(results, source.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
