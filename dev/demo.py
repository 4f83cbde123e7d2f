"""The demo: the real daemon under a real systemd, surviving a ROCm fault.

Boots a throwaway systemd container, installs llm-supervisor's unit and a config with one
simulated Ollama engine whose ROCm tier hangs after a short while (generation stops while
`/` still answers 200 — what ROCm does on real cards), starts the daemon with
`systemctl start`, and shows `llm-supervisorctl status` until the engine serves on Vulkan.
Then it shuts the container down; nothing on this machine is changed.
"""

from __future__ import annotations

import sys
import time

import sandbox
from nspawn import Container

HANG_AFTER = 12  # seconds of good service on ROCm before the GPU "hangs"
DEADLINE = 120


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(c: Container, argv: list[str]) -> str:
    done = c.run(argv, check=False)
    print(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}", end="", flush=True)
    return done.stdout


def main() -> int:
    with Container("demo") as c:
        say(f"booted a throwaway systemd ({c.machine}) in {c.boot_seconds:.1f}s")
        sandbox.install(c)
        port = sandbox.free_port()
        sandbox.configure(c, sandbox.engine_toml(
            "main", port, c=c, faults={"rocm": {"hang_after": HANG_AFTER}}))
        show(c, ["cat", sandbox.CONFIG])
        print(f"fault plan: on ROCm, generation hangs {HANG_AFTER}s after start; / keeps "
              "answering 200", flush=True)
        say("systemctl start llm-supervisor")
        show(c, ["systemctl", "start", "llm-supervisor"])
        show(c, ["systemctl", "status", "--no-pager", "--lines=0", "llm-supervisor"])
        say("watching llm-supervisorctl status (a GPU hang is coming)")
        started, last, outcome = time.monotonic(), None, None
        while time.monotonic() - started < DEADLINE:
            doc = sandbox.engine_status(c, "main")
            seen = (doc["state"], doc["tier"], doc["reason"])
            if seen != last:  # print the table when something changed
                table = c.run(["llm-supervisorctl", "status"], check=False).stdout
                print(f"[{time.monotonic() - started:5.1f}s]\n{table}", flush=True)
                last = seen
            if doc["tier"] == "vulkan" and doc["state"] == "healthy":
                outcome = doc
                break
            time.sleep(1)
        if outcome is None:
            say("the engine did not reach Vulkan in time")
            show(c, ["journalctl", "--no-pager", "-n", "60", "-u", "llm-supervisor"])
            return 1
        say("survived: serving on Vulkan")
        env = sandbox.unit_env(c, "llm-main.service")
        print("systemctl show llm-main.service Environment: " + " ".join(
            f"{k}={v}" for k, v in env.items() if k != "SIMENGINE_FAULTS"))
        code, _ = sandbox.http_get(port, "/")
        print(f"GET http://127.0.0.1:{port}/ -> {code}; engine log says:")
        print(next(line for line in c.journal("llm-main.service").splitlines()[::-1]
                   if "inference compute" in line))
        say("what happened (events)")
        show(c, ["llm-supervisorctl", "events", "-n", "8"])
    say("container shut down; done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
