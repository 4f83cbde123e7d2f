"""This checkout's own virtualenv, for the Python scripts under dev/ (stdlib only).

A script that needs the project's packages calls ``use_venv()`` before it imports them: run
by any Python (``./dev/soak.py``, ``python3 dev/soak.py``) from any directory, it runs
dev/bootstrap (as root: the venv and, for a checkout under /tmp or a home, the copy of the
package the containers can see) and re-executes itself with the checkout's venv; run by that
venv's Python already, it goes on. ``tool()`` adds a tool the venv lacks (py-spy).
``measured_at()`` says what a measurement was taken at: commit, machine, date.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

DEV = Path(__file__).resolve().parent
OPT = Path("/opt/llm-supervisor-dev")
AGAIN = "LLM_SUPERVISOR_DEV_REEXEC"  # set for the script run again in the venv


def venv() -> Path:
    """The checkout's venv, as dev/venv names it (LLM_SUPERVISOR_VENV, else one per path)."""
    done = subprocess.run([str(DEV / "venv")], check=True, capture_output=True, text=True)
    return Path(done.stdout.strip())


def own(name: str) -> Path:
    """A place of this checkout's own under /opt/llm-supervisor-dev (which the containers
    see), named as dev/venv names its venv: ``<name>-<checkout's basename>-<hash of its
    path>``, so two clones measuring at once never overwrite each other's."""
    here = str(DEV.parent)
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", DEV.parent.name)
    return OPT / f"{name}-{base}-{hashlib.sha256(here.encode()).hexdigest()[:8]}"


def use_venv() -> None:
    """Go on in this checkout's venv: bootstrapped, then the running script again in it."""
    target = venv()
    if Path(sys.prefix).resolve() == target.resolve():
        return
    if os.environ.get(AGAIN) == str(target):  # exec'd once already: that python is no venv
        sys.exit(f"{sys.argv[0]}: {target}/bin/python does not run in {target}")
    python = target / "bin/python"
    if os.geteuid() == 0:
        # its chatter on stderr: a script's stdout is its report
        done = subprocess.run([str(DEV / "bootstrap"), "--no-llama-server"],
                              stdin=subprocess.DEVNULL, stdout=sys.stderr)
        if done.returncode != 0:
            sys.exit(f"{sys.argv[0]}: dev/bootstrap failed (exit {done.returncode})")
    elif not python.exists():
        sys.exit(f"{sys.argv[0]}: no virtualenv at {target}: run dev/bootstrap as root")
    os.environ[AGAIN] = str(target)
    os.execv(python, [str(python), *sys.argv])


def tool(name: str) -> Path:
    """A console script of the venv this runs in, pip-installed first when missing."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        print(f"{sys.argv[0]}: installing {name} into {Path(sys.executable).parent.parent}",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", name], check=True,
                       stdin=subprocess.DEVNULL, stdout=sys.stderr)
    return path


def provenance() -> dict[str, str]:
    """What a measurement was taken at, for the document it goes into: the commit (and
    whether the tree had changes beside it), the machine, and the date (UTC)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(DEV.parent), *args], capture_output=True,
                              text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD") or "no git commit"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " with uncommitted changes"
    return {"commit": commit, "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def machine() -> str:
    """This machine as a reader compares it with theirs: CPU, cores, memory, kernel."""
    def first(path: str, key: str) -> str:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return ""
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "")
    cpu = first("/proc/cpuinfo", "model name") or platform.machine()
    kib = first("/proc/meminfo", "MemTotal").split()
    memory = f", {int(kib[0]) / 2**20:.0f} GiB" if kib and kib[0].isdigit() else ""
    return f"{cpu}, {os.cpu_count()} cores{memory}, Linux {platform.release()}"


def measured_at(p: dict[str, str] | None = None) -> str:
    """``provenance()`` as one phrase: 'at <commit>, on <machine>, <date>'."""
    p = p or provenance()
    return f"at {p['commit']}, on {p['machine']}, {p['date']}"
