#!/usr/bin/env python3
"""Benchmark: the event history with the daemon's default sizes (1 MiB segments, 64 MiB budget).

Appends N realistic events (state changes, tier switches, probe results, with reasons and small
evidence, as the daemon writes them; fsync per event) into a temporary directory, then reports
the append rate, bytes per event on disk (segments + live file) against raw JSONL, and the wall
time of reads over the whole history (median of RUNS).

    dev/bench_events.py [N] [RUNS]
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import checkout  # noqa: E402 - dev/, the script's own directory

checkout.use_venv()

from llm_supervisor.records.history import EventLog  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
ENGINES = ["llama-70b", "qwen-coder", "embed-small", "whisper"]
TIERS = ["cuda", "rocm", "vulkan", "cpu"]
STATES = ["starting", "healthy", "degraded", "failed", "stopped"]
CHECKS = ["http /health", "canary tokens/s", "unit active", "journal"]


def realistic(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    engine, kind = rng.choice(ENGINES), rng.random()
    if kind < 0.6:
        a, b = rng.sample(STATES, 2)
        check = rng.choice(CHECKS)
        return "state", dict(
            engine=engine, from_=a, to=b, tier=rng.choice(TIERS),
            reason=f"{rng.choice(TIERS)}: {check} failed 3 times: timeout after 5.0s",
            evidence={"check": check, "status": rng.choice([200, 503, None]),
                      "latency_ms": round(rng.uniform(1, 5000), 1),
                      "ActiveState": rng.choice(["active", "activating", "failed"]),
                      "NRestarts": rng.randint(0, 9)})
    if kind < 0.85:
        a, b = rng.sample(TIERS, 2)
        return "tier", dict(
            engine=engine, from_=a, to=b,
            reason=f"demoted from {a}: out of memory (exit status 137)",
            evidence={"journal": f"kernel: amdgpu: VM fault at 0x{rng.getrandbits(40):x}",
                      "attempt": i % 7})
    tier = rng.choice(TIERS)
    present = rng.random() < 0.8
    return "probe", dict(
        to="present" if present else "absent",
        reason=f"{tier}: {'/dev/kfd present' if present else 'no device node'}",
        evidence={"tier": tier, "present": present, "devices": rng.randint(0, 8),
                  "driver": f"6.{rng.randint(0, 12)}.{rng.randint(0, 40)}"})


def median_ms(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        directory = Path(tmp) / "events"
        log = EventLog(directory)
        raw = 0
        start = time.perf_counter()
        for i in range(N):
            type, fields = realistic(rng, i)
            event = log.append(type, **fields)
            raw += len(json.dumps(event, ensure_ascii=False).encode()) + 1
        append_s = time.perf_counter() - start

        segments = log.segments()
        seg_bytes = sum(s.path.stat().st_size for s in segments)
        disk = seg_bytes + log.current.stat().st_size
        assert [e["seq"] for e in log.read(limit=1000)] == list(range(N - 999, N + 1))
        last_1000 = median_ms(lambda: log.read(limit=1000), RUNS)
        one_engine = median_ms(lambda: log.read(limit=1000, engine="whisper"), RUNS)
        since = log.read(limit=5000)[0]["ts"]
        recent = median_ms(lambda: log.read(since=since), RUNS)
        everything = median_ms(lambda: log.read(), max(1, RUNS // 2))

    rows = [
        ("events appended", f"{N:,}", f"{len(segments)} segments + live file"),
        ("append rate", f"{N / append_s:,.0f} ev/s",
         f"{append_s / N * 1e6:.0f} us/event, fsync per event dominates"),
        ("raw JSONL", f"{raw / N:.1f} B/event", f"{raw / 2**20:.1f} MiB"),
        ("on disk", f"{disk / N:.1f} B/event",
         f"{disk / 2**20:.2f} MiB, {raw / disk:.1f}x smaller"),
        ("read(limit=1000)", f"{last_1000:.1f} ms", f"median of {RUNS}"),
        ("read(limit=1000, engine=)", f"{one_engine:.1f} ms", f"median of {RUNS}"),
        ("read(since=<5000 ago>)", f"{recent:.1f} ms", f"median of {RUNS}"),
        ("read() all", f"{everything:.0f} ms", f"{N:,} events, median of {max(1, RUNS // 2)}"),
    ]
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width[0]}}  {value:>{width[1]}}  {note}")


if __name__ == "__main__":
    main()
