#!/usr/bin/env python3
"""Profile the daemon's checks: 64 simulated engines (1 s interval, a canary every 5th check)
under a real systemd, py-spy on the daemon for 20 s, then where the main thread's time goes.

    /opt/llm-supervisor-dev/venv-*/bin/pip install py-spy
    /opt/llm-supervisor-dev/venv-*/bin/python dev/profile-checks.py
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402
import sandbox  # noqa: E402
from nspawn import Container  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"
RAW = Path("/tmp/llm-supervisor-profile.txt")
LIBS = ("httpcore", "httpx", "anyio", "h11", "asyncio", "structlog", "json", "dbus_fast",
        "prometheus_client", "llm_supervisor", "socket", "selectors", "logging")


def summarise(raw: Path) -> None:
    """The main thread's samples outside its poll, by the library of the innermost frame."""
    busy, idle, by_lib = 0, 0, collections.Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith("<module> (llm-supervisord"):
            continue
        if "select (selectors.py" in frames[-1]:
            idle += int(count)
            continue
        busy += int(count)
        found = re.search(r"\(([^:)]*)", frames[-1])
        path = found.group(1) if found else ""
        by_lib[next((lib for lib in LIBS if f"{lib}/" in path or path.endswith(f"{lib}.py")),
                    "other")] += int(count)
    print(f"main thread: {busy} samples busy, {idle} in its poll")
    for lib, count in by_lib.most_common():
        print(f"{count * 100 / max(busy, 1):5.1f}%  {lib}")
def main() -> None:
    c = Container("profile")
    c.boot()
    try:
        sandbox.install(c)
        n = 64
        sandbox.configure(c, bench.engines_toml(c, n), bench.SETTINGS)
        sandbox.start_daemon(c)
        took = bench.all_healthy(c, n, 180)
        print("healthy after", took, flush=True)
        time.sleep(5)
        pid = int(subprocess.run(["pgrep", "-f", "-o", "bin/llm-supervisord"], check=True,
                                 capture_output=True, text=True).stdout.split()[0])
        subprocess.run([str(PY_SPY), "record", "-p", str(pid), "-d", "20", "-r", "200",
                        "--format", "raw", "-o", str(RAW), "--nonblocking"], check=True,
                       capture_output=True)
        print("the daemon's cgroup over 10 s:", bench.usage(c, 10))
    finally:
        c.shutdown()
    summarise(RAW)


if __name__ == "__main__":
    main()
