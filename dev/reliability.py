"""dev/reliability: hostile clients, a full disk, fuzzed configs, a spewing tool and closed
pipes against the real daemon under a real systemd (a throwaway container); writes
RELIABILITY.md. Each scenario is bounded in time; all traffic stays on the loopback and the
container's Unix socket. Run as root (dev/reliability installs what it needs first).

The "before" figures come from dev/reliability-before.json: this same script run with the
python of a venv where the code before these changes (commit c5558a4) is installed, as
`python dev/reliability.py --baseline "" --code "commit c5558a4" --json FILE`.

A figure a scenario could not take is written "not measured: <why>", never as a number; such
a run counts as failed, and the command exits 1 naming the scenarios that failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import checkout  # dev/, the script's own directory

checkout.use_venv()

import sandbox  # noqa: E402
from nspawn import Container  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HOSTILE = REPO / "dev/hostile.py"
STATE_DIR = "/var/lib/llm-supervisor"
CONFD = "/etc/llm-supervisor/conf.d"
BASELINE = REPO / "dev/reliability-before.json"  # measured on the code before issue 11
SETTINGS = sandbox.FAST.replace('probe_timeout = "20s"', 'probe_timeout = "5s"')


def not_measured(why: str) -> str:
    return f"not measured: {why}"


class NotMeasured(Exception):
    """A figure the scenario could not take; the message says why."""


@dataclass
class Row:
    key: str
    scenario: str
    runs: int = 0
    held: int = 0
    lost: str = "-"  # "-": not what this scenario looks at
    unavailable: str = "-"
    before: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.runs - self.held


def check(row: Row, ok: bool, note: str) -> None:
    row.runs += 1
    row.held += bool(ok)
    row.notes.append(("held: " if ok else "FAILED: ") + note)


@dataclass(frozen=True)
class Sample:
    """hostile.py's count of requests to the socket: asked, answered, the slowest answer
    (None: none answered); or, when ``missing`` says why, no count at all."""

    asked: int = 0
    answered: int = 0
    max_ms: float | None = None
    missing: str = ""

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Sample:
        return cls(doc["asked"], doc["answered"], doc["max_ms"])

    @property
    def whole(self) -> bool:
        """Requests were made, and every one was answered."""
        return not self.missing and 0 < self.answered == self.asked

    def within(self, ms: float) -> bool:
        return self.whole and self.max_ms is not None and self.max_ms < ms

    def __str__(self) -> str:
        if self.missing:
            return not_measured(self.missing)
        slowest = "none answered" if self.max_ms is None else f"max {self.max_ms:g} ms"
        return f"{self.answered}/{self.asked} ({slowest})"


def unavailable(samples: list[Sample], also: list[str] | None = None) -> str:
    """The row's unavailability from root's status samples: "never (status at most N ms)"
    when every request of every sample was answered, else what was not, and what was not
    measured, and why."""
    told = [f"root status {s}" for s in samples if not s.missing and not s.whole]
    told += also or []
    missing = list(dict.fromkeys(s.missing for s in samples if s.missing))
    if missing or not samples:
        told.append(not_measured("; ".join(missing) or "no run"))
    if told:
        return "; ".join(told)
    return f"never (root status at most {max(s.max_ms or 0 for s in samples):.0f} ms)"


def ctl(c: Container, *args: str, timeout: float = 60) -> Any:
    return c.run(["llm-supervisorctl", *args], check=False, timeout=timeout)


def status(c: Container) -> dict[str, Any]:
    """The status document; {} while the daemon does not answer."""
    try:
        return json.loads(ctl(c, "status", "--json", timeout=30).stdout)
    except (ValueError, subprocess.TimeoutExpired):
        return {}


def config_error(c: Container) -> list[str] | None:
    return status(c).get("supervisor", {}).get("config_error")


def reload(c: Container) -> tuple[int | None, float]:
    """`systemctl reload llm-supervisor`: exit status (None: no answer in 60 s), seconds."""
    started = time.monotonic()
    try:
        rc = c.run(["systemctl", "reload", "llm-supervisor"], check=False, timeout=60).returncode
    except subprocess.TimeoutExpired:
        rc = None
    return rc, time.monotonic() - started


def recover(c: Container) -> bool:
    """Between scenarios: True if the daemon still answers; else restart it (a failure)."""
    if status(c):
        return True
    c.run("systemctl reset-failed llm-supervisor; systemctl restart llm-supervisor",
          check=False, timeout=150)
    c.wait_for(lambda: status(c), timeout=60, what="the daemon answering again")
    return False


def daemon_restarts(c: Container) -> list[str]:
    """The daemon's NRestarts and MainPID: unchanged means it never restarted. (Not its
    ActiveState: a reload asked over the socket shows "reloading" until systemd has read the
    daemon's READY=1, a moment after the client has its answer.)"""
    return [c.run(["systemctl", "show", "-p", p, "--value", "llm-supervisor"]).stdout.strip()
            for p in ("NRestarts", "MainPID")]


def hostile(c: Container, *args: str, timeout: float) -> dict[str, Any]:
    """hostile.py's document, run inside: a copy, for the container cannot see a checkout
    under /tmp or a home. NotMeasured when it gives none."""
    what = f"hostile.py {args[0]}"
    try:
        done = c.run([PYTHON, c.copy_in(HOSTILE), *args], check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NotMeasured(f"{what} gave no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise NotMeasured(f"{what} failed (exit {done.returncode}): {last[-400:]}")
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        raise NotMeasured(f"{what} printed no document: {done.stdout[-200:]!r}") from None


def sample_status(c: Container, seconds: float) -> Sample:
    """Root's status requests every 0.2 s for ``seconds``, through hostile.py."""
    try:
        return Sample.of(hostile(c, "status", f"{seconds:g}", timeout=seconds + 60))
    except NotMeasured as e:
        return Sample(missing=str(e))


class Sampler:
    """Root's status sampled in a thread while the scenario goes on."""

    def __init__(self, c: Container, seconds: float) -> None:
        self.seconds = seconds
        self.sample = Sample(missing=f"the status sampler did not finish in {seconds + 90:.0f} s")
        self.thread = threading.Thread(target=self._run, args=(c,), daemon=True)
        self.thread.start()

    def _run(self, c: Container) -> None:
        self.sample = sample_status(c, self.seconds)

    def result(self) -> Sample:
        self.thread.join(self.seconds + 90)
        return self.sample


def tracebacks_since(c: Container, cursor: str) -> int:
    return c.journal("llm-supervisor", since_cursor=cursor).count("Traceback")


# ----------------------------------------------------------------------------- scenarios

def socket_abuse(c: Container, runs: int) -> Row:
    row = Row("socket", "socket abuse: 200 slowloris + 100 dead followers + 64 follows by a"
              " group member, then 500 concurrent status",
              before="root locked out ~90 s; 0/60 status in 30 s under slowloris;"
              " 152-179 of 500 answered")
    c.run("id -u member >/dev/null 2>&1 || useradd --no-create-home --shell /bin/sh member")
    c.run(["usermod", "-a", "-G", "llm-supervisor", "member"])
    samples: list[Sample] = []
    restarts: list[str] = []
    for _ in range(runs):
        try:
            r = hostile(c, "socket", "member", timeout=180)
        except NotMeasured as e:
            samples.append(Sample(missing=str(e)))
            check(row, False, not_measured(str(e)))
            continue
        st, burst, restart = Sample.of(r["root_status"]), Sample.of(r["burst"]), \
            r["root_restart_ms"]
        samples.append(st)
        if restart is None:
            restarts.append("root's restart unanswered in 30 s")
        check(row, st.within(1000) and restart is not None and burst.whole,
              f"root status {st}, root restart"
              f" {'unanswered in 30 s' if restart is None else f'{restart:g} ms'},"
              f" burst {burst}")
        sandbox.wait_engine(c, "main", state="healthy", timeout=60)
    row.unavailable = unavailable(samples, restarts)
    return row


def peak_rss_kib(c: Container, pid: str) -> int:
    return int(c.run(f"grep VmHWM /proc/{pid}/status | tr -dc 0-9").stdout)


def spewing_tool(c: Container, runs: int) -> Row:
    row = Row("spew", "spewing probe tool (vulkaninfo printing forever, with a background child)",
              before="daemon grew to 3.97 GB in 10 s; status blocked 21 s; an orphan per probe")
    c.write("/usr/local/bin/vulkaninfo", "#!/bin/sh\nsleep 600 &\nexec yes spew-spew-spew\n",
            0o755)
    samples: list[Sample] = []
    try:
        for _ in range(runs):
            pid = daemon_restarts(c)[1]
            hwm_before = peak_rss_kib(c, pid)
            sampler = Sampler(c, 8)
            reload = ctl(c, "reload", timeout=60)
            st = sampler.result()
            hwm = peak_rss_kib(c, pid)
            time.sleep(0.5)
            left = c.run("pgrep -fc '^(yes spew-spew-spew|sleep 600)' || true").stdout.strip()
            samples.append(st)
            ok = (reload.returncode == 0 and hwm - hwm_before < 64 << 10 and left == "0"
                  and st.whole)
            check(row, ok, f"reload rc {reload.returncode}; peak RSS {hwm_before // 1024} ->"
                  f" {hwm // 1024} MiB; processes left {left}; root status {st}")
    finally:
        c.run(["rm", "-f", "/usr/local/bin/vulkaninfo"])
        ctl(c, "reload")
    row.unavailable = unavailable(samples)
    return row


def config_fuzz(c: Container, runs: int) -> Row:
    from configfuzz import configs  # the unit tests' generator
    from hypothesis import HealthCheck, given, settings

    row = Row("fuzz", "config fuzz: fuzzed conf.d files + a FIFO + unit-breaking values, each"
              " through `systemctl reload`", before="52 of 794 gave tracebacks; a FIFO hung"
              " the daemon until the watchdog killed it")
    cursor = c.journal_cursor()
    before = daemon_restarts(c)
    outcomes = {"accepted": 0, "refused": 0, "other": 0}
    deadline = time.monotonic() + 240

    @settings(max_examples=runs, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(configs())
    def one(data: bytes) -> None:
        if time.monotonic() > deadline:
            return
        c.host_path(f"{CONFD}/50-fuzz.toml").parent.mkdir(parents=True, exist_ok=True)
        c.host_path(f"{CONFD}/50-fuzz.toml").write_bytes(data)
        rc, _ = reload(c)
        doc = status(c)
        if not doc:
            outcomes["other"] += 1
            recover(c)
        elif rc == 0 and doc["supervisor"]["config_error"] is None:
            outcomes["accepted"] += 1
        elif rc not in (0, None) and doc["supervisor"]["config_error"]:
            outcomes["refused"] += 1
        else:
            outcomes["other"] += 1
    one()
    n = sum(outcomes.values())
    traces = tracebacks_since(c, cursor)
    after = daemon_restarts(c)
    steady = after == before
    check(row, outcomes["other"] == 0 and traces == 0 and steady,
          f"{n} fuzzed reloads: {outcomes['accepted']} accepted, {outcomes['refused']} refused"
          f" with config_error set, {outcomes['other']} neither; {traces} tracebacks in the"
          f" journal; the daemon {'never restarted' if steady else 'RESTARTED'}"
          f" (NRestarts, MainPID: {before} -> {after})")
    row.runs = n  # each fuzzed reload is a run
    row.held = n - outcomes["other"] if traces == 0 and steady else 0

    c.run(["rm", "-f", f"{CONFD}/50-fuzz.toml"])
    c.run(["mkfifo", f"{CONFD}/60-pipe.toml"])
    rc, took = reload(c)
    row.unavailable = "never" if took < 5 else f"reload blocked {took:.0f} s (FIFO)"
    error = config_error(c) or []
    check(row, rc not in (0, None) and took < 5 and "not a regular file" in " ".join(error),
          f"FIFO in conf.d: reload exit {rc} after {took:.1f} s; config_error {error}")
    c.run(["rm", "-f", f"{CONFD}/60-pipe.toml"])
    if not recover(c):
        row.notes.append("FAILED: the daemon stopped answering; restarted")
        row.unavailable += "; the daemon stopped answering and was restarted"
    c.write(f"{CONFD}/70-slash.toml", '[[engine]]\nname = "main"\nwritable = ["/srv/m\\\\"]\n')
    rc, _ = reload(c)
    error = config_error(c) or []
    check(row, rc not in (0, None) and any("writable" in e for e in error),
          f"writable path ending in a backslash: reload exit {rc}; config_error {error}")
    c.run(["rm", "-f", f"{CONFD}/70-slash.toml"])
    reload(c)
    row.lost = "nothing (the running config stayed on every refusal)"
    return row


def broken_pipe(c: Container, runs: int) -> Row:
    row = Row("pipe", "closed stdout: `llm-supervisorctl events -n 0 | head -1`",
              before="BrokenPipeError traceback, exit 120")
    for _ in range(runs):
        done = c.run("set -o pipefail; llm-supervisorctl events -n 0 | head -1", check=False)
        check(row, done.returncode == 0 and "Traceback" not in done.stderr,
              f"exit {done.returncode}, stderr {done.stderr.strip()[:100]!r}")
    row.unavailable = "-"
    return row


def full_disk(c: Container, runs: int) -> Row:
    row = Row("disk", "full state disk: a ROCm hang while /var/lib/llm-supervisor is full",
              before="no demotion for a minute; status said healthy; restart was a traceback"
              " loop")
    lost_flushed = lost_restart = 0
    missed: list[str] = []
    for _ in range(runs):
        c.run(["systemctl", "stop", "llm-supervisor", "llm-main"])
        c.write("/etc/llm-supervisor/faults-main.json", json.dumps({"rocm": {"hang_after": 12}}))
        c.run(f"mountpoint -q {STATE_DIR} && umount {STATE_DIR}; mkdir -p {STATE_DIR};"
              f" mount -t tmpfs -o size=1m tmpfs {STATE_DIR}")
        sandbox.start_daemon(c)
        sandbox.wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
        c.run(f"dd if=/dev/zero of={STATE_DIR}/filler bs=4k 2>/dev/null; true")
        sampler = Sampler(c, 40)
        try:
            demoted = sandbox.wait_engine(c, "main", state="healthy", tier="vulkan",
                                          timeout=90)
        except AssertionError as exc:
            demoted = None
            row.notes.append(str(exc)[:500])
        degraded = status(c).get("supervisor", {}).get("degraded")
        st = sampler.result()
        if not st.whole:
            missed.append(f"root status {st}")
        # the disk still full, the daemon restarts: it must come back (in-memory events die)
        seen = {(e["ts"], e["type"], e.get("reason")) for e in sandbox.events(c)}
        started = time.monotonic()
        c.run(["systemctl", "restart", "llm-supervisor"], check=False, timeout=150)
        try:
            c.wait_for(lambda: status(c), timeout=60, what="status after a restart")
            back = time.monotonic() - started
        except TimeoutError:
            back = None
            missed.append("no status within 60 s of a restart on the full disk")
        c.run(["rm", "-f", f"{STATE_DIR}/filler"])
        ctl(c, "reload")  # an event: the backlog is flushed before it
        after = status(c).get("supervisor", {})
        history = sandbox.events(c)
        gone = len(seen - {(e["ts"], e["type"], e.get("reason")) for e in history})
        seqs = [e["seq"] for e in history]
        gaps = sum(b - a - 1 for a, b in zip(seqs, seqs[1:], strict=False))
        lost_flushed += gaps + after.get("events_dropped", 0)
        lost_restart += gone
        ok = (demoted is not None and bool(degraded) and after.get("degraded") is None
              and gaps == 0 and st.whole and back is not None)
        check(row, ok, f"demoted to vulkan with the disk full: {demoted is not None};"
              f" status said degraded: {degraded!r}; root status {st}; restarted on the full"
              f" disk: status {'not back in 60 s' if back is None else f'back in {back:.1f} s'},"
              f" {gone} in-memory events lost; after space returned: degraded"
              f" {after.get('degraded')!r}, {len(history)} events, seq gaps {gaps}")
        c.write("/etc/llm-supervisor/faults-main.json", "{}")
    row.lost = (f"{lost_flushed} events while running; {lost_restart} events kept in memory"
                " were lost when the daemon restarted with the disk still full")
    row.unavailable = "; ".join(missed) or "never"
    return row


REWRITE = """
import sys
from llm_supervisor import config
from llm_supervisor.systemd import units
cfg = config.load(sys.argv[1])
engine = next(e for e in cfg.engines if e.name == sys.argv[2])
units.write_files(cfg.supervisor.unit_dir,
                  units.render(cfg, engine, sys.argv[3], units.HostFacts.read()).files())
"""


def interrupted_switch(c: Container, runs: int) -> Row:
    """What a daemon killed between writing a demotion's units and systemd's daemon-reload
    leaves behind: state and files say vulkan, systemd still runs rocm."""
    row = Row("switch", "crash during a switch: killed between the unit write and"
              " daemon-reload", before="NeedDaemonReload never redone; the old ROCm unit"
              " restarted; the ROCm fault blamed on vulkan; settled on cpu")
    waits = []
    for _ in range(runs):
        sandbox.wait_engine(c, "main", state="healthy", timeout=60)
        c.run(["systemctl", "stop", "llm-supervisor"])
        tier = c.run(["systemctl", "show", "-p", "Environment", "--value", "llm-main"]).stdout
        target = "cpu" if "LLM_SUPERVISOR_TIER=vulkan" in tier else "vulkan"
        # through the container (the state dir may be a tmpfs mounted in there)
        state = json.loads(c.run(["cat", f"{STATE_DIR}/state.json"]).stdout)
        state["engines"]["main"]["tier"] = target
        c.run(["tee", f"{STATE_DIR}/state.json"], input=json.dumps(state))
        c.run([PYTHON, "-c", REWRITE, sandbox.CONFIG, "main", target])
        need = c.run(["systemctl", "show", "-p", "NeedDaemonReload", "--value",
                      "llm-main"]).stdout.strip()
        started = time.monotonic()
        sandbox.start_daemon(c)
        try:
            sandbox.wait_engine(c, "main", state="healthy", tier=target, timeout=60)
            ran = sandbox.process_env(c, "llm-main.service").get("LLM_SUPERVISOR_TIER")
            waits.append(time.monotonic() - started)
        except AssertionError as exc:
            ran = None
            row.notes.append(str(exc)[:300])
        check(row, need == "yes" and ran == target, f"NeedDaemonReload was {need}; the engine"
              f" process runs {ran} (wanted {target}) after the restart")
    ctl(c, "pin", "main", "rocm")
    sandbox.wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
    ctl(c, "unpin", "main")
    row.unavailable = (f"healthy on the switched tier {max(waits):.1f} s after the daemon"
                       " started" if waits else
                       not_measured("the engine never served on the switched tier"))
    return row


def restarters(c: Container, runs: int) -> Row:
    """An engine failing on every tier: while the supervisor waits to retry, systemd must not
    restart it behind its back."""
    row = Row("restarters", "two restarters: an engine crashing on every tier, while"
              " `failed` waits for its retry", before="systemd restarted it every few seconds"
              " while the supervisor said `retry in 64 s` (NRestarts 3 -> 13 a minute)")
    port = sandbox.free_port()
    c.write(f"{CONFD}/50-loop.toml", sandbox.engine_toml(
        "loop", port, c=c, faults={"*": {"crash_on_start": True}},
        extra='chain = ["cpu"]\n[engine.health]\nfailures = 1\n'))
    reload(c)
    for _ in range(runs):
        doc = sandbox.wait_engine(c, "loop", state="failed", timeout=90)
        before = c.run(["systemctl", "show", "-p", "NRestarts", "--value",
                        "llm-loop.service"]).stdout.strip()
        active = c.run(["systemctl", "is-active", "llm-loop.service"], check=False)
        time.sleep(20)
        after = c.run(["systemctl", "show", "-p", "NRestarts", "--value",
                       "llm-loop.service"]).stdout.strip()
        now = sandbox.engine_status(c, "loop") or {}
        restarted_by_retry = now.get("state") != "failed"
        check(row, before == after or restarted_by_retry,
              f"failed with a retry at {doc.get('next_retry_at')}; unit"
              f" {active.stdout.strip()}; NRestarts {before} -> {after} in 20 s"
              + ("; the supervisor's own retry came in between" if restarted_by_retry else ""))
    c.run(["rm", "-f", f"{CONFD}/50-loop.toml"])
    reload(c)
    return row


NOT_COVERED = [
    ("full disk during a demotion's unit write", "the decisions act first and record"
     " best-effort (unit tests); no scenario fills /etc here"),
    ("hung `systemctl show`", "unit state moves to D-Bus (issue 13)"),
]


def render(rows: list[Row], seconds: float, baseline: dict[str, Any]) -> str:
    measured = f" and, where a figure says \"measured\", by this same command run against" \
        f" {baseline['code']}" if baseline else ""
    lines = ["# Reliability", "",
             f"`dev/reliability` ran these scenarios against the real daemon under a real"
             f" systemd (a throwaway container) {checkout.measured_at()}"
             f", in {seconds:.0f} s. \"Before\" is what the same attacks did to the daemon"
             f" before this work, as reported in issue 11{measured}. \"-\": not what"
             " the scenario looks at.", "",
             "| scenario | runs | held | failed | lost | status / root's actions unavailable |"
             " before |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        before = r.before
        old = baseline.get("rows", {}).get(r.key)
        if old:
            before += f"; measured: {old['held']} of {old['runs']} held"
            if old.get("unavailable") not in (None, "-"):
                before += f", unavailable: {old['unavailable']}"
        cells = [r.scenario, r.runs, r.held, r.failed, r.lost, r.unavailable, before]
        lines.append("| " + " | ".join(" ".join(str(x).split()).replace("|", "\\|")
                                       for x in cells) + " |")
    for name, part in NOT_COVERED:
        lines.append(f"| {name} | - | - | - | - | - | not covered here ({part}) |")
    lines += ["", "## Details", ""]
    for r in rows:
        lines.append(f"### {r.scenario}")
        lines += [f"- {note}" for note in r.notes] + [""]
        old = baseline.get("rows", {}).get(r.key)
        if old:
            lines.append(f"Before ({baseline['code']}):")
            lines += [f"- {note}" for note in old["notes"]] + [""]
    return "\n".join(lines)


SCENARIOS = {"socket": socket_abuse, "spew": spewing_tool, "fuzz": config_fuzz,
             "pipe": broken_pipe, "disk": full_disk, "switch": interrupted_switch,
             "restarters": restarters}
RUNS = {"socket": 3, "spew": 3, "fuzz": 100, "pipe": 20, "disk": 2, "switch": 2,
        "restarters": 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--runs", type=float, default=1.0, help="scale the runs per scenario")
    parser.add_argument("-o", "--output", default=str(REPO / "RELIABILITY.md"))
    parser.add_argument("--json", help="also write the figures as JSON here")
    parser.add_argument("--baseline", default=str(BASELINE) if BASELINE.exists() else None,
                        help="a --json of an earlier run (the code before), for the before"
                        " column (default %(default)s)")
    parser.add_argument("--code", default="this checkout", help="what code ran (for --json)")
    args = parser.parse_args()
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else {}
    started = time.monotonic()
    rows = []
    with Container("reliability") as c:
        sandbox.install(c)
        sandbox.configure(c, sandbox.engine_toml("main", sandbox.free_port(), c=c, faults={}),
                          SETTINGS)
        sandbox.start_daemon(c)
        sandbox.wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
        for name in args.only or list(SCENARIOS):
            print(f"== {name}", flush=True)
            try:
                row = SCENARIOS[name](c, max(1, int(RUNS[name] * args.runs)))
            except Exception as exc:  # a scenario that breaks is a failed row, not a crash
                why = f"the scenario stopped: {exc!r}"[:2000]
                row = Row(name, name, runs=1, held=0, lost=not_measured(why),
                          unavailable=not_measured(why), notes=[f"FAILED: {why}"])
            try:
                if not recover(c):
                    row.runs += 1
                    row.notes.append("FAILED: the daemon did not answer after the scenario;"
                                     " restarted")
            except Exception as exc:
                row.notes.append(f"FAILED: the daemon could not be brought back: {exc!r}"[:500])
            for note in row.notes:
                print(f"   {note}", flush=True)
            rows.append(row)
    Path(args.output).write_text(render(rows, time.monotonic() - started, baseline) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"code": args.code, "rows": {
            r.key: {"runs": r.runs, "held": r.held, "lost": r.lost,
                    "unavailable": r.unavailable, "notes": r.notes} for r in rows}}, indent=1))
    print(f"wrote {args.output}")
    return verdict(rows)


def verdict(rows: list[Row]) -> int:
    """0 when every run of every scenario held; else 1, and which failed and why."""
    failed = [r for r in rows if r.failed]
    for r in failed:
        why = next((n for n in r.notes if n.startswith("FAILED: ")), "FAILED: ?")
        print(f"dev/reliability: {r.key}: {r.failed} of {r.runs} runs failed; first: "
              f"{why.removeprefix('FAILED: ')[:600]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
