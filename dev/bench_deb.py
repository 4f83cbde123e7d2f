#!/usr/bin/env python3
"""Benchmark of the Debian package: .deb size, `apt-get install` time, and the installed
`/usr/bin/llm-supervisorctl status` next to Supervisor's `supervisorctl status`, in one
container (the same timing loop as dev/bench_status.py).

    sudo dev/bench_deb.py [RUNS]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkout  # noqa: E402

checkout.use_venv()

import sandbox  # noqa: E402
from bench_status import (  # noqa: E402
    RUNS,
    SUP_CONF,
    SUP_DIR,
    SUP_VENV,
    SUPERVISORCTL,
    TIMER,
    WARMUP,
    p90,
    supervisor_venv,
)
from nspawn import Container  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main(runs: int) -> int:
    supervisor_venv()
    subprocess.run([str(REPO / "packaging/build-deb"), "--no-lintian"], check=True)
    deb = sorted((REPO / "dist").glob("llm-supervisor_*.deb"), key=lambda p: p.stat().st_mtime)[-1]
    commands = [("llm-supervisorctl status (.deb)", ["/usr/bin/llm-supervisorctl", "status"]),
                ("supervisorctl status (4.3.0)", SUPERVISORCTL + ["status"]),
                ("python3 -I -c pass (.deb venv)", ["/opt/llm-supervisor/bin/python3", "-I",
                                                    "-c", "pass"])]
    with Container("bench-deb") as c:
        c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])  # the image forbids starting services
        started = time.monotonic()
        # a copy: the container cannot see a checkout under /tmp or a home
        c.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", c.copy_in(deb)],
              env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
        install_s = time.monotonic() - started
        c.ensure_user("ollama")
        port = sandbox.free_port()
        engine = sandbox.engine_toml("main", port).replace(
            "/usr/bin/llm-supervisor-simengine", f"{sandbox.VENV_BIN}/llm-supervisor-simengine")
        # one engine, as in dev/bench_status.py (whatever the example config holds)
        c.write("/etc/llm-supervisor/supervisor.toml", "# no engine here\n")
        c.write("/etc/llm-supervisor/conf.d/20-bench.toml", engine.replace('"main"', '"bench"'))
        c.run(["systemctl", "reload", "llm-supervisor"], timeout=120)
        sandbox.wait_engine(c, "bench", state="healthy", timeout=90)
        c.write(f"{SUP_DIR}/supervisord.conf", SUP_CONF)
        c.run(["systemd-run", "--unit=bench-supervisord", str(SUP_VENV / "bin/supervisord"),
               "-n", "-c", f"{SUP_DIR}/supervisord.conf"])
        c.wait_for(lambda: "RUNNING" in c.run(SUPERVISORCTL + ["status"], check=False).stdout,
                   timeout=30, what="supervisord's sleeper RUNNING")
        print(c.run(["llm-supervisorctl", "status"], check=False).stdout.rstrip())
        done = c.run(["/usr/bin/python3", "-c", TIMER, json.dumps([runs, WARMUP, commands])],
                     check=False, timeout=600)
        if done.returncode not in (0,):
            print(f"timing failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
        results = json.loads(done.stdout)
    print(f"\n.deb: {deb.name}, {deb.stat().st_size / 1e6:.2f} MB; "
          f"apt-get install: {install_s:.1f} s (byte-compiling and starting the daemon included)")
    print(f"{runs} runs each after {WARMUP} warm-up, interleaved, inside the container")
    ref = statistics.median(results[commands[1][0]]["wall"])
    for label, _ in commands:
        wall, rss = results[label]["wall"], results[label]["rss"]
        print(f"{label:34} median {statistics.median(wall):6.1f} ms  p90 {p90(wall):6.1f} ms"
              f"  peak RSS {max(rss):5.1f} MiB  {statistics.median(wall) / ref:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else RUNS))
