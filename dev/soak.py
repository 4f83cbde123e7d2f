#!/usr/bin/env python3
"""Soak: a healthy simulated Ollama (two generation slots) under a mixed user load for a while,
the daemon watching it under a real systemd with the test config's fast checks (a canary every
2 s). Counts every verdict the daemon gave: failed checks, restarts, tier changes, speed and
garbage verdicts. On a healthy engine each of them is a false verdict: all must be 0.

Then, on the same engine, the speed drops to the CPU's while /api/ps keeps saying 100 % VRAM:
the time from the drop to the tier change.

    /opt/llm-supervisor-dev/venv-*/bin/python dev/soak.py [MINUTES]   # default 30
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import httpx  # noqa: E402
import sandbox  # noqa: E402
from nspawn import Container  # noqa: E402

MODEL = "qwen2.5:7b-instruct"
TWO_SLOTS = ('environment = { OLLAMA_NUM_PARALLEL = "2",'
             ' SIMENGINE_FAULTS = "/etc/llm-supervisor/soak.json" }\n')
# one user of each kind, each at its own pace: short chats, long stories, bursts of several
USERS = [("chat", 12, 0.5, 3.0), ("story", 400, 2.0, 10.0), ("burst", 40, 0.0, 0.3),
         ("chat", 20, 1.0, 5.0)]


def user(port: int, kind: str, tokens: int, pause_min: float, pause_max: float,
         stop: threading.Event, codes: list[int], rng: random.Random) -> None:
    with httpx.Client(trust_env=False, timeout=120) as client:
        while not stop.is_set():
            if kind == "burst":  # several at once, then a long pause: the queue fills
                threads = [threading.Thread(target=lambda: codes.append(client.post(
                    f"http://127.0.0.1:{port}/api/generate", json={
                        "model": MODEL, "prompt": "summarise", "stream": False,
                        "options": {"num_predict": tokens}}).status_code))
                    for _ in range(rng.randint(2, 5))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                stop.wait(rng.uniform(5, 20))
                continue
            r = client.post(f"http://127.0.0.1:{port}/api/chat", json={
                "model": MODEL, "stream": kind == "story",
                "messages": [{"role": "user", "content": "tell me more"}],
                "options": {"num_predict": rng.randint(tokens // 2, tokens)}})
            codes.append(r.status_code)
            stop.wait(rng.uniform(pause_min, pause_max))


def stamp(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def verdicts(c: Container) -> dict[str, int]:
    found = {"failed checks": 0, "restarts": 0, "tier changes": 0, "not healthy": 0}
    for e in sandbox.events(c):
        if e.get("engine") != "main":
            continue
        if e["type"] == "tier" and e.get("from"):
            found["tier changes"] += 1
        if e["type"] == "state" and e.get("from") == "healthy":
            found["not healthy"] += 1
        if e["type"] == "state" and "restarting" in (e.get("reason") or ""):
            found["restarts"] += 1
    journal = c.run(["journalctl", "-u", "llm-supervisor", "-o", "cat", "--no-pager"]).stdout
    found["failed checks"] = sum("check failed" in line for line in journal.splitlines())
    return found


def main() -> None:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    c = Container("soak")
    c.boot()
    try:
        sandbox.install(c)
        port = sandbox.free_port()
        drop_after = minutes * 60 + 30  # the fault plan counts from the engine's start
        c.write("/etc/llm-supervisor/soak.json",
                json.dumps({"rocm": {"cpu_speed_after": drop_after}}))
        sandbox.configure(c, sandbox.engine_toml("main", port, extra=TWO_SLOTS), sandbox.FAST)
        sandbox.start_daemon(c)
        sandbox.wait_engine(c, "main", state="healthy", tier="rocm", timeout=60)
        started = time.monotonic()
        stop, codes, threads = threading.Event(), [], []
        for i, (kind, tokens, lo, hi) in enumerate(USERS):
            t = threading.Thread(target=user, args=(port, kind, tokens, lo, hi, stop, codes,
                                                    random.Random(i)), daemon=True)
            t.start()
            threads.append(t)
        busy_seen = 0
        while time.monotonic() - started < minutes * 60:
            doc = sandbox.status(c, "main")
            busy_seen += bool(doc.get("busy", "") and doc["busy"].startswith("busy"))
            time.sleep(5)
        stop.set()
        for t in threads:
            t.join(timeout=150)
        found = verdicts(c)
        speed = sandbox.status(c, "main")["speed"]
        print(f"soak: {minutes:g} min, {len(codes)} user requests"
              f" ({sum(code == 200 for code in codes)} answered 200), busy seen in"
              f" {busy_seen} status reads, reference {speed['reference']} t/s on"
              f" {speed['tier']}, last {speed['last']}")
        print("false verdicts:", json.dumps(found), flush=True)
        # the drop: cpu_speed_after counts from the engine's start; wait for the tier change
        sandbox.wait_engine(c, "main", state="healthy", tier="vulkan",
                            timeout=drop_after - (time.monotonic() - started) + 120)
        tiers = [e for e in sandbox.events(c) if e.get("engine") == "main"
                 and e["type"] == "tier"]
        began, switch = stamp(tiers[0]["ts"]), tiers[-1]
        took = stamp(switch["ts"]) - (began + drop_after)
        print(f"speed drop -> tier change: {took:.1f} s (the engine started on rocm at"
              f" {tiers[0]['ts']}, its speed fell {drop_after:.0f} s later);"
              f" {switch['cause']}: {switch['reason']}")
    finally:
        c.shutdown()


if __name__ == "__main__":
    main()
