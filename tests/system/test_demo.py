"""The first command a newcomer runs, from a fresh clone wherever it lies: `/tmp` (the test
containers and the units' PrivateTmp= cannot see it), root's home (ProtectHome=), a path with
a space. And where it truly cannot run (not root), one clear line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def clone(where: str) -> Path:
    shutil.rmtree(where, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), where], check=True)
    return Path(where)


@pytest.mark.parametrize("where", ["/tmp/llm-supervisor-demo", "/root/llm supervisor demo"])
def test_the_demo_runs_from_a_fresh_clone_wherever_it_lies(where: str) -> None:
    checkout = clone(where)
    try:
        done = subprocess.run(["./dev/demo"], cwd=checkout, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:]
        assert "survived: serving on Vulkan" in done.stdout, output[-4000:]
        assert "Traceback" not in output
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


def test_where_the_demo_cannot_run_it_says_so_in_one_line() -> None:
    checkout = clone("/tmp/llm-supervisor-demo-nobody")
    try:
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "./dev/demo"], cwd=checkout, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert lines == ["dev/bootstrap: run as root (it installs apt packages and boots"
                         " systemd containers)"], done.stderr
        assert "Traceback" not in done.stdout + done.stderr
    finally:
        shutil.rmtree(checkout, ignore_errors=True)
