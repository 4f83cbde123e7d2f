"""Setting up llm-supervisor in a booted throwaway container, as a package would.

Used by the system tests and by the demo.

The project's venv (dev/bootstrap) is visible inside through the overlay; its console
scripts are linked into /usr/bin like the .deb does, the daemon's unit is installed, and
engines are simulated by llm-supervisor-simengine following a fault plan per tier.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SCRIPTS = ("llm-supervisord", "llm-supervisorctl", "llm-supervisor-simengine")
CONFIG = "/etc/llm-supervisor/supervisor.toml"
SOCKET = "/run/llm-supervisor/control.sock"


def free_port() -> int:
    """A loopback port free right now (the container shares the host's network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install(c: Any) -> None:
    """Links, users, groups and the daemon's unit, as the package would install them."""
    for name in SCRIPTS:
        c.run(["ln", "-sf", str(VENV_BIN / name), f"/usr/bin/{name}"])
    c.ensure_user("ollama")
    c.add_group("llm-supervisor")
    c.write("/etc/systemd/system/llm-supervisor.service",
            (REPO / "units/llm-supervisor.service").read_text())
    c.run(["systemctl", "daemon-reload"])


def apt(c: Any, *args: str, timeout: float = 600) -> Any:
    """apt-get in the container, without questions (a .deb path installs that file)."""
    return c.run(["apt-get", "-y", "-q", "--no-install-recommends", *args], timeout=timeout,
                 env={"DEBIAN_FRONTEND": "noninteractive"})


def engine_toml(name: str, port: int, *, faults: dict[str, Any] | None = None,
                extra: str = "", c: Any = None, host: str = "127.0.0.1") -> str:
    """An [[engine]] running the simulated Ollama; its fault plan is written next to the config."""
    env = ""
    if faults is not None:
        assert c is not None
        path = f"/etc/llm-supervisor/faults-{name}.json"
        c.write(path, json.dumps(faults))
        env = f'environment = {{ SIMENGINE_FAULTS = "{path}" }}\n'
    return (f'[[engine]]\nname = "{name}"\nkind = "ollama"\n'
            f'exec = "/usr/bin/llm-supervisor-simengine serve"\n'
            f'listen = "{host}:{port}"\nmodel = "qwen2.5:7b-instruct"\n{env}{extra}\n')


FAST = """
[supervisor]
probe_timeout = "20s"

[health]
interval = "1s"
timeout = "1s"
failures = 3
startup_grace = "8s"
canary_every = 2
canary_timeout = "2s"
stall_after = "2s"
blind_timeout = "10s"

[fallback]
restarts_per_tier = 1
promote_after = "0"

# The simulated host has an AMD GPU (the engines are simulated): overrule the probes.
[tiers.rocm]
available = "always"
[tiers.vulkan]
available = "always"
"""


def configure(c: Any, engines: str, settings: str = FAST) -> None:
    c.write(CONFIG, settings + "\n" + engines)


def start_daemon(c: Any) -> None:
    c.run(["systemctl", "start", "llm-supervisor"], timeout=120)


def status(c: Any, engine: str | None = None) -> dict[str, Any]:
    argv = ["llm-supervisorctl", "status", "--json"] + ([engine] if engine else [])
    done = c.run(argv, check=False)
    assert done.returncode in (0, 3), (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def engine_status(c: Any, name: str) -> dict[str, Any] | None:
    """One engine's status document, or None while the daemon has no such engine."""
    done = c.run(["llm-supervisorctl", "status", "--json", name], check=False)
    if done.returncode == 1 and "no engine named" in done.stderr:
        return None
    assert done.returncode in (0, 3), (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def wait_engine(c: Any, name: str, *, state: str, tier: str | None = None,
                timeout: float = 60) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = engine_status(c, name) or {}
        if last.get("state") == state and (tier is None or last["tier"] == tier):
            return last
        return None

    try:
        return c.wait_for(check, timeout=timeout, interval=0.5,
                          what=f"{name} {state} on {tier or 'any tier'}")
    except TimeoutError:
        recent = [(e["type"], e["engine"], e["reason"]) for e in events(c)[-20:]]
        raise AssertionError(f"{name} never became {state} on {tier}: last status {last}\n"
                             f"events: {recent}\n"
                             f"journal:\n{c.journal('llm-supervisor')[-4000:]}") from None


def events(c: Any) -> list[dict[str, Any]]:
    """The whole history, through the product's own API (it reads across rotated segments)."""
    out = c.run(["llm-supervisorctl", "events", "-n", "0", "--json"]).stdout
    return [json.loads(line) for line in out.splitlines()]


def unit_env(c: Any, unit: str) -> dict[str, str]:
    """The unit's Environment= as `systemctl show` reports it."""
    from llm_supervisor.systemd.systemctl import parse_environment
    out = c.run(["systemctl", "show", "-p", "Environment", "--value", unit]).stdout
    return parse_environment(out.strip())


def process_env(c: Any, unit: str) -> dict[str, str]:
    """The environment the engine's main process really has (/proc/PID/environ)."""
    raw = c.run(["cat", f"/proc/{main_pid(c, unit)}/environ"]).stdout
    return dict(item.partition("=")[::2] for item in raw.split("\0") if item)


def main_pid(c: Any, unit: str) -> int:
    return int(c.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip())


def http_get(port: int, path: str = "/", timeout: float = 3.0) -> tuple[int, str]:
    import httpx
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout, trust_env=False)
    return r.status_code, r.text


def watch(c: Any, name: str, seconds: float, interval: float = 0.5) -> list[dict[str, Any]]:
    """Samples of an engine's status over ``seconds``."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(engine_status(c, name))
        time.sleep(interval)
    return samples
