#!/usr/bin/env python3
"""One demotion's path through the code, counted: ``trace_demotion.py [TREE ...]``.

For each source tree (default: this one), in a fresh interpreter: an engine healthy on rocm
(the unit tests' engine, with their fake actuator and fake Ollama), a GPU error line handed
to it the way the journal sink hands one, then checks until it runs on vulkan. Every call
into the package is traced (``sys.setprofile``); the modules entered are listed in order with
consecutive calls in one module collapsed, and the figures printed: modules (files) entered,
hops between them, and hops that go back where they came from (A -> B -> A).

Run it against an older checkout (``git worktree add /tmp/old REV``) to compare, in one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, sys
sys.path[:0] = [{tree!r}, {tests!r}]
try:
    import fakes as t  # the unit tests' shared doubles
except ImportError:  # a tree from before they had their own module
    import test_engine as t
from llm_supervisor.causes import Cause, Observation

LINE = "ggml_cuda_compute_forward: ROCm error: an illegal memory access was encountered"
PACKAGE = {package!r}


async def main():
    engine, actuator, api, clock, wall = await t.started()
    trail = []

    def profile(frame, event, arg):
        if event != "call":
            return
        name = frame.f_code.co_filename
        if name.startswith(PACKAGE):
            module = name[len(PACKAGE):].removesuffix(".py")
            if not trail or trail[-1] != module:
                trail.append(module)

    finding = Observation.bad("log", Cause.GPU_FAULT, LINE)
    sys.setprofile(profile)
    take = getattr(engine, "intake", engine)  # where a journal line lands
    take.finding(finding)
    for _ in range(4):
        await engine.tick()
        if engine.tier == "vulkan":
            break
    sys.setprofile(None)
    assert engine.tier == "vulkan", engine.tier
    print(json.dumps(trail))


asyncio.run(main())
"""


def trace(tree: Path) -> list[str]:
    code = CHILD.format(tree=str(tree), tests=str(tree / "tests"),
                        package=str(tree / "llm_supervisor") + "/")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tree, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip()[-2000:]}")
    trail: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return trail


def figures(trail: list[str]) -> dict[str, int]:
    back = sum(1 for a, _, c in zip(trail, trail[1:], trail[2:], strict=False) if a == c)
    return {"modules": len(set(trail)), "hops": len(trail) - 1, "back and forth": back}


def main() -> int:
    trees = [Path(p).resolve() for p in sys.argv[1:]] or [HERE]
    for tree in trees:
        trail = trace(tree)
        print(f"## {tree}\n")
        print(" -> ".join(trail))
        print("\n" + ", ".join(f"{k}: {v}" for k, v in figures(trail).items()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
