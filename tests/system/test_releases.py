"""The one .deb built on this host (Debian 12, the ``debs`` fixture) on the other releases MI50
hosts run, each booted in a container from a root made with debootstrap from that release's
own archive (dev/roots.py, cached under /opt): Debian 13 (Python 3.13, systemd 257) and
Ubuntu 24.04 (Python 3.12, systemd 255). The very
files test_packaging.py installs on Debian 12: the release's lintian → install → the
installed `--check` on a good and a bad config → the compiled modules of the release's
Python in use → reload with an engine → upgrade (the engine not restarted) → python3
reinstalled (the trigger byte-compiles again) → purge."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from nspawn import Container
from roots import carry_host_settings, release_root
from sandbox import FAST, apt, free_port, main_pid, wait_engine


@dataclass(frozen=True)
class Release:
    suite: str
    version_file: str  # /etc/os-release's VERSION_ID
    python: str


RELEASES = [Release("trixie", "13", "3.13"), Release("noble", "24.04", "3.12")]


@pytest.fixture(params=RELEASES, ids=lambda r: r.suite)
def booted(request):
    release: Release = request.param
    c = Container(release.suite, lower=release_root(release.suite))
    c.boot(timeout=120)
    try:
        carry_host_settings(c)
        yield c, release
    finally:
        c.shutdown()


def compiled(c, tree: str, python: str) -> int:
    tag = "cpython-" + python.replace(".", "")
    return int(c.run(f"find /opt/llm-supervisor/lib/{tree} -name '*.{tag}.pyc' | wc -l").stdout)


def test_the_same_deb_installs_checks_reloads_upgrades_and_purges(booted, debs):
    c, release = booted
    os_release = c.read("/etc/os-release")
    assert f'VERSION_ID="{release.version_file}"' in os_release, os_release
    assert c.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
                 ).stdout.strip() == release.python
    old, new = (c.copy_in(debs[key]) for key in ("old", "new"))

    # this release's lintian on the file built on Debian 12
    apt(c, "update")
    apt(c, "install", "lintian")
    lint = c.run(["lintian", "--fail-on", "error,warning", new], check=False, timeout=600)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
    apt(c, "install", old)
    assert c.run(["systemctl", "is-active", "llm-supervisor"]).stdout.strip() == "active"
    ok = c.run(["llm-supervisord", "--check"], check=False)
    assert ok.returncode == 0, ok.stderr
    c.write("/root/bad.toml", '[health]\ninterval = "never"\n')
    bad = c.run(["llm-supervisord", "--check", "--config", "/root/bad.toml"], check=False)
    assert bad.returncode == 1 and "interval" in bad.stderr, bad.stderr

    # the release's python3 runs the program with its own compiled modules, byte-compiled
    # (the old package's import package is `supervisor`: the layout before the rename)
    where = c.run(["/opt/llm-supervisor/bin/python3", "-I", "-c",
                   "import pydantic_core, supervisor; "
                   "print(pydantic_core.__file__); print(supervisor.__file__)"]).stdout.split()
    assert where[0].startswith(f"/opt/llm-supervisor/lib/python{release.python}/"), where
    assert where[1].startswith("/opt/llm-supervisor/lib/shared/"), where
    assert compiled(c, "shared", release.python) > 100
    assert compiled(c, f"python{release.python}", release.python) > 10

    c.run(["useradd", "--system", "--user-group", "--home-dir", "/usr/share/ollama",
           "ollama"])
    port = free_port()
    c.write("/etc/llm-supervisor/conf.d/20-sim.toml", FAST + (
        f'\n[[engine]]\nname = "sim"\nkind = "ollama"\n'
        f'exec = "/usr/bin/llm-supervisor-simengine serve"\nlisten = "127.0.0.1:{port}"\n'
        'model = "qwen2.5:7b-instruct"\n'), mode=0o600)
    reload = c.run(["systemctl", "reload", "llm-supervisor"], check=False)
    assert reload.returncode == 0, reload.stderr
    wait_engine(c, "sim", state="healthy", tier="rocm", timeout=90)
    engine_pid = main_pid(c, "llm-sim.service")

    apt(c, "install", new)
    assert c.run(["dpkg-query", "-W", "-f=${Version}", "llm-supervisor"]).stdout \
        == debs["new"].name.split("_")[1]
    wait_engine(c, "sim", state="healthy", timeout=90)
    assert main_pid(c, "llm-sim.service") == engine_pid  # adopted, not restarted
    moved = c.run(["/opt/llm-supervisor/bin/python3", "-I", "-c",
                   "import importlib.util, llm_supervisor; print(llm_supervisor.__file__);"
                   " print(importlib.util.find_spec('supervisor'))"]).stdout.split()
    assert moved == ["/opt/llm-supervisor/lib/shared/llm_supervisor/__init__.py", "None"], moved

    # the system's python3 changes (here: reinstalled): the trigger byte-compiles again and
    # restarts the daemon on it; the engine goes on serving, adopted
    c.run("find /opt/llm-supervisor -name __pycache__ -prune -exec rm -rf {} +")
    assert compiled(c, "shared", release.python) == 0
    daemon_pid = main_pid(c, "llm-supervisor.service")
    trig = apt(c, "install", "--reinstall", "python3-minimal")
    assert "Processing triggers for llm-supervisor" in trig.stdout, trig.stdout
    assert compiled(c, "shared", release.python) > 100
    assert main_pid(c, "llm-supervisor.service") not in (0, daemon_pid)
    wait_engine(c, "sim", state="healthy", timeout=90)
    assert main_pid(c, "llm-sim.service") == engine_pid

    purged = apt(c, "purge", "llm-supervisor")
    assert "llm-sim.service" in purged.stdout
    for path in ("/etc/systemd/system/llm-sim.service", "/var/lib/llm-supervisor",
                 "/opt/llm-supervisor", "/usr/bin/llm-supervisorctl"):
        assert c.run(["test", "-e", path], check=False).returncode == 1, path
    assert c.run(["getent", "group", "llm-supervisor"], check=False).returncode == 2
    assert c.read("/etc/llm-supervisor/conf.d/20-sim.toml").startswith(FAST[:20])
