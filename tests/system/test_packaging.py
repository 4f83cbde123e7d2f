"""The Debian package on Debian 12 in a throwaway systemd: install, an engine in conf.d,
upgrade, remove, purge; lintian; `doctor` live; secrets a non-root user cannot see. The same
.deb files are installed on Debian 13 and Ubuntu 24.04 (test_releases.py); both are built
once per session (the ``debs`` fixture in conftest.py)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import zstandard
from sandbox import (
    FAST,
    SOCKET,
    VENV_BIN,
    apt,
    free_port,
    http_get,
    main_pid,
    process_env,
    wait_engine,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "hf_s3cret_value_99"


def sim_engine(name: str, port: int) -> str:
    """An engine running the simulated Ollama from the development venv: software of its
    own, as a real engine is (removing the package must not take its program away)."""
    return (f'[[engine]]\nname = "{name}"\nkind = "ollama"\n'
            f'exec = "{VENV_BIN}/llm-supervisor-simengine serve"\n'
            f'listen = "127.0.0.1:{port}"\nmodel = "qwen2.5:7b-instruct"\n'
            f'environment = {{ HF_TOKEN = "{SECRET}", OLLAMA_KEEP_ALIVE = "5m" }}\n')


def shipped_engines() -> list[str]:
    from llm_supervisor import config
    return [e.name for e in config.load(REPO / "etc/llm-supervisor/supervisor.toml").engines]


def test_lintian_reports_no_errors_or_warnings(debs):
    if shutil.which("lintian") is None:  # a fresh machine: Debian's own lintian, as build-deb
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "lintian"], check=True, capture_output=True, timeout=900)
    done = subprocess.run(["lintian", "--fail-on", "error,warning", str(debs["new"])],
                          capture_output=True, text=True, timeout=600)
    found = [line for line in done.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert done.returncode == 0 and not found, done.stdout + done.stderr


def test_install_engine_upgrade_remove_purge(fresh_container, debs):
    c = fresh_container
    # This machine's image forbids starting services from maintainer scripts (policy-rc.d
    # exits 101, as in container images); a host where the package is installed has none.
    c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
    started = time.monotonic()
    apt(c, "install", c.copy_in(debs["old"]))
    assert c.run(["test", "-f", "/opt/llm-supervisor/lib/shared/supervisor/daemon.py"]
                 ).returncode == 0  # the old layout
    install_seconds = time.monotonic() - started
    assert c.run(["systemctl", "is-active", "llm-supervisor"]).stdout.strip() == "active"
    assert c.run(["systemctl", "is-enabled", "llm-supervisor"]).stdout.strip() == "enabled"
    assert c.run(["getent", "group", "llm-supervisor"]).returncode == 0
    assert c.run("find /opt/llm-supervisor -name '*.pyc' | head -1").stdout.strip()  # postinst
    doc = json.loads(c.run(["llm-supervisorctl", "status", "--json"], check=False).stdout)
    assert [e["name"] for e in doc["engines"]] == shipped_engines()
    if not shipped_engines():  # the example config enables no engine: it says what to do
        out = c.run(["llm-supervisorctl", "status"]).stdout
        assert "no engines configured" in out and "adopt" in out
        text = c.run(["systemctl", "show", "-p", "StatusText", "--value",
                      "llm-supervisor"]).stdout
        assert "no engines configured" in text
    print(f"install took {install_seconds:.1f}s, package {debs['old'].stat().st_size} bytes")

    # man pages and bash completion, installed where man and bash-completion look
    for page in ("man1/llm-supervisorctl.1.gz", "man8/llm-supervisord.8.gz",
                 "man5/supervisor.toml.5.gz", "man1/llm-supervisor-simengine.1.gz"):
        text = c.run(f"zcat /usr/share/man/{page} | groff -man -Tutf8 -ww -z 2>&1 || true")
        assert c.run(["test", "-s", f"/usr/share/man/{page}"]).returncode == 0, page
        assert not text.stdout.strip(), (page, text.stdout)
    completed = c.run(["bash", "-c", "source /usr/share/bash-completion/completions/"
                       "llm-supervisorctl; COMP_WORDS=(llm-supervisorctl sta); COMP_CWORD=1;"
                       " _llm_supervisorctl; echo ${COMPREPLY[@]}"]).stdout.split()
    assert completed == ["start", "status"], completed
    zsh = c.run(["head", "-1", "/usr/share/zsh/vendor-completions/_llm-supervisorctl"])
    assert zsh.stdout.strip() == "#compdef llm-supervisorctl", zsh.stdout

    # the installed commands' exit statuses are their main()'s: the admin's config check
    ok = c.run(["/usr/bin/llm-supervisord", "--check"], check=False)
    assert ok.returncode == 0 and "ok" in ok.stdout, (ok.stdout, ok.stderr)
    c.write("/tmp/bad.toml", "[health]\ninterval = \"never\"\n")
    bad = c.run(["/usr/bin/llm-supervisord", "--check", "--config", "/tmp/bad.toml"],
                check=False)
    assert bad.returncode == 1 and "interval" in bad.stderr, (bad.returncode, bad.stderr)

    # a system python3 the package has no modules for (forced past its Depends): one line
    c.run(["mv", "/opt/llm-supervisor/lib/python3.11", "/opt/llm-supervisor/lib/away"])
    try:
        alien = c.run(["/usr/bin/llm-supervisorctl", "status"], check=False)
    finally:
        c.run(["mv", "/opt/llm-supervisor/lib/away", "/opt/llm-supervisor/lib/python3.11"])
    assert alien.returncode == 1 and alien.stderr.strip().count("\n") == 0, alien.stderr
    assert "Python 3.11, 3.12, 3.13" in alien.stderr and "system's 3.11 " in alien.stderr

    # an engine in conf.d, then `systemctl reload`
    port = free_port()
    c.ensure_user("ollama")
    c.write("/etc/llm-supervisor/conf.d/20-sim.toml", FAST + "\n" + sim_engine("sim", port),
            mode=0o600)
    reload = c.run(["systemctl", "reload", "llm-supervisor"], check=False)
    assert reload.returncode == 0, reload.stderr
    wait_engine(c, "sim", state="healthy", timeout=90)
    _no_secret_for_a_user(c)

    # doctor, live: the port is held by the engine's own unit, the socket group exists
    doctor = json.loads(c.run(["llm-supervisorctl", "doctor", "--json"], check=False).stdout)
    checks = {check["name"]: check for check in doctor["checks"]}
    assert checks[f"sim: listen 127.0.0.1:{port}"]["status"] == "PASS"
    assert "llm-sim.service" in checks[f"sim: listen 127.0.0.1:{port}"]["evidence"]
    assert checks["socket group"]["status"] == "PASS"
    assert checks["systemd"]["status"] == "PASS"

    # upgrade: edited conffile, state and history kept, the engine not restarted
    c.write("/etc/llm-supervisor/supervisor.toml",
            c.read("/etc/llm-supervisor/supervisor.toml") + "# edited by the operator\n")
    engine_pid = main_pid(c, "llm-sim.service")
    daemon_pid = main_pid(c, "llm-supervisor.service")
    history = _events(c)
    apt(c, "install", c.copy_in(debs["new"]))
    assert c.run(["dpkg-query", "-W", "-f=${Version}", "llm-supervisor"]).stdout \
        == debs["new"].name.split("_")[1]
    assert c.read("/etc/llm-supervisor/supervisor.toml").endswith("# edited by the operator\n")
    assert c.run(["systemctl", "is-active", "llm-supervisor"]).stdout.strip() == "active"
    assert main_pid(c, "llm-supervisor.service") != daemon_pid  # the new code runs
    # across the rename of the import package: the old one gone, byte-code and all
    shared = "/opt/llm-supervisor/lib/shared"
    assert c.run(["test", "-e", f"{shared}/supervisor"], check=False).returncode == 1
    assert c.run(["test", "-f", f"{shared}/llm_supervisor/daemon.py"]).returncode == 0
    wait_engine(c, "sim", state="healthy", timeout=60)
    assert main_pid(c, "llm-sim.service") == engine_pid  # adopted, not restarted
    after = _events(c)
    assert [e["seq"] for e in after[:len(history)]] == [e["seq"] for e in history]
    assert c.run(["test", "-s", "/var/lib/llm-supervisor/state.json"]).returncode == 0

    # a unit that is not ours, named like ours: purge must leave it alone
    c.write("/etc/systemd/system/llm-foreign.service",
            "[Service]\nExecStart=/bin/sleep infinity\n")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", "llm-foreign.service"])

    # remove: the daemon stops, the engine keeps serving, the message says how to stop it
    removed = apt(c, "remove", "llm-supervisor")
    assert "llm-sim.service" in removed.stdout and "systemctl stop" in removed.stdout
    assert c.run(["systemctl", "is-active", "llm-supervisor"], check=False).stdout.strip() \
        in ("inactive", "unknown")
    assert c.run(["systemctl", "is-active", "llm-sim.service"]).stdout.strip() == "active"
    assert http_get(port)[0] == 200
    assert c.run(["test", "-e", "/usr/bin/llm-supervisorctl"], check=False).returncode == 1

    # what `adopt` leaves (its engine file, its guard on the adopted unit), beside an
    # operator's own drop-in on that unit: purge takes adopt's, leaves the operator's
    adopted = "/etc/llm-supervisor/conf.d/50-olla.toml"
    guard = "/etc/systemd/system/ollama.service.d/90-llm-supervisor.conf"
    own = "/etc/systemd/system/ollama.service.d/10-mine.conf"
    c.write(adopted, "# Adopted from ollama.service by `llm-supervisorctl adopt` (x).\n")
    c.write(guard, "# Generated by llm-supervisor adopt. x runs this engine now.\n")
    c.write(own, "[Service]\nNice=5\n")

    # purge: our engine units, state and group go; nothing else
    purged = apt(c, "purge", "llm-supervisor")
    for path in (adopted, guard):
        assert c.run(["test", "-e", path], check=False).returncode == 1, path
    assert c.read(own) == "[Service]\nNice=5\n"
    assert c.run(["test", "-f", "/etc/llm-supervisor/conf.d/20-sim.toml"]).returncode == 0
    assert "llm-sim.service" in purged.stdout
    for path in ("/etc/systemd/system/llm-sim.service",
                 "/etc/systemd/system/llm-sim.service.d", "/var/lib/llm-supervisor",
                 "/opt/llm-supervisor", "/etc/llm-supervisor/supervisor.toml"):
        assert c.run(["test", "-e", path], check=False).returncode == 1, path
    assert c.run(["systemctl", "is-active", "llm-sim.service"], check=False).stdout.strip() \
        in ("inactive", "unknown")
    assert c.run(["getent", "group", "llm-supervisor"], check=False).returncode == 2
    assert c.run(["systemctl", "is-active", "llm-foreign.service"]).stdout.strip() == "active"
    assert c.read("/etc/systemd/system/llm-foreign.service").startswith("[Service]")
    assert c.run(["id", "ollama"]).returncode == 0  # the engine's user is not ours


def _events(c) -> list[dict]:
    out = c.run(["llm-supervisorctl", "events", "-n", "0", "--json"]).stdout
    return [json.loads(line) for line in out.splitlines()]


def _no_secret_for_a_user(c) -> None:
    """A member of the socket group reads status, never an engine's environment value."""
    c.run("id -u watcher >/dev/null 2>&1 || useradd --no-create-home -G llm-supervisor watcher")

    def as_user(*argv: str) -> subprocess.CompletedProcess[str]:
        return c.run(["runuser", "-u", "watcher", "--", *argv], check=False)

    assert process_env(c, "llm-sim.service")["HF_TOKEN"] == SECRET  # the engine has it
    shown = as_user("systemctl", "show", "llm-sim.service")
    assert shown.returncode == 0 and "OLLAMA_GPU_DRIVER=" in shown.stdout
    assert SECRET not in shown.stdout
    cat = as_user("systemctl", "cat", "llm-sim.service")
    assert SECRET not in cat.stdout + cat.stderr
    assert as_user("cat", "/etc/systemd/system/llm-sim.service.d/environment.env").returncode != 0
    status = as_user("llm-supervisorctl", "status", "--json")
    assert status.returncode in (0, 3) and SECRET not in status.stdout  # 3: one unhealthy
    for path in ("/v1/status", "/v1/engines/sim", "/v1/tiers", "/v1/events?limit=0"):
        got = as_user("curl", "-s", "--unix-socket", SOCKET, f"http://localhost{path}")
        assert got.returncode == 0 and SECRET not in got.stdout, path
    bundle = as_user("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                     SOCKET, "http://localhost/v1/bundle")
    assert bundle.stdout == "403"
    # root gets the bundle, redacted
    c.run(["llm-supervisorctl", "bundle", "-o", "/root/bundle.tar.zst"])
    raw = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(c.host_path("/root/bundle.tar.zst").read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert not any(SECRET.encode() in tar.extractfile(m).read() for m in tar.getmembers()
                       if m.isfile())
