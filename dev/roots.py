"""Root filesystems of other Debian releases for the system tests, made with debootstrap from
Debian's archive and cached under /opt (made once per machine, about a minute).

    root = debian_root("trixie")          # /opt/llm-supervisor-dev/roots/trixie
    with Container("x", lower=root) as c: ...

The host's CA bundle and pip settings are carried in when a container is made from one
(``carry_host_settings``): a host behind a TLS-inspecting proxy or with a local package index
builds there as it does at home.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOTS = Path("/opt/llm-supervisor-dev/roots")
MIRROR = "http://deb.debian.org/debian"
# a booted systemd, Python with venv (the package's build and its runtime), what build-deb
# and the tests run
INCLUDE = ("systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,curl,procps,"
           "iproute2,dpkg-dev,binutils,zstd,passwd")
HOST_SETTINGS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf",
                 "/root/.config/pip/pip.conf")


def debian_root(suite: str, *, roots: Path = ROOTS) -> Path:
    """The cached root of ``suite`` (made on first use; a failed attempt leaves nothing)."""
    root = roots / suite
    if (root / "usr/bin/python3").exists():
        return root
    partial = roots / f"{suite}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    roots.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", suite,
                           str(partial), MIRROR], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"debootstrap {suite} failed:\n{done.stdout[-2000:]}"
                           f"\n{done.stderr[-2000:]}")
    partial.rename(root)
    return root


def carry_host_settings(c: Any) -> None:
    """The host's CA bundle and pip configuration into a container made from another root."""
    for path in HOST_SETTINGS:
        if Path(path).exists():
            target = c.root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def copy_source(c: Any, repo: Path, to: str = "/src") -> str:
    """What packaging/build-deb needs of the checkout, into the container."""
    target = c.root / to.lstrip("/")
    target.mkdir(parents=True)
    for part in ("pyproject.toml", "README.md", "supervisor", "packaging", "units", "etc"):
        source = repo / part
        if source.is_dir():
            shutil.copytree(source, target / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target / part)
    return to
