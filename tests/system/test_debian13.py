"""The package on Debian 13 (trixie: Python 3.13, systemd 257), in a booted container made
from Debian's archive (dev/roots.py, cached under /opt): built there, then install → the
installed `--check` on a good and a bad config → reload with an engine → upgrade (the engine
not restarted) → purge. Lintian (trixie's) reports no error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from nspawn import Container
from roots import carry_host_settings, copy_source, debian_root
from sandbox import FAST, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trixie():
    c = Container("trixie", lower=debian_root("trixie"))
    c.boot(timeout=120)
    try:
        carry_host_settings(c)
        yield c
    finally:
        c.shutdown()


def status(c) -> dict:
    done = c.run(["llm-supervisorctl", "status", "--json"], check=False)
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)


def wait_healthy(c, name: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        engines = {e["name"]: e for e in status(c)["engines"]}
        if engines.get(name, {}).get("state") == "healthy":
            return engines[name]
        assert time.monotonic() < deadline, engines.get(name)
        time.sleep(0.5)


def apt(c, *args: str):
    return c.run(["apt-get", "-y", "-q", "--no-install-recommends", *args], timeout=600,
                 env={"DEBIAN_FRONTEND": "noninteractive"})


def test_build_install_check_reload_upgrade_purge_on_debian_13(trixie):
    c = trixie
    assert c.run(["cat", "/etc/debian_version"]).stdout.startswith("13")
    src = copy_source(c, REPO)
    for version, flags in (("0.1.0-1", ["--no-lintian"]), ("0.1.0-2", [])):
        built = c.run([f"{src}/packaging/build-deb", *flags, "--version", version],
                      check=False, timeout=900)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    old, new = (f"{src}/dist/llm-supervisor_0.1.0-{n}_amd64.deb" for n in (1, 2))
    depends = c.run(["dpkg-deb", "-f", new, "Depends"]).stdout
    assert "python3 (>= 3.13)" in depends and "python3 (<< 3.14)" in depends
    lint = c.run(["lintian", "--fail-on", "error", new], check=False, timeout=600)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
    apt(c, "install", old)
    assert c.run(["systemctl", "is-active", "llm-supervisor"]).stdout.strip() == "active"
    ok = c.run(["llm-supervisord", "--check"], check=False)
    assert ok.returncode == 0, ok.stderr
    c.write("/root/bad.toml", '[health]\ninterval = "never"\n')
    bad = c.run(["llm-supervisord", "--check", "--config", "/root/bad.toml"], check=False)
    assert bad.returncode == 1 and "interval" in bad.stderr, bad.stderr

    c.run(["useradd", "--system", "--user-group", "--home-dir", "/usr/share/ollama",
           "ollama"])
    port = free_port()
    c.write("/etc/llm-supervisor/conf.d/20-sim.toml", FAST + (
        f'\n[[engine]]\nname = "sim"\nkind = "ollama"\n'
        f'exec = "/usr/bin/llm-supervisor-simengine serve"\nlisten = "127.0.0.1:{port}"\n'
        'model = "qwen2.5:7b-instruct"\n'), mode=0o600)
    reload = c.run(["systemctl", "reload", "llm-supervisor"], check=False)
    assert reload.returncode == 0, reload.stderr
    doc = wait_healthy(c, "sim")
    assert doc["tier"] == "rocm"
    engine_pid = c.run(["systemctl", "show", "-p", "MainPID", "--value",
                        "llm-sim.service"]).stdout.strip()

    apt(c, "install", new)
    assert "0.1.0-2" in c.run(["dpkg-query", "-W", "-f=${Version}", "llm-supervisor"]).stdout
    wait_healthy(c, "sim")
    assert c.run(["systemctl", "show", "-p", "MainPID", "--value",
                  "llm-sim.service"]).stdout.strip() == engine_pid  # adopted, not restarted

    purged = apt(c, "purge", "llm-supervisor")
    assert "llm-sim.service" in purged.stdout
    for path in ("/etc/systemd/system/llm-sim.service", "/var/lib/llm-supervisor",
                 "/opt/llm-supervisor", "/usr/bin/llm-supervisorctl"):
        assert c.run(["test", "-e", path], check=False).returncode == 1, path
    assert c.run(["getent", "group", "llm-supervisor"], check=False).returncode == 2
    assert c.read("/etc/llm-supervisor/conf.d/20-sim.toml").startswith(FAST[:20])
