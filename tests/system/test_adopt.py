"""`llm-supervisorctl adopt ollama.service` under a real systemd: a stock-style unit with an
override.conf, serving on its port, ends as a healthy engine of the supervisor on the same
port, the old unit disabled and kept from starting, never two listeners on the port."""

from __future__ import annotations

import json
import threading

import psutil
from sandbox import (
    VENV_BIN,
    configure,
    free_port,
    http_get,
    install,
    main_pid,
    start_daemon,
    wait_engine,
)

from llm_supervisor.host.ports import unit_of

STOCK_UNIT = """\
[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart={exec}
User=ollama
Group=ollama
Restart=always
RestartSec=3
Environment="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

[Install]
WantedBy=default.target
"""
OVERRIDE = """\
[Service]
Environment="OLLAMA_HOST=127.0.0.1:{port}"
Environment="OLLAMA_MODELS=/var/lib/ollama-models"
"""


class Listeners:
    """Samples, from the host (the container shares its network), the pids listening on a port."""

    def __init__(self, port: int) -> None:
        self.port, self.most, self.stop = port, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            pids = {c.pid for c in psutil.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port}
            self.most = max(self.most, len(pids))

    def __enter__(self) -> Listeners:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/", timeout=1)[0] == 200
    except Exception:
        return False


def test_adopt_a_stock_ollama_service_with_an_override(fresh_container):
    c = fresh_container
    install(c)
    c.ensure_user("ollama")
    c.run(["install", "-d", "-o", "ollama", "-g", "ollama", "/var/lib/ollama-models"])
    port = free_port()
    c.write("/etc/systemd/system/ollama.service",
            STOCK_UNIT.format(exec=f"{VENV_BIN}/llm-supervisor-simengine serve"))
    c.write("/etc/systemd/system/ollama.service.d/override.conf", OVERRIDE.format(port=port))
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "enable", "--now", "ollama.service"])
    c.wait_for(lambda: _answers(port), timeout=30, what="the stock unit serving")
    configure(c, "")  # the supervisor, with no engine yet
    start_daemon(c)

    # doctor, live, on a config that wants that port: FAIL, naming the stock unit
    c.write("/root/trial.toml", f'[[engine]]\nname = "main"\nlisten = "127.0.0.1:{port}"\n')
    done = c.run(["llm-supervisorctl", "doctor", "--json", "--config", "/root/trial.toml"],
                 check=False)
    assert done.returncode == 1
    listen = {ch["name"]: ch for ch in json.loads(done.stdout)["checks"]}[
        f"main: listen 127.0.0.1:{port}"]
    assert listen["status"] == "FAIL" and "ollama.service" in listen["evidence"]
    assert "adopt ollama.service" in listen["fix"]

    # --dry-run changes nothing
    dry = c.run(["llm-supervisorctl", "adopt", "ollama.service", "--dry-run"])
    assert f'listen = "127.0.0.1:{port}"' in dry.stdout and "dry run" in dry.stdout
    assert c.run(["test", "-e", "/etc/llm-supervisor/conf.d/50-ollama.toml"],
                 check=False).returncode == 1
    assert c.run(["systemctl", "is-active", "ollama.service"]).stdout.strip() == "active"

    with Listeners(port) as listeners:
        adopted = c.run(["llm-supervisorctl", "adopt", "ollama.service"], timeout=180)
        doc = wait_engine(c, "ollama", state="healthy", timeout=90)
    assert listeners.most == 1, "two engines listened on one port"
    assert "The way back" in adopted.stdout
    assert doc["endpoint"] == f"http://127.0.0.1:{port}"
    assert c.run(["systemctl", "is-enabled", "ollama.service"], check=False).stdout.strip() \
        == "disabled"
    assert c.run(["systemctl", "is-active", "ollama.service"], check=False).stdout.strip() \
        == "inactive"
    assert unit_of(_listener_pid(port)) == "llm-ollama.service"
    written = c.read("/etc/llm-supervisor/conf.d/50-ollama.toml")
    assert '"/var/lib/ollama-models"' in written and "OLLAMA_HOST" not in written
    assert f"{VENV_BIN}/llm-supervisor-simengine serve" in written

    # Ollama's installer re-enables and restarts its unit on upgrades: the guard holds
    engine_pid = main_pid(c, "llm-ollama.service")
    c.run(["systemctl", "enable", "--now", "ollama.service"], check=False)
    assert c.run(["systemctl", "is-active", "ollama.service"], check=False).stdout.strip() \
        == "inactive"
    assert main_pid(c, "llm-ollama.service") == engine_pid and _answers(port)


def _listener_pid(port: int) -> int:
    return next(c.pid for c in psutil.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port)
