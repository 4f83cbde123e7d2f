#!/usr/bin/env python3
"""Profile the control socket under the status load of dev/bench: 32 clients, one connection
per request, `GET /v1/status` answered from a cached 8-engine document (as the daemon's
StatusCache does: one kept Response, its bytes encoded once by the server), py-spy on the
server process; then where its time goes.

    /opt/llm-supervisor-dev/venv-*/bin/pip install py-spy
    /opt/llm-supervisor-dev/venv-*/bin/python dev/profile-status.py
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
import bench  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
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


def main() -> None:
    sock = tempfile.mktemp(prefix="llm-status-", suffix=".sock")
    server = subprocess.Popen([sys.executable, "-c", SERVER, sock], stdout=subprocess.PIPE,
                              text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    raw = Path(tempfile.mktemp(suffix=".txt"))
    spy = subprocess.Popen([str(PY_SPY), "record", "-p", str(server.pid), "-d", "12", "-r",
                            "250", "--format", "raw", "-o", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    load = subprocess.run([sys.executable, "-c", bench.LOAD, sock, "32", "10"],
                          capture_output=True, text=True, check=True)
    spy.wait()
    server.terminate()
    print("load:", json.loads(load.stdout.strip().splitlines()[-1]))
    busy, by_lib, by_fn = 0, collections.Counter[str](), collections.Counter[str]()
    for line in raw.read_text().splitlines():
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
    print(f"busy samples: {busy}")
    for lib, count in by_lib.most_common():
        print(f"{count * 100 / max(busy, 1):5.1f}%  {lib}")
    print("innermost supervisor function:")
    for fn, count in by_fn.most_common(8):
        print(f"{count * 100 / max(busy, 1):5.1f}%  {fn}")


if __name__ == "__main__":
    main()
