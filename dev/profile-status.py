#!/usr/bin/env python3
"""Profile the control socket under the status load of dev/bench: 32 clients, one connection
per request, `GET /v1/status` answered from a cached 8-engine document (as the daemon's
StatusCache does: one kept Response, its bytes encoded once by the server), py-spy on the
server process; then where its time goes. py-spy is installed into the checkout's venv when
missing.

    dev/profile-status.py
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import checkout  # noqa: E402

checkout.use_venv()

import bench  # noqa: E402

SERVER = r"""
import asyncio, json, sys
from pathlib import Path
from llm_supervisor.control.server import ControlServer, Response, Router
engine = {"name": "e0", "kind": "ollama", "state": "healthy", "tier": "rocm",
          "reason": "serving on rocm", "chain": ["rocm", "vulkan", "opencl", "cpu"],
          "last_check": {"ok": True, "latency_ms": 1.2, "tokens_per_second": 45.0}}
body = json.dumps({"api": 1, "engines": [dict(engine, name=f"e{i}") for i in range(8)]}).encode()
kept = Response(200, body=body, headers=[("X-Unhealthy-Engines", "0")])
async def status(request, params):
    return kept
async def main():
    router = Router()
    router.add("GET", "/v1/status", status)
    server = ControlServer(router, Path(sys.argv[1]))
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
LIBS = ("h11", "asyncio", "llm_supervisor", "json", "socket", "selectors", "logging", "structlog")


def profile(sock: str, raw: Path) -> dict[str, float]:
    """The server under the load with py-spy on it; the load's figures."""
    py_spy = checkout.tool("py-spy")
    server = subprocess.Popen([sys.executable, "-c", SERVER, sock], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the control server did not start (exit {server.wait()})")
        spy = subprocess.Popen([str(py_spy), "record", "-p", str(server.pid), "-d", "12",
                                "-r", "250", "--format", "raw", "-o", str(raw),
                                "--nonblocking"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        load = subprocess.run([sys.executable, "-c", bench.LOAD, sock, "32", "10"],
                              capture_output=True, text=True, check=True)
        _, err = spy.communicate()
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed (exit {spy.returncode}): {err[-600:]}")
    finally:
        server.terminate()
        server.wait()
    return dict(json.loads(load.stdout.strip().splitlines()[-1]))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="llm-status-") as tmp:
        raw = Path(tmp) / "profile.txt"
        print("load:", profile(f"{tmp}/control.sock", raw))
        lines = raw.read_text().splitlines()
    busy, by_lib, by_fn = 0, collections.Counter[str](), collections.Counter[str]()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "select (selectors.py" in frames[-1]:
            continue
        busy += int(count)
        found = re.search(r"\(([^:)]*)", frames[-1])
        path = found.group(1) if found else ""
        by_lib[next((lib for lib in LIBS if f"{lib}/" in path or path.endswith(f"{lib}.py")),
                    "other")] += int(count)
        ours = [f for f in frames if "supervisor/" in f]
        by_fn[re.sub(r" \(.*", "", ours[-1]) if ours else "(no supervisor frame)"] += int(count)
    if not busy:
        print("busy samples: not measured: py-spy recorded no busy sample", file=sys.stderr)
        return 1
    print(f"busy samples: {busy}")
    for lib, count in by_lib.most_common():
        print(f"{count * 100 / busy:5.1f}%  {lib}")
    print("innermost supervisor function:")
    for fn, count in by_fn.most_common(8):
        print(f"{count * 100 / busy:5.1f}%  {fn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
