"""Smoke tests of the test bed itself: a real systemd boots in the container, runs units,
keeps a journal, verifies units, and leaves nothing behind on the host."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from nspawn import CommandError, Container

import llm_supervisor

VENV_PYTHON = sys.executable  # this checkout's venv (dev/venv), seen through the overlay
HELLO_UNIT = """\
[Unit]
Description=llm-supervisor test bed smoke unit

[Service]
Environment=HELLO_GREETING=from-environment
ExecStart=/bin/sh -c 'echo hello-from-unit "$HELLO_GREETING"; exec sleep 300'
"""


def show(c: Container, unit: str, *props: str) -> dict[str, str]:
    out = c.run(["systemctl", "show", "-p", ",".join(props), unit]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_boots_a_real_systemd(container: Container) -> None:
    state = container.run(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in ("running", "degraded"), container.run("systemctl --failed", check=False)
    assert container.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert container.run("readlink /proc/1/exe").stdout.strip().endswith("/systemd")
    assert "postgresql.service" in container.disabled_units
    assert container.boot_seconds is not None and container.boot_seconds < 30


def test_written_unit_runs_with_its_environment_and_journal(container: Container) -> None:
    container.write("/etc/systemd/system/hello-test.service", HELLO_UNIT)
    try:
        container.run("systemctl daemon-reload && systemctl start hello-test.service")
        props = container.wait_for(
            lambda: (p := show(container, "hello-test", "ActiveState", "MainPID", "Environment"))
            ["ActiveState"] == "active" and p, timeout=10, what="hello-test active")
        assert int(props["MainPID"]) > 1
        assert props["Environment"] == "HELLO_GREETING=from-environment"
        container.wait_for(lambda: "hello-from-unit from-environment"
                           in container.journal("hello-test.service"),
                           timeout=10, what="hello-test's line in the journal")
    finally:
        container.run("systemctl stop hello-test.service", check=False)
        container.run("rm -f /etc/systemd/system/hello-test.service && systemctl daemon-reload")


def test_transient_unit_and_journal_cursor(container: Container) -> None:
    cursor = container.journal_cursor()
    container.run(["systemd-run", "--unit=hello-transient", "-p", "Environment=WHO=transient",
                   "/bin/sh", "-c", 'echo "hello $WHO"'])
    container.wait_for(lambda: "hello transient" in container.journal(since_cursor=cursor),
                       timeout=10, what="the transient unit's output")
    assert "hello transient" in container.journal("hello-transient.service")


def test_systemd_analyze_verify_works_inside(container: Container) -> None:
    good, bad = "/etc/systemd/system/verify-good.service", "/etc/systemd/system/verify-bad.service"
    container.write(good, "[Service]\nExecStart=/bin/true\n")
    container.write(bad, "[Service]\nExecStart=/nonexistent/engine --serve\n")
    try:
        assert container.run(["systemd-analyze", "verify", good]).returncode == 0
        r = container.run(["systemd-analyze", "verify", bad], check=False)
        assert r.returncode != 0 and "/nonexistent/engine" in r.stderr
    finally:
        container.run(["rm", "-f", good, bad])


def test_overlay_keeps_writes_off_the_host(container: Container) -> None:
    name = f"/etc/llmsup-overlay-probe-{uuid.uuid4().hex}"
    container.write(name, "inside\n", mode=0o600)
    container.run(f"echo from-a-command > {name}.2")
    try:
        assert container.read(name) == "inside\n"
        assert container.run(["stat", "-c", "%a", name]).stdout.strip() == "600"
        assert container.read(f"{name}.2") == "from-a-command\n"
        assert container.host_path(name).is_relative_to(container.root)
        assert not Path(name).exists() and not Path(f"{name}.2").exists()
    finally:
        container.run(["rm", "-f", name, f"{name}.2"])


def test_absolute_symlinks_resolve_inside_the_container(container: Container) -> None:
    container.run("ln -sfn /etc/hostname /etc/llmsup-link-probe")
    try:
        assert container.host_path("/etc/llmsup-link-probe") == container.root / "etc/hostname"
        with pytest.raises(ValueError):
            container.host_path("/tmp/anything")  # nspawn's own tmpfs, not the overlay
        container.write("/tmp/llmsup-probe", "via a command\n")
        assert container.read("/tmp/llmsup-probe") == "via a command\n"
    finally:
        container.run("rm -f /etc/llmsup-link-probe /tmp/llmsup-probe")


def test_project_venv_runs_inside(container: Container) -> None:
    r = container.run([VENV_PYTHON, "-c",
                       "import llm_supervisor; print(llm_supervisor.__version__)"])
    assert r.stdout.strip() == llm_supervisor.__version__


def test_system_users_and_groups(container: Container) -> None:
    container.ensure_user("llmsup-engine", groups=("video",))
    container.ensure_user("llmsup-engine", groups=("video",))  # idempotent
    ident = container.run("id llmsup-engine").stdout
    assert "(llmsup-engine)" in ident and "(video)" in ident
    container.add_group("llmsup-extra")
    assert container.run("getent group llmsup-extra").returncode == 0
    assert container.run("getent passwd llmsup-engine").stdout.strip().endswith("/nologin")


def test_failed_command_reports_its_output(container: Container) -> None:
    with pytest.raises(CommandError) as info:
        container.run("echo to-stdout; echo to-stderr >&2; exit 3")
    assert info.value.returncode == 3
    assert "to-stdout" in str(info.value) and "to-stderr" in str(info.value)
    assert container.run("exit 4", check=False).returncode == 4


def test_wait_for_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the answer.*last value: 0"):
        Container("unbooted").wait_for(lambda: 0, timeout=0.1, interval=0.02, what="the answer")


def test_concurrent_containers_and_shutdown_leave_nothing(
        container: Container, fresh_container: Container) -> None:
    # Same unit name in two live containers: each systemd has a cgroup tree of its own.
    for c in (container, fresh_container):
        c.run("systemd-run --unit=llmsup-twin sleep 300")
    for c in (container, fresh_container):
        assert show(c, "llmsup-twin", "ActiveState")["ActiveState"] == "active"
    container.run("systemctl stop llmsup-twin")
    assert show(fresh_container, "llmsup-twin", "ActiveState")["ActiveState"] == "active"

    state_dir, nspawn = fresh_container.dir, fresh_container._proc
    fresh_container.shutdown()
    fresh_container.shutdown()  # idempotent
    assert nspawn is not None and nspawn.poll() is not None
    assert str(state_dir) not in Path("/proc/mounts").read_text()
    assert not state_dir.exists()
    with pytest.raises(RuntimeError, match="not running"):
        fresh_container.run("true")
