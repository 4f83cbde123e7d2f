#!/usr/bin/env python3
"""Soak: no false verdict on a healthy engine under real use, then a GPU hang caught in time.

Under a real systemd (a throwaway systemd-nspawn container), the daemon watches one simulated
Ollama (two slots, OLLAMA_NUM_PARALLEL=2) serving a reasoning model -- the engine's `model`,
the canary's -- and an embedding model beside it that the scheduler put on the CPU (its
runner prints `offloaded 0/N layers to GPU`); the models' manifests are in OLLAMA_MODELS as
on a real host, so the daemon can tell its own model's runner from the other's. The health
settings are the defaults' divided by one factor (--scale, default 10: a canary every 3 s),
so each ratio is the defaults'.

For --minutes (default 30) users on loopback hit the engine's port: short chats, reasoning
requests with and without thinking, prompts of thousands of words (prefill takes seconds),
long streamed stories, non-streamed answers, embeddings, bursts above the two slots (a
queue), and idle gaps longer than the canary's period. Measured from the daemon's own record
(its events, its journal, its status, systemd's NRestarts and MainPID): failed checks,
restarts, tier changes, exits from healthy, other verdict events. On a healthy engine each is
a false verdict: all must be 0. Also counted: user requests by kind and HTTP code, canaries
passed (the engine's log: users never call /api/generate, the canary does), busy verdicts.

Then the users stop, the engine idles, and its GPU hangs (the fault plan's `hang_after`,
counted from the engine's start and placed after the soak, so nothing restarts it first):
generations never return, `/` answers 200. Measured: the hang's start to the daemon's first
action (systemd told to restart the unit, on the same tier), beside docs/decisions.md's bound for
"serving idle, generation hangs": k*i + t + max(C, S') + n*i (S' = 0 with two slots). Nothing
is read from the container while the hang is being caught (the journals of a long soak are big,
and reading them would take the CPU from the daemon): the record is read once, after.

Exit 0 when clean, 1 on any false verdict, failed user request, or a detection beyond bound.

    dev/soak.py [--minutes N] [--ollama-version 0.12.3] [--scale F] [--smoke]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import checkout  # noqa: E402

checkout.use_venv()

import httpx  # noqa: E402
import sandbox  # noqa: E402
from nspawn import Container  # noqa: E402

from llm_supervisor.config import HealthSection  # noqa: E402
from llm_supervisor.timefmt import epoch  # noqa: E402

MODEL = "qwen3:8b"  # reasoning: thinks by default (Ollama >= 0.12.4); the canary's model
EMBED = "nomic-embed-text"  # embedding-only, put on the CPU by the scheduler
ENGINE = "main"
UNIT = f"llm-{ENGINE}.service"
FAULTS_PATH = "/etc/llm-supervisor/soak-faults.json"
MODELS = "/usr/share/ollama/models"  # OLLAMA_MODELS: the models' manifests, as on a real host
PREFILL = 600.0  # prompt tokens/s: a prompt of 3000 words takes 5 s, in batches of 512
SETTLE = 20.0  # s after the engine answers: the soak begins once healthy, ends SETTLE + minutes
DRAIN = 60.0  # s for the users' last requests to end, then idle canaries, then the hang
WORDS = ("the", "model", "of", "a", "river", "basin", "is", "drawn", "from", "rainfall", "gauges",
         "soil", "maps", "and", "decades", "of", "flow", "records", "which", "engineers",
         "calibrate", "against", "floods", "that", "nobody", "predicted")


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    """[health] as the defaults, every duration divided by ``scale``."""

    scale: float
    values: dict[str, float]

    @classmethod
    def scaled(cls, scale: float) -> Settings:
        d = HealthSection()
        seconds = {k: getattr(d, k) / scale for k in (
            "interval", "timeout", "startup_grace", "canary_timeout", "stall_after",
            "blind_timeout")}
        return cls(scale, {**seconds, "failures": d.failures, "canary_every": d.canary_every})

    def __getattr__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def canary_period(self) -> float:
        return self.canary_every * self.interval

    @property
    def load_timeout(self) -> float:  # unset, as by default: startup_grace (>= canary_timeout)
        return max(self.startup_grace, self.canary_timeout)

    def toml(self) -> str:
        lines = ["[supervisor]", 'probe_timeout = "20s"', "", "[health]"]
        for key, value in self.values.items():
            if key in ("failures", "canary_every"):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{round(value * 1000)}ms"')
        lines += ["", "# The simulated host has an AMD GPU (the engines are simulated).",
                  "[tiers.rocm]", 'available = "always"', "[tiers.vulkan]",
                  'available = "always"', ""]
        return "\n".join(lines)

    def idle_bound(self, slots: int) -> float:
        """docs/decisions.md, serving idle, generation hangs: k*i + t + max(C, S') + n*i (t: the
        progress read before a canary is sent, which a wedged GPU's silence makes wait)."""
        s_prime = self.stall_after if slots == 1 else 0.0
        return self.canary_period + self.timeout + max(self.canary_timeout, s_prime) + \
            self.failures * self.interval

    def blind_bound(self) -> float:
        """docs/decisions.md, serving with no token signal (Ollama < 0.30):
        k*i + max(C, B) + n*i."""
        return self.canary_period + max(self.canary_timeout, self.blind_timeout) + \
            self.failures * self.interval

    def describe(self) -> str:
        v = self.values
        return (f"health = defaults / {self.scale:g}: interval {v['interval']:g}s, timeout "
                f"{v['timeout']:g}s, failures {v['failures']}, canary_every "
                f"{v['canary_every']} (a canary every {self.canary_period:g}s), canary_timeout "
                f"{v['canary_timeout']:g}s, stall_after {v['stall_after']:g}s, blind_timeout "
                f"{v['blind_timeout']:g}s, startup_grace {v['startup_grace']:g}s, load_timeout "
                f"(unset) {self.load_timeout:g}s")


def engine_toml(port: int, version: str | None) -> str:
    exec_ = (f"/usr/bin/llm-supervisor-simengine serve --model {MODEL}=reasoning"
             f" --model {EMBED}=embedding" + (f" --ollama-version {version}" if version else ""))
    return (f'[[engine]]\nname = "{ENGINE}"\nkind = "ollama"\nexec = "{exec_}"\n'
            f'listen = "127.0.0.1:{port}"\nmodel = "{MODEL}"\n'
            f'environment = {{ OLLAMA_NUM_PARALLEL = "2", OLLAMA_MODELS = "{MODELS}",'
            f' SIMENGINE_FAULTS = "{FAULTS_PATH}" }}\n')


def fault_plan(hang_after: float) -> dict[str, Any]:
    return {"*": {"cpu_models": [EMBED], "prefill_tokens_per_second": PREFILL},
            "rocm": {"hang_after": round(hang_after, 1)}}


# --------------------------------------------------------------------------- the users

@dataclass
class Load:
    """What the users share: their tally, the requests in flight, the idle gate."""

    port: int
    period: float  # the canary's period: idle gaps are longer
    stop: threading.Event = field(default_factory=threading.Event)
    open: threading.Event = field(default_factory=threading.Event)  # cleared: an idle gap
    codes: collections.Counter[tuple[str, int | str]] = field(
        default_factory=collections.Counter)  # (kind, code) -> requests
    failures: list[str] = field(default_factory=list)
    inflight: int = 0
    idle_since: float | None = None
    idle_gaps: list[float] = field(default_factory=list)  # idle spells longer than a period
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.open.set()
        self.idle_since = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def begin(self) -> None:
        with self.lock:
            if self.inflight == 0 and self.idle_since is not None:
                spell = time.monotonic() - self.idle_since
                if spell > self.period:
                    self.idle_gaps.append(spell)
                self.idle_since = None
            self.inflight += 1

    def end(self, kind: str, code: int | str, problem: str = "") -> None:
        with self.lock:
            self.inflight -= 1
            if self.inflight == 0:
                self.idle_since = time.monotonic()
            self.codes[(kind, code)] += 1
            if problem or code != 200:
                self.failures.append(f"{kind}: {code} {problem}"[:300])

    def pause(self, seconds: float) -> bool:
        """Wait, then for the gate; False once stopped."""
        if self.stop.wait(seconds):
            return False
        while not self.open.wait(1):
            if self.stop.is_set():
                return False
        return not self.stop.is_set()


def prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def chat_body(rng: random.Random, content: str, tokens: int, stream: bool,
              think: bool | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "stream": stream,
                            "messages": [{"role": "user", "content": content}],
                            "options": {"num_predict": tokens}}
    if think is not None:
        body["think"] = think
    return body


def ask(load: Load, client: httpx.Client, kind: str, path: str, body: dict[str, Any]) -> None:
    """One request; its code, and a problem when a 200 is not a whole answer."""
    load.begin()
    code: int | str = "error"
    problem = ""
    try:
        if body.get("stream"):
            with client.stream("POST", load.url + path, json=body) as r:
                code, last = r.status_code, {}
                for line in r.iter_lines():
                    if line.strip():
                        last = json.loads(line)
                if code == 200 and not last.get("done"):
                    problem = f"stream ended without done: {last}"
        else:
            r = client.post(load.url + path, json=body)
            code = r.status_code
            doc = r.json() if code == 200 else {"error": r.text}
            wanted = "embeddings" if path == "/api/embed" else "message"
            if code != 200 or not doc.get(wanted):
                problem = str(doc)[:200]
    except (httpx.HTTPError, ValueError) as e:
        code, problem = type(e).__name__, str(e)
    finally:
        load.end(kind, code, problem)


def user(load: Load, kind: str, seed: int) -> None:
    """One user of ``kind``, in a loop at its own pace until the load stops."""
    rng = random.Random(seed)
    pace = PACES[kind]
    with httpx.Client(trust_env=False, timeout=600) as client:
        while load.pause(rng.uniform(*pace)):
            if kind == "burst":
                burst(load, rng)
            else:
                label, path, body = REQUESTS[kind](rng)
                ask(load, client, label, path, body)


def short_chat(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    return "short chat", "/api/chat", chat_body(rng, "what is a river basin?",
                                                rng.randint(8, 40), False, False)


def reasoning(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    think = rng.choice((None, True, False))  # None: the model's default, it thinks
    stream = rng.random() < 0.5
    label = f"reasoning think={'default' if think is None else str(think).lower()}"
    return label, "/api/chat", chat_body(rng, "why do floods surprise engineers?",
                                         rng.randint(40, 160), stream, think)


def long_prompt(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    stream = rng.random() < 0.4
    return ("long prompt" + (" streamed" if stream else ""), "/api/chat",
            chat_body(rng, "summarise: " + prose(rng, rng.randint(1500, 3500)),
                      rng.randint(20, 80), stream, rng.choice((None, False))))


def story(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    return "long story streamed", "/api/chat", chat_body(
        rng, "tell me a long story about a river", rng.randint(250, 600), True, False)


def embedding(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    texts = [prose(rng, rng.randint(10, 200)) for _ in range(rng.randint(1, 16))]
    return "embedding", "/api/embed", {"model": EMBED, "input": texts}


def burst(load: Load, rng: random.Random) -> None:
    """Several at once, more than the two slots: the rest queue (the canary too)."""
    makers = (short_chat, reasoning, reasoning, short_chat, long_prompt)

    def one(i: int) -> None:
        label, path, body = makers[i % len(makers)](random.Random(rng.random()))
        with httpx.Client(trust_env=False, timeout=600) as client:
            ask(load, client, "burst: " + label, path, body)

    threads = [threading.Thread(target=one, args=(i,), daemon=True)
               for i in range(rng.randint(4, 7))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


REQUESTS = {"chat": short_chat, "reasoning": reasoning, "long": long_prompt, "story": story,
            "embed": embedding}
PACES = {"chat": (1, 4), "reasoning": (2, 8), "long": (8, 25), "story": (5, 20),
         "embed": (0.3, 2), "burst": (20, 60)}
USERS = ("chat", "chat", "reasoning", "reasoning", "long", "story", "embed", "embed", "burst")


def idle_gaps(load: Load, rng: random.Random) -> None:
    """Every minute or two, every user holds back until the engine has idled for 2.5 to 5
    canary periods."""
    while not load.stop.wait(rng.uniform(45, 120)):
        load.open.clear()
        while load.inflight and not load.stop.wait(0.2):
            pass
        load.stop.wait(rng.uniform(2.5, 5) * load.period)
        load.open.set()


def start_users(load: Load) -> list[threading.Thread]:
    threads = [threading.Thread(target=user, args=(load, kind, i), daemon=True)
               for i, kind in enumerate(USERS)]
    threads.append(threading.Thread(target=idle_gaps, args=(load, random.Random(99)),
                                    daemon=True))
    for t in threads:
        t.start()
    return threads


def stop_users(load: Load, threads: list[threading.Thread], timeout: float) -> bool:
    load.stop.set()
    load.open.set()
    end = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, end - time.monotonic()))
    return not any(t.is_alive() for t in threads) and load.inflight == 0


# --------------------------------------------------------------------------- the record

class Watcher:
    """The engine's status, sampled every half second in a thread of its own."""

    def __init__(self, c: Container) -> None:
        self.c, self.stop = c, threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                doc = sandbox.engine_status(self.c, ENGINE)
            except Exception as e:  # noqa: BLE001 - a missed sample is shown, not fatal
                self.samples.append({"t": time.time(), "error": str(e)[:200]})
                continue
            if doc is not None:
                self.samples.append({"t": time.time(), **{k: doc.get(k) for k in (
                    "state", "tier", "reason", "busy", "consecutive_failures", "last_check",
                    "speed", "other_models", "offload", "backend")}})

    def last(self) -> dict[str, Any] | None:
        """The last sample the daemon answered, if any."""
        return next((s for s in reversed(self.samples) if "error" not in s), None)

    def summary(self) -> dict[str, Any]:
        ok = [s for s in self.samples if "error" not in s]
        busy = [s["busy"] or "" for s in ok]
        episodes = sum(1 for a, b in zip(["", *busy], busy, strict=False)
                       if b.startswith("busy:") and not a.startswith("busy:"))
        bad = [s for s in ok if s["state"] != "healthy" or s["tier"] != "rocm"
               or s["consecutive_failures"] or (s["last_check"] or {}).get("ok") is False]
        return {"samples": len(ok), "missed": len(self.samples) - len(ok),
                "busy samples": sum(b.startswith("busy:") for b in busy),
                "busy episodes": episodes,
                "waiting samples": sum(b.startswith("waiting:") for b in busy),
                "bad": bad, "busy examples": sorted({b for b in busy if b})[:3]}


def journal(c: Container, *matches: str, fields: str = "") -> list[dict[str, Any]]:
    """Journal entries (JSON) matching, with their time as ``t`` (wall seconds)."""
    argv = ["journalctl", "--no-pager", "-o", "json", *matches]
    if fields:
        argv.append(f"--output-fields={fields},__REALTIME_TIMESTAMP")
    c.run(["journalctl", "--sync"], check=False)
    out = c.run(argv, timeout=180).stdout
    entries = []
    for line in out.splitlines():
        entry = json.loads(line)
        entry["t"] = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
        entries.append(entry)
    return entries


def text(entry: dict[str, Any]) -> str:
    m = entry.get("MESSAGE", "")
    return bytes(m).decode(errors="replace") if isinstance(m, list) else str(m)


def engine_ready_at(c: Container) -> float:
    """When the engine's last run began answering (its last start-up line; the fault plan's
    times count from there)."""
    lines = [e for e in journal(c, "-u", UNIT, fields="MESSAGE")
             if "vram-based default context" in text(e)]
    assert lines, "the engine never said it was ready"
    return float(lines[-1]["t"])


def unit_show(c: Container) -> dict[str, str]:
    out = c.run(["systemctl", "show", "-p", "NRestarts", "-p", "MainPID", UNIT]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@dataclass
class Record:
    """The daemon's record and the engine's log, read at once (journals are big after a long
    soak: reading them while the hang is caught would take the CPU from the daemon)."""

    engine: list[dict[str, Any]]  # the engine's log lines
    daemon: list[dict[str, Any]]  # the daemon's journal entries about the engine
    systemd: list[dict[str, Any]]  # PID 1's about the engine's unit
    events: list[dict[str, Any]]  # the engine's events (llm-supervisorctl events)

    @classmethod
    def read(cls, c: Container) -> Record:
        return cls(journal(c, "-u", UNIT, fields="MESSAGE"),
                   journal(c, "-u", "llm-supervisor", f"ENGINE={ENGINE}"),
                   journal(c, "_PID=1", f"UNIT={UNIT}", fields="MESSAGE"),
                   [e for e in sandbox.events(c) if e.get("engine") == ENGINE])

    def logged(self, message: str, since: float, until: float = float("inf")
               ) -> list[dict[str, Any]]:
        return [e for e in self.daemon if since <= e["t"] < until
                and text(e).startswith(message)]

    def events_between(self, seq: int, until: float) -> list[dict[str, Any]]:
        """Events after ``seq`` stamped before ``until`` (their stamps are whole seconds)."""
        return [e for e in self.events if e["seq"] > seq and epoch(e["ts"]) < until]

    def canaries(self, since: float, until: float) -> collections.Counter[str]:
        """The canary's requests by HTTP code, from the engine's GIN lines (users never call
        /api/generate)."""
        codes: collections.Counter[str] = collections.Counter()
        for e in self.engine:
            line = text(e)
            if since <= e["t"] < until and line.startswith("[GIN]") and \
                    '"/api/generate"' in line:
                codes[line.split("|")[1].strip()] += 1
        return codes

    def first_action(self, hang_at: float) -> tuple[float, dict[str, Any]] | None:
        """systemd told to stop the unit (the restart's first half) after the hang, and the
        daemon's record of the restart; None before both are in."""
        stopping = [e["t"] for e in self.systemd if e["t"] >= hang_at
                    and text(e).startswith("Stopping")]
        recorded = [e for e in self.logged("engine state", hang_at)
                    if "restarting on" in str(e.get("REASON", ""))]
        return (stopping[0], recorded[0]) if stopping and recorded else None


VERDICT_EVENTS = ("switch", "offload", "reboot", "pull")


def false_verdicts(record: Record, seq: int, since: float, until: float,
                   units: tuple[dict[str, str], dict[str, str]],
                   watched: dict[str, Any]) -> dict[str, list[Any]]:
    """Every verdict the daemon gave the healthy engine in [since, until), with evidence."""
    ours = record.events_between(seq, until)
    before, after = units
    bad = watched["bad"]
    return {
        "failed checks": [{k: e.get(k) for k in ("t", "TIER", "CAUSE", "REASON", "FAILURES")}
                          for e in record.logged("check failed", since, until)],
        "restarts": [e for e in ours if e["type"] == "state"
                     and "restarting on" in (e.get("reason") or "")],
        "tier changes": [e for e in ours if e["type"] == "tier"],
        "exits from healthy": [e for e in ours if e["type"] == "state"
                               and e.get("from") == "healthy"],
        "other verdict events": [e for e in ours if e["type"] in VERDICT_EVENTS],
        "systemd restarts": ([{"NRestarts": (before["NRestarts"], after["NRestarts"])}]
                             if after["NRestarts"] != before["NRestarts"] else []),
        "MainPID changes": ([{"MainPID": (before["MainPID"], after["MainPID"])}]
                            if after["MainPID"] != before["MainPID"] else []),
        "not healthy in status": bad[:5] + ([f"... {len(bad) - 5} more samples"]
                                            if len(bad) > 5 else []),
    }


# --------------------------------------------------------------------------- report

def table(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def report_users(load: Load) -> None:
    kinds: dict[str, collections.Counter[int | str]] = collections.defaultdict(
        collections.Counter)
    for (kind, code), n in load.codes.items():
        kinds[kind][code] += n
    print("user requests (HTTP codes):")
    table([(k, f"{sum(v.values()):6d}  " + ", ".join(f"{code}: {n}" for code, n in v.items()))
           for k, v in sorted(kinds.items())] +
          [("total", sum(load.codes.values()))])
    gaps = load.idle_gaps
    print(f"idle gaps longer than the canary period ({load.period:g}s): {len(gaps)}"
          + (f", {min(gaps):.1f}-{max(gaps):.1f}s" if gaps else ""))
    if load.failures:
        print(f"-- {len(load.failures)} user requests failed, e.g.:")
        for line in load.failures[:10]:
            print("   " + line)


def main() -> int:
    args = parse_args()
    settings = Settings.scaled(args.scale)
    minutes = args.minutes
    print(settings.describe(), flush=True)
    hang_after = SETTLE + minutes * 60 + DRAIN
    c = Container("soak")
    c.boot()
    try:
        return run(c, settings, minutes, hang_after, args.ollama_version)
    finally:
        c.shutdown()


def run(c: Container, settings: Settings, minutes: float, hang_after: float,
        version: str | None) -> int:
    port = setup(c, settings, hang_after, version)
    ready = engine_ready_at(c)
    soak_end, hang_at = ready + SETTLE + minutes * 60, ready + hang_after
    if time.time() > ready + SETTLE:
        print(f"the engine took {time.time() - ready:.0f}s to become healthy: more than"
              f" {SETTLE:g}s, the hang would come too early")
        return 1
    since, before, seq = time.time(), unit_show(c), max(e["seq"] for e in sandbox.events(c))
    watcher = Watcher(c)
    watcher.thread.start()
    load = Load(port, settings.canary_period)
    threads = start_users(load)
    print(f"soak: {(soak_end - since) / 60:.1f} min of users from now; the GPU hangs"
          f" {hang_after:.0f}s after the engine's start", flush=True)
    while time.time() < soak_end:
        time.sleep(min(60.0, max(0.1, soak_end - time.time())))
        if time.time() < soak_end - 1:
            print(f"  {(time.time() - since) / 60:4.1f} min: {sum(load.codes.values())} user"
                  f" requests, {len(load.failures)} failed; status samples"
                  f" {len(watcher.samples)}", flush=True)
    drained = stop_users(load, threads, timeout=hang_at - time.time() - 3 * settings.interval)
    users_done = time.time()
    time.sleep(max(0.0, hang_at - time.time() - 1))
    watcher.stop.set()
    watcher.thread.join()
    units = (before, unit_show(c))
    tier = (watcher.last() or {}).get("tier")

    # the hang: hands off while the daemon catches it, then read the record once
    bound = settings.idle_bound(slots=2)
    time.sleep(max(0.0, hang_at + bound + 10 - time.time()))
    record = Record.read(c)
    for _ in range(12):  # not in yet: a minute more
        if tier != "rocm" or record.first_action(hang_at):
            break
        time.sleep(5)
        record = Record.read(c)

    print(f"\n== soak: {(users_done - since) / 60:.1f} min of users, then"
          f" {hang_at - users_done:.0f}s idle (until the hang)")
    report_users(load)
    found = false_verdicts(record, seq, since, hang_at, units, watcher.summary())
    report_record(record, watcher, found, seq, since, hang_at)
    if not drained:
        print("the users' last requests did not end before the hang: the hang is not idle")
    late = report_hang(c, record, settings, hang_at, version, tier)
    false = any(found.values())
    return 1 if false or load.failures or late or not drained else 0


def setup(c: Container, settings: Settings, hang_after: float, version: str | None) -> int:
    """The daemon under systemd with one engine, healthy on rocm; the engine's port."""
    sandbox.install(c)
    port = sandbox.free_port()
    c.write(FAULTS_PATH, json.dumps(fault_plan(hang_after)))
    c.run(["install", "-d", "-o", "ollama", "-g", "ollama", MODELS])
    sandbox.configure(c, engine_toml(port, version), settings.toml())
    print(f"engine: simulated Ollama {version or '(simengine default, >= 0.30)'} on 127.0.0.1:"
          f"{port}, 2 slots, {MODEL} (reasoning, canary) + {EMBED} (embedding, on the CPU);"
          f" fault plan {json.dumps(fault_plan(hang_after))}", flush=True)
    sandbox.start_daemon(c)
    sandbox.wait_engine(c, ENGINE, state="healthy", tier="rocm",
                        timeout=settings.startup_grace + 60)
    return port


def report_record(record: Record, watcher: Watcher, found: dict[str, list[Any]], seq: int,
                  since: float, until: float) -> None:
    watched = watcher.summary()
    last = watcher.last()
    unsampled = "not measured: no status sample"
    events = record.events_between(seq, until)
    print("the daemon's record:")
    table([("canaries (engine's GIN lines)", dict(record.canaries(since, until))),
           ("status samples", f"{watched['samples']} ({watched['missed']} missed)"),
           ("busy verdicts seen", f"{watched['busy episodes']} episodes,"
            f" {watched['busy samples']} samples; waiting: {watched['waiting samples']}"),
           ("busy, e.g.", watched["busy examples"][:2]),
           ("speed (rocm)", {k: (last.get("speed") or {}).get(k) for k in (
               "reference", "learned", "last")} if last else unsampled),
           ("other models", [{k: m.get(k) for k in ("embedding", "offload", "backend")}
                             for m in (last.get("other_models") or [])]
            if last else unsampled),
           ("events in the soak", dict(collections.Counter(e["type"] for e in events)))]
          + [(f"FALSE: {k}", len(v)) for k, v in found.items()])
    for kind, evidence in found.items():
        if evidence:
            print(f"\n-- {kind}:")
            for item in evidence[:10]:
                print("   " + json.dumps(item, default=str))


def report_hang(c: Container, record: Record, settings: Settings, hang_at: float,
                version: str | None, tier: str | None) -> bool:
    """The hang's detection; True when beyond docs/decisions.md's bound (or not seen)."""
    bound = settings.idle_bound(slots=2)
    if tier != "rocm":
        where = f"the engine runs on {tier}" if tier else "no status sample of the engine"
        print(f"\n== the hang's detection: not measured: {where}; the plan hangs rocm only")
        return True
    print(f"\n== GPU hang while idle at {time.strftime('%H:%M:%S', time.localtime(hang_at))}"
          f" (bound: k*i + t + max(C, S') + n*i = {settings.canary_period:g} +"
          f" {settings.timeout:g} + {settings.canary_timeout:g} +"
          f" {settings.failures * settings.interval:g} ="
          f" {bound:g}s; S' = 0 with 2 slots)")
    if version and tuple(map(int, version.split("."))) < (0, 30, 0):
        print(f"   (docs/decisions.md's row without a token signal, for a busy engine: k*i + max(C,"
              f" B) + n*i = {settings.blind_bound():g}s)")
    seen = record.first_action(hang_at)
    if seen is None:
        print(f"no restart within {time.time() - hang_at:.0f}s of the hang")
        print(c.journal("llm-supervisor")[-3000:])
        return True
    stopping, recorded = seen
    took = stopping - hang_at
    print(f"first action: systemd stopping {UNIT} {took:.2f}s after the hang began"
          f" (bound {bound:g}s); the daemon recorded it {recorded['t'] - hang_at:.2f}s after:"
          f" cause {recorded.get('CAUSE')}, {recorded.get('REASON')}")
    timeline(record, hang_at, stopping)
    for check in record.logged("check failed", hang_at, recorded["t"]):
        print(f"   check failed +{check['t'] - hang_at:.2f}s: {check.get('CAUSE')}"
              f" ({check.get('FAILURES')}) {check.get('REASON')}")
    doc = sandbox.engine_status(c, ENGINE) or {}
    print(f"then: {doc.get('state')} on {doc.get('tier')} ({doc.get('reason')})")
    return took > bound


def timeline(record: Record, hang_at: float, stopping: float) -> None:
    """When the last canary before the hang answered (the engine's GIN line), and when the
    hung one was sent (the restart's evidence: how long it had waited at the decision)."""
    before = [e for e in record.engine if e["t"] < hang_at and text(e).startswith("[GIN]")
              and '"/api/generate"' in text(e)]
    if before:
        took = text(before[-1]).split("|")[2].strip()
        print(f"   last canary before the hang answered {before[-1]['t'] - hang_at:+.2f}s"
              f" (in {took})")
    verdict = next((e for e in record.events if e["type"] == "state"
                    and e.get("from") == "healthy" and epoch(e["ts"]) >= hang_at - 1), None)
    evidence = (verdict or {}).get("evidence") or {}
    if isinstance(evidence, dict) and "waited_s" in evidence:
        print(f"   the hung canary was sent about {stopping - evidence['waited_s'] - hang_at:+.1f}s"
              f" (it had waited {evidence['waited_s']}s, deadline {evidence.get('deadline_s')}s,"
              " when the restart was decided)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="the soak's length (default 30)")
    p.add_argument("--ollama-version", metavar="X.Y.Z",
                   help="the simulated Ollama's version (default: the simengine's, >= 0.30);"
                        " 0.12.3 has no token signal")
    p.add_argument("--scale", type=float, default=10.0,
                   help="the defaults' durations divided by this (default 10)")
    p.add_argument("--smoke", action="store_true", help="a 2-minute smoke run")
    args = p.parse_args()
    if args.smoke:
        args.minutes = 2.0
    return args


if __name__ == "__main__":
    sys.exit(main())
