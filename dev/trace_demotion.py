#!/usr/bin/env python3
"""One demotion's path through the code, counted: ``trace_demotion.py [TREE ...]``.

For each source tree (default: this one), in a fresh interpreter: an engine healthy on rocm
(the unit tests' engine, with their fake actuator and fake Ollama), a GPU error line handed
to it the way the journal sink hands one, then checks until it runs on vulkan. Every call
into the package is traced (``sys.setprofile``) with the modules on the stack above it. A
call from one module into another is a hop; the figures are the modules (files) entered,
the hops (each distinct caller -> callee pair once), and the hops back and forth: a call
into a module that is already further down the stack (A -> B -> A: a callback, B asking A
again), each distinct one once. A call that returns is no hop back.

Run it against an older checkout (``git worktree add /tmp/old REV``) to compare, in one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # run by any Python: its trees are traced by the checkout's venv
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import checkout
    checkout.use_venv()

HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, sys
sys.path[:0] = [{tree!r}, {tests!r}]
try:
    import fakes as t  # the unit tests' shared doubles
except ImportError:  # a tree from before they had their own module
    import test_engine as t
from {name}.causes import Cause, Observation

LINE = "ggml_cuda_compute_forward: ROCm error: an illegal memory access was encountered"
PACKAGE = {package!r}
WIRED = {wired!r}


async def wired(tmp):
    # the engine as the daemon wires it: its real actuator (over a fake systemd), host
    # view, recorder and journal sink; the host's probe fixed (no GPU tool runs)
    import ssl
    import httpx
    from llm_supervisor import config
    from llm_supervisor.daemon import Setup, Supervisor
    from llm_supervisor.engine import Engine
    from llm_supervisor.host.probes import ProbeResult
    from llm_supervisor.records.memory import State
    from llm_supervisor.systemd import units
    text = t.SETTINGS.format(rate=0, model="qwen2.5:7b-instruct", pull="false") + "".join(
        f'\n[supervisor]\nsocket = "{{tmp}}/control.sock"\nstate_dir = "{{tmp}}/state"\n'
        f'unit_dir = "{{tmp}}/units"\nkfd_path = "{{tmp}}/no-kfd"\n')
    cfg = config.loads(text)
    host = units.HostFacts(frozenset({{"render", "video"}}), cpu_count=8, mem_total=32 << 30)
    sup = Supervisor(Setup(tmp / "llm-supervisor.toml", cfg, State(), host,
                           ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ""),
                     systemd=t.FakeSystemd(), notifier=t.Notes())
    sup.hostview.probes = {{tier: ProbeResult(tier, True, "present (fixed)", (), 0, "", 0.0,
                                              "2026-12-07T08:00:00Z")
                           for tier in ("rocm", "vulkan")}}

    async def keep(config):
        pass

    sup.hostview.reprobe = keep
    api = t.FakeOllama()
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    clock, wall = t.Clock(), t.Clock()
    engine = Engine(cfg, cfg.engines[0], sup.state.engine("main"), sup.actuator, http,
                    clock=clock, wall=wall)
    sup.engines["main"] = engine
    await engine.start_on("rocm", Cause.START)
    clock.now += 11
    await t.settle(engine)
    lines = getattr(sup, "supervision", None)  # a tree from before it had its own module
    return engine, (lines.engine_line if lines else sup._engine_line)(engine)


async def main():
    import pathlib, tempfile
    if WIRED:
        engine, sink = await wired(pathlib.Path(tempfile.mkdtemp()))
        inject = lambda: sink(LINE, "cursor", None)
    else:
        engine, actuator, api, clock, wall = await t.started()
        take = getattr(engine, "intake", engine)  # where a journal line lands
        inject = lambda: take.finding(Observation.bad("log", Cause.GPU_FAULT, LINE))
    hops, back = [], []

    def module_of(frame):
        name = frame.f_code.co_filename
        return name[len(PACKAGE):].removesuffix(".py") if name.startswith(PACKAGE) else None

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = module_of(frame)
        if callee is None:
            return
        stack, up = [], frame.f_back
        while up is not None:  # the package's modules below this call, nearest first
            m = module_of(up)
            if m is not None and (not stack or stack[-1] != m):
                stack.append(m)
            up = up.f_back
        if not stack or stack[0] == callee:
            return
        hop = (stack[0], callee)
        if hop not in hops:
            hops.append(hop)
        if callee in stack[1:]:
            loop = tuple(reversed(stack[:stack.index(callee, 1) + 1])) + (callee,)
            if loop not in back:
                back.append(loop)

    sys.setprofile(profile)
    inject()
    for _ in range(4):
        await engine.tick()
        if engine.tier == "vulkan":
            break
    sys.setprofile(None)
    assert engine.tier == "vulkan", engine.tier
    print(json.dumps({{"hops": hops, "back": back}}))


asyncio.run(main())
"""


def trace(tree: Path, wired: bool) -> dict[str, list[list[str]]]:
    name = "llm_supervisor" if (tree / "llm_supervisor").is_dir() else "supervisor"
    code = CHILD.format(tree=str(tree), tests=str(tree / "tests"), name=name, wired=wired,
                        package=str(tree / name) + "/")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tree, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip()[-2000:]}")
    found: dict[str, list[list[str]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> int:
    args = sys.argv[1:]
    wired = "--wired" in args
    trees = [Path(p).resolve() for p in args if p != "--wired"] or [HERE]
    for tree in trees:
        found = trace(tree, wired)
        modules = {m for hop in found["hops"] for m in hop}
        how = "as the daemon wires it" if wired else "with the unit tests' fake actuator"
        print(f"## {tree} ({how})\n")
        print("hops (caller -> callee, each once, in order):")
        for a, b in found["hops"]:
            print(f"  {a} -> {b}")
        print("back and forth (a call into a module already on the stack):")
        for loop in found["back"] or [["none"]]:
            print("  " + " -> ".join(loop))
        print(f"\nmodules: {len(modules)}, hops: {len(found['hops'])}, "
              f"back and forth: {len(found['back'])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
