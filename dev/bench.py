"""Every benchmark in one run; writes BENCHMARKS.md (tables) and benchmarks/*.png (plots).

Each figure stands beside its reference, measured in the same run on the same machine:

- ``status``: ``llm-supervisorctl status`` vs Supervisor 4.3's ``supervisorctl status`` vs
  ``systemctl status`` vs the bare interpreter (the timer of dev/bench_status.py);
- socket load: status requests per second, p50/p99, at 1/8/32 concurrent clients (8 engines),
  the median of rounds that alternate between the two daemons;
- CPU (% of one core) and RSS (daemon, and daemon plus its child processes: its cgroup) at
  1/8/32/64 simulated engines checked every second, canary every 5th check;
- ``systemctl start llm-supervisor`` until READY=1, at 1/8/32/64 engines;
- failover: from a crash of the ROCm engine (it now crashes at every start) to healthy on
  Vulkan, minus the engine's own start; systemd alone restarts the broken tier forever;
- the event history (dev/bench_events.py).

The reference daemon is the project at another commit (default: where this branch left
``main``), installed into its own venv; both run under a real systemd in a throwaway
container (dev/nspawn.py), each with its own tree's llm-supervisor.service.

    sudo dev/bench [--reference REV] [--engines 1,8,32,64] [--quick]

These are benchmarks, not tests: nothing here fails on a missed goal; BENCHMARKS.md says
which goals were met.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_status  # noqa: E402
import checkout  # noqa: E402
import sandbox  # noqa: E402
from nspawn import Container  # noqa: E402

# this checkout's own (checkout.own): two clones benchmarking at once keep their own
REFERENCE_VENV = checkout.own("bench-reference")
REFERENCE_SRC = checkout.own("bench-reference-src")
SUBJECT_VENV = checkout.own("bench-subject")  # this tree, a regular install (as the package)
SCRIPTS = ("llm-supervisord", "llm-supervisorctl")
CGROUPS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")  # hybrid (these hosts), or unified

SETTINGS = """
[supervisor]
probe_timeout = "20s"

[health]
interval = "1s"
timeout = "2s"
failures = 3
startup_grace = "60s"
canary_every = 5
canary_timeout = "5s"

[fallback]
restarts_per_tier = 1
promote_after = "0"

[tiers.rocm]
available = "always"
[tiers.vulkan]
available = "always"
"""

# Inside the container: N clients, each a loop of GET /v1/status over the socket.
LOAD = r"""
import asyncio, json, sys, time
sock, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
REQ = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
lat = []
async def one(end):
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        r, w = await asyncio.open_unix_connection(sock)
        w.write(REQ)
        data = await r.read()
        w.close()
        if not data.startswith(b"HTTP/1.1 200"):
            raise SystemExit(data[:200])
        lat.append(time.perf_counter() - t0)
async def main():
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(one(end) for _ in range(clients)))
    return time.perf_counter() - t0
took = asyncio.run(main())
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(json.dumps({"rps": len(lat) / took, "p50": q(0.5), "p99": q(0.99), "n": len(lat)}))
"""

def sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)


def install(venv: Path, source: Path) -> None:
    if not (venv / "bin/pip").exists():
        sh(["/usr/bin/python3", "-m", "venv", str(venv)])
    # Debian's pip 23.0 writes console scripts that import re (~5 ms at every start); a
    # current pip writes them without it, as a package build should
    sh([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", "--upgrade",
        "pip"])
    sh([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(source)])
    sh([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", "--no-deps",
        "--force-reinstall", str(source)])


def build_venvs(reference: str) -> str:
    """The subject (this tree, a regular install) and the reference (REV) venvs."""
    install(SUBJECT_VENV, REPO)
    bench_status.supervisor_venv()
    rev = sh(["git", "-C", str(REPO), "rev-parse", "--short", reference]).stdout.strip()
    stamp = REFERENCE_VENV / ".rev"
    if stamp.exists() and stamp.read_text() == rev:
        install(REFERENCE_VENV, REFERENCE_SRC)
        return rev
    src = REFERENCE_SRC
    sh(["rm", "-rf", str(src), str(REFERENCE_VENV)])
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    install(REFERENCE_VENV, src)
    stamp.write_text(rev)
    return rev


def merge_base() -> str | None:
    """Where this branch left main: the local branch, else the clone's origin/main."""
    for main in ("main", "origin/main"):
        done = subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", main],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def use(c: Container, venv: Path) -> None:
    """Point the daemon and the client at one venv, and install that tree's unit (the
    simulated engines stay the same)."""
    for name in SCRIPTS:
        c.run(["ln", "-sf", str(venv / "bin" / name), f"/usr/bin/{name}"])
    source = REPO if venv == SUBJECT_VENV else REFERENCE_SRC
    c.write("/etc/systemd/system/llm-supervisor.service",
            (source / "units/llm-supervisor.service").read_text())
    c.run(["systemctl", "daemon-reload"])


def engines_toml(c: Container, n: int, faults: dict[str, Any] | None = None) -> str:
    return "".join(sandbox.engine_toml(f"e{i}", 20000 + i, c=c,
                                       faults=faults) for i in range(n))


def reset(c: Container) -> None:
    c.run(["systemctl", "stop", "llm-supervisor"], check=False, timeout=120)
    c.run("systemctl stop 'llm-*.service'; systemctl reset-failed 'llm-*'; "
          "rm -rf /var/lib/llm-supervisor /etc/systemd/system/llm-e*.service* "
          "/etc/systemd/system/llm-main.service*; systemctl daemon-reload",
          check=False, timeout=300)


def all_healthy(c: Container, n: int, timeout: float) -> float:
    """Seconds until the daemon has ``n`` engines, all healthy; TimeoutError past
    ``timeout`` (what is measured next would not be of ``n`` healthy engines)."""
    start = time.monotonic()
    deadline = start + timeout
    states: Any = "no answer"
    while time.monotonic() < deadline:
        done = c.run(["llm-supervisorctl", "status", "--json"], check=False)
        if done.returncode in (0, 3):
            engines = json.loads(done.stdout)["engines"]
            if done.returncode == 0 and len(engines) == n:
                return time.monotonic() - start
            states = dict(collections.Counter(e["state"] for e in engines))
        time.sleep(1)
    raise TimeoutError(f"not all {n} engines healthy within {timeout:.0f} s (last: {states})")


def usage(c: Container, seconds: float) -> dict[str, float]:
    """CPU (% of one core) of the daemon's cgroup over ``seconds``, and RSS (median of
    samples, MiB) of the daemon and of its whole cgroup."""
    unit = c.run(["systemctl", "show", "-p", "ControlGroup", "--value",
                  "llm-supervisor"]).stdout.strip()
    cgroup = next(f"{root}{unit}" for root in CGROUPS
                  if c.run(["test", "-e", f"{root}{unit}/cpu.stat"], check=False).returncode == 0)

    def cpu_usec() -> int:
        for line in c.run(["cat", f"{cgroup}/cpu.stat"]).stdout.splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value)
        raise RuntimeError("no usage_usec")

    script = (f"cg={cgroup}; main=$(systemctl show -p MainPID --value llm-supervisor); "
              "all=0; for p in $(cat $cg/cgroup.procs); do "
              "r=$(awk '/^VmRSS:/{print $2}' /proc/$p/status 2>/dev/null); "
              "all=$((all + ${r:-0})); done; "
              "echo $(awk '/^VmRSS:/{print $2}' /proc/$main/status) $all "
              "$(wc -l < $cg/cgroup.procs)")
    own, whole, procs = [], [], []
    t0, u0 = time.monotonic(), cpu_usec()
    while time.monotonic() - t0 < seconds:
        fields = c.run(["sh", "-c", script]).stdout.split()
        own.append(int(fields[0]) / 1024)
        whole.append(int(fields[1]) / 1024)
        procs.append(int(fields[2]))
        time.sleep(max(0.0, seconds / 8 - 0.05))
    t1, u1 = time.monotonic(), cpu_usec()
    return {"cpu": (u1 - u0) / 1e6 / (t1 - t0) * 100, "rss": statistics.median(own),
            "rss_all": statistics.median(whole), "procs": max(procs)}


def ready_time(c: Container) -> float:
    t0 = time.monotonic()
    c.run(["systemctl", "start", "llm-supervisor"], timeout=600)
    return time.monotonic() - t0


def load(c: Container, clients: int, seconds: float) -> dict[str, float]:
    out = c.run([str(SUBJECT_VENV / "bin/python"), "-c", LOAD, sandbox.SOCKET, str(clients),
                 str(seconds)], timeout=seconds + 120).stdout
    return json.loads(out.splitlines()[-1])


def fleet(c: Container, label: str, venv: Path, counts: list[int],
          window: float) -> dict[str, Any]:
    """READY, CPU and RSS at each engine count."""
    use(c, venv)
    rows: dict[str, Any] = {"scale": {}, "load": {}}
    for n in counts:
        reset(c)
        sandbox.configure(c, engines_toml(c, n), SETTINGS)
        ready = ready_time(c)
        healthy = all_healthy(c, n, timeout=120 + 3 * n)
        time.sleep(3)
        measured = usage(c, window)
        rows["scale"][n] = {"ready": ready, "healthy_after": healthy, **measured}
        print(f"  {label}: {n} engines: READY {ready:.2f}s, all healthy after "
              f"{healthy:.1f}s, CPU {measured['cpu']:.1f}%,"
              f" RSS {measured['rss']:.0f}/{measured['rss_all']:.0f} MiB", flush=True)
    reset(c)
    return rows


def loads(c: Container, venvs: dict[str, Path], rounds: int,
          seconds: float) -> dict[str, dict[int, dict[str, float]]]:
    """The socket load at 8 engines, 1/8/32 clients: rounds that alternate between the
    daemons (the order flips every round), so that whatever else the machine does weighs on
    both alike; each figure is the median of the rounds."""
    runs: dict[str, dict[int, list[dict[str, float]]]] = {
        label: {clients: [] for clients in (1, 8, 32)} for label in venvs}
    for r in range(rounds):
        for label in (list(venvs) if r % 2 == 0 else list(venvs)[::-1]):
            use(c, venvs[label])
            reset(c)
            sandbox.configure(c, engines_toml(c, 8), SETTINGS)
            c.run(["systemctl", "start", "llm-supervisor"], timeout=600)
            all_healthy(c, 8, timeout=150)
            time.sleep(3)
            for clients, done in runs[label].items():
                done.append(load(c, clients, seconds))
                print(f"  {label}: load {clients} clients, round {r + 1}: {done[-1]}",
                      flush=True)
    reset(c)
    return {label: {clients: {key: statistics.median(run[key] for run in done)
                              for key in ("rps", "p50", "p99")}
                    for clients, done in by_clients.items()}
            for label, by_clients in runs.items()}


def engine_start(c: Container, runs: int = 5) -> float:
    """The simulated engine's own start on Vulkan: unit start until it answers HTTP."""
    took = []
    for i in range(runs):
        port = 21000 + i
        unit = f"bench-start-{i}"
        t0 = time.monotonic()
        c.run(["systemd-run", f"--unit={unit}", "-E", "OLLAMA_GPU_DRIVER=vulkan",
               "-E", f"OLLAMA_HOST=127.0.0.1:{port}", "/usr/bin/llm-supervisor-simengine",
               "serve"])
        c.wait_for(lambda p=port: c.run(["curl", "-sf", f"http://127.0.0.1:{p}/"],
                                        check=False).returncode == 0,
                   timeout=30, interval=0.02, what="the simulated engine answering")
        took.append(time.monotonic() - t0)
        c.run(["systemctl", "stop", unit], check=False)
    return statistics.median(took)


def failover(c: Container, label: str, venv: Path) -> dict[str, Any]:
    """Healthy on ROCm; then ROCm crashes at every start (kill -9 + a fault plan): the time
    until healthy on Vulkan."""
    use(c, venv)
    reset(c)
    c.write("/etc/llm-supervisor/faults-e0.json", "{}")
    sandbox.configure(c, engines_toml(c, 1, faults={}), SETTINGS)
    c.run(["systemctl", "start", "llm-supervisor"], timeout=120)
    sandbox.wait_engine(c, "e0", state="healthy", tier="rocm", timeout=120)
    c.write("/etc/llm-supervisor/faults-e0.json", json.dumps({"rocm": {"crash_on_start": True}}))
    t0 = time.monotonic()
    c.run(["kill", "-9", str(sandbox.main_pid(c, "llm-e0.service"))])
    sandbox.wait_engine(c, "e0", state="healthy", tier="vulkan", timeout=120)
    total = time.monotonic() - t0
    reset(c)
    return {"total": total}


def status_bench(c: Container, runs: int) -> dict[str, Any]:
    """dev/bench_status.py's timer, plus `systemctl status`, with one healthy engine."""
    use(c, SUBJECT_VENV)
    reset(c)
    sandbox.configure(c, engines_toml(c, 1), SETTINGS)
    c.run(["systemctl", "start", "llm-supervisor"], timeout=120)
    sandbox.wait_engine(c, "e0", state="healthy", timeout=120)
    c.write(f"{bench_status.SUP_DIR}/supervisord.conf", bench_status.SUP_CONF)
    c.run(["systemd-run", "--unit=bench-supervisord", str(bench_status.SUP_VENV /
           "bin/supervisord"), "-n", "-c", f"{bench_status.SUP_DIR}/supervisord.conf"])
    c.wait_for(lambda: "RUNNING" in c.run(bench_status.SUPERVISORCTL + ["status"],
                                          check=False).stdout,
               timeout=30, what="supervisord's sleeper RUNNING")
    commands = [
        ("llm-supervisorctl status", [str(SUBJECT_VENV / "bin/llm-supervisorctl"), "status"]),
        ("supervisorctl status (4.3.0)", bench_status.SUPERVISORCTL + ["status"]),
        ("systemctl status", ["systemctl", "status", "--no-pager", "llm-supervisor"]),
        ("python -c pass", [str(SUBJECT_VENV / "bin/python"), "-c", "pass"]),
        ("python -S -c pass", [str(SUBJECT_VENV / "bin/python"), "-S", "-c", "pass"]),
    ]
    done = c.run(["/usr/bin/python3", "-c", bench_status.TIMER,
                  json.dumps([runs, bench_status.WARMUP, commands])], timeout=900)
    raw = json.loads(done.stdout)
    c.run(["systemctl", "stop", "bench-supervisord"], check=False)
    reset(c)
    return {label: {"median": statistics.median(v["wall"]), "p90": bench_status.p90(v["wall"]),
                    "rss": max(v["rss"]), "wall": v["wall"]} for label, v in raw.items()}


def events_bench() -> str:
    done = subprocess.run([sys.executable, str(HERE / "bench_events.py"), "20000", "3"],
                          check=True, text=True, capture_output=True)
    return done.stdout.strip()


def save(out: Path, results: dict[str, Any]) -> None:
    (out.parent / "benchmarks").mkdir(exist_ok=True)
    (out.parent / "benchmarks" / "results.json").write_text(
        json.dumps(results, indent=1, default=str) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", default="merge-base",
                        help="the commit to compare with (default: where this branch left main)")
    parser.add_argument("--engines", default="1,8,32,64")
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer runs")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    counts = [int(x) for x in args.engines.split(",")]
    window, load_seconds, runs, rounds = (8, 3, 10, 3) if args.quick else (20, 8, 30, 5)
    reference = merge_base() if args.reference == "merge-base" else args.reference
    if reference is None:
        print(f"dev/bench: no main branch in {REPO} to compare with: give --reference REV",
              file=sys.stderr)
        return 2
    rev = build_venvs(reference)
    results: dict[str, Any] = {"reference": rev, "subject": sh(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).stdout.strip(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "provenance": checkout.provenance(),
        "command": " ".join(["dev/bench", *sys.argv[1:]])}
    if rev == results["subject"]:  # on main itself, where this branch left main is HEAD
        print(f"dev/bench: the reference is this commit ({rev}) itself: the two columns"
              " measure the same code; give --reference REV to compare with another",
              file=sys.stderr)
    with Container("bench") as c:
        sandbox.install(c)
        c.ensure_user("ollama")
        print("status commands", flush=True)
        results["status"] = status_bench(c, runs)
        results["engine_start"] = engine_start(c)
        for label, venv in (("subject", SUBJECT_VENV), ("reference", REFERENCE_VENV)):
            print(f"failover: {label}", flush=True)
            results.setdefault("failover", {})[label] = failover(c, label, venv)
            print(f"scale: {label}", flush=True)
            results.setdefault("fleet", {})[label] = fleet(c, label, venv, counts, window)
            save(args.out, results)
        if 8 in counts:
            print("socket load", flush=True)
            medians = loads(c, {"subject": SUBJECT_VENV, "reference": REFERENCE_VENV},
                            rounds, load_seconds)
            for label, rows in medians.items():
                results["fleet"][label]["load"] = rows
            save(args.out, results)
    results["events"] = events_bench()
    save(args.out, results)
    import bench_report
    args.out.write_text(bench_report.render(results, args.out.parent / "benchmarks"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    checkout.use_venv()
    sys.exit(main())
