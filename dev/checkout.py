"""This checkout's own virtualenv, for the Python scripts under dev/ (stdlib only).

A script that needs the project's packages calls ``use_venv()`` before it imports them: run
by any Python (``./dev/soak.py``, ``python3 dev/soak.py``) from any directory, it runs
dev/bootstrap (as root: the venv and, for a checkout under /tmp or a home, the copy of the
package the containers can see) and re-executes itself with the checkout's venv; run by that
venv's Python already, it goes on. ``tool()`` adds a tool the venv lacks (py-spy).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEV = Path(__file__).resolve().parent
AGAIN = "LLM_SUPERVISOR_DEV_REEXEC"  # set for the script run again in the venv


def venv() -> Path:
    """The checkout's venv, as dev/venv names it (LLM_SUPERVISOR_VENV, else one per path)."""
    done = subprocess.run([str(DEV / "venv")], check=True, capture_output=True, text=True)
    return Path(done.stdout.strip())


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
