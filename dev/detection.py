#!/usr/bin/env python3
"""Detection time per phase: from a fault to the supervisor's first action, measured through
the real engine loop on its injected clock (the harness of tests/test_matrix.py), beside the
bound in docs/decisions.md, with the defaults and with the test config, for an Ollama with a
token signal (0.30 and later: its runner's /slots) and without one (before 0.30: the kernel's
view of its clients). Prints DETECTION.md: what it measured at, and a Markdown table (the
engine's log goes to stderr); a case with no action is "not measured" with the reason, and
the run exits 1.

    dev/detection.py > DETECTION.md
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "dev")]

import checkout  # noqa: E402

checkout.use_venv()

import structlog  # noqa: E402
import test_matrix as m  # noqa: E402

# the matrix's settings with the [health] defaults (only what the harness needs stays)
DEFAULTS = m.SETTINGS.split("[health]")[0] + "[health]\n{extra}\n[fallback]" + \
    m.SETTINGS.split("[fallback]")[1]
CASES = [("hang from the first generation", "model load"), ("hang after serving", "serving idle"),
         ("hang after serving", "after a daemon restart"), ("hang after serving", "serving busy"),
         ("crash later", "serving idle"), ("GPU error lines", "serving idle"),
         ("silent CPU", "serving idle"), ("hang after serving", "promotion probation")]
VERSIONS = {"with tokens (>= 0.30)": m.Axes(), "without (< 0.30)": m.Axes(version="0.12")}


async def measure(fault: str, phase: str, axes: m.Axes, settings: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        w = m.world(Path(tmp), axes, settings=settings)
        await m.PHASES[phase](w, m.FAULTS[fault])
        if phase == "serving busy":
            w.api.hung = True  # the user's tokens (or bytes) stop
        switches = len(w.actuator.switches)
        limit = m.bound(fault, phase, axes, w.engine.checking)
        try:
            took = await w.until(lambda: m.acted(w, switches), limit * 2 + 60)
        finally:
            for task in (w.engine.canary.task,):
                if task is not None:
                    task.cancel()
        return took, limit


async def cell(fault: str, phase: str, axes: m.Axes, settings: str) -> tuple[str, bool]:
    """'measured / bound', or not measured and why; and whether it was measured."""
    try:
        took, limit = await measure(fault, phase, axes, settings)
    except AssertionError as e:  # the harness's own: no action within twice the bound
        why = str(e).splitlines()[0].replace("|", "\\|")
        return f"not measured: {why}", False
    return f"{took:.0f} / {limit:.0f}", True


async def main() -> int:
    print(f"# Detection times\n\nMeasured by `dev/detection.py` {checkout.measured_at()}:"
          " from a fault to the daemon's first action, through the real engine loop on an"
          " injected clock (the harness of `tests/test_matrix.py`), beside its bound in"
          " docs/decisions.md (\"Loads, and how fast a fault is caught\"), with the [health]"
          " defaults and with the test config, for an Ollama with a token signal and without"
          " one. Regenerate with `dev/detection.py > DETECTION.md`.\n")
    print("| phase | fault | engine | defaults: measured / bound (s) |"
          " test config: measured / bound (s) |")
    print("| --- | --- | --- | --- | --- |")
    missing = 0
    for fault, phase in CASES:
        for label, axes in VERSIONS.items():
            cells = [await cell(fault, phase, axes, s) for s in (DEFAULTS, m.SETTINGS)]
            missing += sum(not ok for _, ok in cells)
            print(f"| {phase} | {fault} | {label} | {cells[0][0]} | {cells[1][0]} |",
                  flush=True)
    if missing:
        print(f"dev/detection.py: {missing} case(s) not measured (see the table)",
              file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    sys.exit(asyncio.run(main()))
