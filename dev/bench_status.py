#!/usr/bin/env python3
"""Benchmark: `llm-supervisorctl status` against Supervisor's `supervisorctl status`.

Boots a throwaway systemd container (dev/nspawn.py), starts the real llm-supervisord with
one simulated engine and waits until it is healthy, starts a real supervisord (Supervisor
4.3.0, one `sleep infinity` program, from its own venv), then times both status commands
and each venv's bare `python -c pass` INSIDE the container (no nsenter overhead), runs
interleaved. Wall time via perf_counter around spawn..wait4, peak RSS from wait4's rusage.
Every measured run must exit 0, so a failing command cannot look fast.

    sudo dev/bench_status.py [RUNS]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkout  # noqa: E402
import sandbox  # noqa: E402
from nspawn import Container  # noqa: E402

# a run count as the first argument when run alone; imported by dev/bench.py, whose own
# arguments (--quick) are not ours
RUNS = int(sys.argv[1]) if __name__ == "__main__" and len(sys.argv) > 1 else 30
WARMUP, GOAL_MS = 3, 25.0
PROJECT_PY = str(sandbox.VENV_BIN / "python")
SUP_VENV = Path("/opt/llm-supervisor-dev/bench-supervisor")  # outside /tmp and home dirs
SUP_DIR = "/run/bench-supervisor"  # inside the container
SUP_CONF = f"""\
[unix_http_server]
file={SUP_DIR}/supervisor.sock
[supervisord]
logfile={SUP_DIR}/supervisord.log
pidfile={SUP_DIR}/supervisord.pid
childlogdir={SUP_DIR}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{SUP_DIR}/supervisor.sock
[program:sleeper]
command=sleep infinity
"""
SUPERVISORCTL = [str(SUP_VENV / "bin/supervisorctl"), "-c", f"{SUP_DIR}/supervisord.conf"]
# The dev venv has an editable install, whose .pth finder costs ~15 ms at every start; the
# package ships a regular install, so time that too (a non-editable copy, rebuilt each run).
INSTALLED_VENV = checkout.own("bench-installed")  # this checkout's (two clones: two venvs)
COMMANDS = [  # (label, argv); the first is the subject, the second the reference
    ("llm-supervisorctl status", [str(INSTALLED_VENV / "bin/llm-supervisorctl"), "status"]),
    ("supervisorctl status (4.3.0)", SUPERVISORCTL + ["status"]),
    ("llm-supervisorctl status (editable dev venv)", ["llm-supervisorctl", "status"]),
    ("python -c pass (installed venv)", [str(INSTALLED_VENV / "bin/python"), "-c", "pass"]),
    ("python -c pass (project venv)", [PROJECT_PY, "-c", "pass"]),
    ("python -c pass (supervisor venv)", [str(SUP_VENV / "bin/python"), "-c", "pass"]),
]

# Runs inside the container with Debian's python3; prints JSON {label: {wall: [...], rss: [...]}}.
TIMER = r"""
import json, os, subprocess, sys, time
runs, warmup, commands = json.loads(sys.argv[1])
out = {label: {"wall": [], "rss": []} for label, _ in commands}
for i in range(warmup + runs):
    for label, argv in commands:  # interleaved, so drift hits every command alike
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.stdout.close()
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            sys.exit(f"{label}: exit {p.returncode}\n{text.decode(errors='replace')}")
        if i >= warmup:
            out[label]["wall"].append(wall * 1000)
            out[label]["rss"].append(usage.ru_maxrss / 1024)  # KiB -> MiB
print(json.dumps(out))
"""


def installed_venv() -> None:
    """The project as the package installs it: a regular (non-editable) install."""
    if not (INSTALLED_VENV / "bin/pip").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(INSTALLED_VENV)], check=True)
    subprocess.run([str(INSTALLED_VENV / "bin/pip"), "install", "-q", "--no-deps",
                    "--disable-pip-version-check", "--force-reinstall",
                    str(Path(__file__).resolve().parent.parent)],
                   check=True, stdout=subprocess.DEVNULL)


def supervisor_venv() -> None:
    if (SUP_VENV / "bin/supervisorctl").exists():
        return
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(SUP_VENV)], check=True)
    subprocess.run([str(SUP_VENV / "bin/pip"), "install", "-q", "supervisor==4.3.0"], check=True)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def import_costs(c: Container, top: int = 8) -> str:
    """Top-level imports of `llm-supervisorctl status` by cumulative cost (-X importtime)."""
    err = c.run([PROJECT_PY, "-X", "importtime", "/usr/bin/llm-supervisorctl", "status"]).stderr
    rows = []
    for line in err.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit() and not fields[2].startswith("  "):
            rows.append((int(fields[1]), int(fields[0]), fields[2].strip()))
    rows.sort(reverse=True)
    return "\n".join(f"  cumulative {cu / 1000:6.1f} ms  self {own / 1000:6.1f} ms  {name}"
                     for cu, own, name in rows[:top])


def main() -> int:
    supervisor_venv()
    installed_venv()
    with Container("bench-status") as c:
        sandbox.install(c)
        sandbox.configure(c, sandbox.engine_toml("main", sandbox.free_port()))
        sandbox.start_daemon(c)
        sandbox.wait_engine(c, "main", state="healthy")
        c.write(f"{SUP_DIR}/supervisord.conf", SUP_CONF)
        c.run(["systemd-run", "--unit=bench-supervisord", str(SUP_VENV / "bin/supervisord"),
               "-n", "-c", f"{SUP_DIR}/supervisord.conf"])
        c.wait_for(lambda: "RUNNING" in c.run(SUPERVISORCTL + ["status"], check=False).stdout,
                   timeout=30, what="supervisord's sleeper RUNNING")
        print(c.run(["llm-supervisorctl", "status"]).stdout.rstrip())
        print(c.run(SUPERVISORCTL + ["status"]).stdout.rstrip())
        done = c.run(["/usr/bin/python3", "-c", TIMER, json.dumps([RUNS, WARMUP, COMMANDS])],
                     check=False, timeout=600)
        if done.returncode != 0:
            print(f"timing failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
        results = json.loads(done.stdout)
        ours_ms = statistics.median(results[COMMANDS[0][0]]["wall"])
        slow = import_costs(c) if ours_ms > GOAL_MS else ""

    ref = statistics.median(results[COMMANDS[1][0]]["wall"])
    print(f"\n{RUNS} runs each after {WARMUP} warm-up, interleaved, inside the container")
    print(f"{'command':34} {'median ms':>9} {'p90 ms':>7} {'peak RSS MiB':>12}"
          f" {'vs supervisorctl':>16}")
    for label, _ in COMMANDS:
        wall, rss = results[label]["wall"], results[label]["rss"]
        median = statistics.median(wall)
        print(f"{label:34} {median:9.1f} {p90(wall):7.1f} {max(rss):12.1f}"
              f" {median / ref:15.2f}x")
    print(f"goal for llm-supervisorctl status: < {GOAL_MS:.0f} ms median -> "
          f"{'met' if ours_ms < GOAL_MS else 'MISSED'}")
    if slow:
        print(f"top-level imports of llm-supervisorctl status (-X importtime):\n{slow}")
    return 0


if __name__ == "__main__":
    checkout.use_venv()
    sys.exit(main())
