#!/usr/bin/env python3
"""Detection time per phase: from a fault to the supervisor's first action, measured through
the real engine loop on its injected clock (the harness of tests/test_matrix.py), beside the
README's bound, with the defaults and with the test config. Prints a Markdown table.

    /opt/llm-supervisor-dev/venv-*/bin/python dev/detection.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "dev")]

import test_matrix as m  # noqa: E402

DEFAULTS = """
[health]
{extra}
[[engine]]
name = "main"
model = "qwen2.5:7b-instruct"
"""
CASES = [("hang from the first generation", "model load"), ("hang after serving", "serving idle"),
         ("hang after serving", "after a daemon restart"), ("hang after serving", "serving busy"),
         ("crash later", "serving idle"), ("GPU error lines", "serving idle"),
         ("silent CPU", "serving idle"), ("hang after serving", "promotion probation")]


async def measure(fault: str, phase: str, settings: str) -> tuple[float, float]:
    w = m.world(settings=settings)
    if phase == "serving busy":
        await m.serving_busy(w, m.nothing)
        w.api.hung = True  # the user's tokens stop
    else:
        await m.PHASES[phase](w, m.FAULTS[fault])
    switches = len(w.actuator.switches)
    limit = m.bound(fault, phase, w.engine.health)
    if phase == "serving busy":
        limit = w.engine.health.stall_after + (w.engine.health.failures + 1) * \
            w.engine.health.interval
    took = await w.until(lambda: m.acted(w, switches), limit * 2 + 60)
    for task in (w.engine.canary_task,):
        if task is not None:
            task.cancel()
    return took, limit


async def main() -> None:
    print("| phase | fault | defaults: measured / bound (s) | test config: measured / bound (s) |")
    print("| --- | --- | --- | --- |")
    for fault, phase in CASES:
        cells = []
        for settings in (DEFAULTS, m.SETTINGS):
            took, limit = await measure(fault, phase, settings)
            cells.append(f"{took:.0f} / {limit:.0f}")
        print(f"| {phase} | {fault} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    asyncio.run(main())
