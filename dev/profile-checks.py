#!/usr/bin/env python3
"""Profile the daemon's checks: 64 simulated engines (1 s interval, a canary every 5th check)
under a real systemd, py-spy on the daemon for 20 s, then where the main thread's time goes.
py-spy is installed into the checkout's venv when missing.

    dev/profile-checks.py [--engines N] [--seconds S]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
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
import sandbox  # noqa: E402
from nspawn import Container  # noqa: E402

LIBS = ("httpcore", "httpx", "anyio", "h11", "asyncio", "structlog", "json", "dbus_fast",
        "prometheus_client", "llm_supervisor", "socket", "selectors", "logging")


def summarise(raw: Path) -> bool:
    """The main thread's samples outside its poll, by the library of the innermost frame;
    False when py-spy caught none of the main thread."""
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
    if not busy + idle:
        print("main thread: not measured: py-spy recorded no sample of it", file=sys.stderr)
        return False
    print(f"main thread: {busy} samples busy, {idle} in its poll")
    for lib, count in by_lib.most_common():
        print(f"{count * 100 / max(busy, 1):5.1f}%  {lib}")
    return True


def host_pid(c: Container, unit: str) -> int:
    """The host's number of the unit's main process (systemd in the container gives its own
    namespace's; another container's daemon may run beside it on the host)."""
    inner, ns = sandbox.main_pid(c, unit), os.readlink(f"/proc/{c.pid}/ns/pid")
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, StopIteration):
            if os.readlink(status.parent / "ns/pid") != ns:
                continue
            nspid = next(x for x in status.read_text().splitlines() if x.startswith("NSpid:"))
            if int(nspid.split()[-1]) == inner:
                return int(status.parent.name)
    raise LookupError(f"{unit}'s main process ({inner} in {c.machine}) is not on the host")


def record(c: Container, seconds: float, raw: Path) -> None:
    """py-spy on the daemon for ``seconds``, its raw stacks into ``raw``."""
    py_spy = checkout.tool("py-spy")
    done = subprocess.run([str(py_spy), "record", "-p", str(host_pid(c, "llm-supervisor")),
                           "-d", f"{seconds:g}", "-r", "200", "--format", "raw", "-o", str(raw),
                           "--nonblocking"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"py-spy failed (exit {done.returncode}): {done.stderr[-600:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20, help="py-spy's recording")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llm-supervisor-profile-") as tmp, \
            Container("profile") as c:
        raw = Path(tmp) / "profile.txt"
        sandbox.install(c)
        sandbox.configure(c, bench.engines_toml(c, args.engines), bench.SETTINGS)
        sandbox.start_daemon(c)
        took = bench.all_healthy(c, args.engines, 180)
        print(f"{args.engines} engines healthy after {took:.1f} s", flush=True)
        time.sleep(5)
        record(c, args.seconds, raw)
        print("the daemon's cgroup over 10 s:", bench.usage(c, 10))
        return 0 if summarise(raw) else 1


if __name__ == "__main__":
    sys.exit(main())
