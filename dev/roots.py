"""Root filesystems of the other releases the package is tested on, made with debootstrap from
each release's own archive and cached under /opt (made once per machine, about a minute each).

    root = release_root("trixie")         # /opt/llm-supervisor-dev/roots/trixie-<key>
    with Container("x", lower=root) as c: ...

A root holds what a host that installs the .deb has (a booted systemd, python3) and what the
tests run there, nothing of the build: the package is built once, on this host. Ubuntu's
archive is checked against Ubuntu's keys as Debian packages them (``ubuntu-keyring``, fetched
with apt's own checks from Debian's archive).

The host's CA bundle and pip settings are carried in when a container is made from one
(``carry_host_settings``): a host behind a TLS-inspecting proxy reaches the archives there as
it does at home.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOTS = Path("/opt/llm-supervisor-dev/roots")
DEBIAN = "http://deb.debian.org/debian"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
UBUNTU = "http://archive.ubuntu.com/ubuntu"
# a booted systemd and python3 (the package's Depends), and what the tests run inside
INCLUDE = "systemd,systemd-sysv,dbus,python3,ca-certificates,curl,procps,iproute2,zstd,passwd"
HOST_SETTINGS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf",
                 "/root/.config/pip/pip.conf")


@dataclass(frozen=True)
class Suite:
    mirror: str
    components: str
    script: str | None = None  # debootstrap's script, when this debootstrap has no file of
    #                            the suite's own name (Debian 12's knows no Ubuntu after 23.04)


SUITES = {
    "trixie": Suite(DEBIAN, "main"),
    "noble": Suite(UBUNTU, "main,universe", script="gutsy"),  # lintian is in universe
}


def release_root(suite: str, *, roots: Path = ROOTS) -> Path:
    """The cached root of ``suite`` (made on first use; a failed attempt leaves nothing).
    Its name carries a hash of what it is made of, so a changed list makes a new one."""
    spec = SUITES[suite]
    key = hashlib.sha256(f"{spec}{INCLUDE}".encode()).hexdigest()[:8]
    root = roots / f"{suite}-{key}"
    if (root / "usr/bin/python3").exists():
        return root
    roots.mkdir(parents=True, exist_ok=True)
    for stale in [roots / suite, *roots.glob(f"{suite}-*")]:  # what an older list made
        shutil.rmtree(stale, ignore_errors=True)
    partial = roots / f"{suite}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    keyring = DEBIAN_KEYRING if spec.mirror == DEBIAN else ubuntu_keyring(roots)
    argv = ["debootstrap", "--variant=minbase", f"--include={INCLUDE}",
            f"--components={spec.components}", f"--keyring={keyring}", suite, str(partial),
            spec.mirror]
    if spec.script:
        argv.append(f"/usr/share/debootstrap/scripts/{spec.script}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"debootstrap {suite} failed:\n{done.stdout[-2000:]}"
                           f"\n{done.stderr[-2000:]}")
    partial.rename(root)
    return root


def ubuntu_keyring(roots: Path = ROOTS) -> Path:
    """Ubuntu's archive keys from Debian's own ``ubuntu-keyring`` package (Debian 13), which
    apt fetches and checks against this host's Debian keys."""
    target = roots / "ubuntu-archive-keyring.gpg"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sources.list").write_text(
            f"deb [signed-by={DEBIAN_KEYRING}] {DEBIAN} trixie main\n")
        for part in ("lists/partial", "cache/archives/partial"):
            (work / part).mkdir(parents=True)
        options = ["-qq", "-o", f"Dir::Etc::SourceList={work / 'sources.list'}",
                   "-o", "Dir::Etc::SourceParts=/nonexistent",
                   "-o", f"Dir::State::Lists={work / 'lists'}",
                   "-o", f"Dir::Cache={work / 'cache'}"]
        for command in (["update"], ["download", "ubuntu-keyring"]):
            done = subprocess.run(["apt-get", *options, *command], cwd=work, capture_output=True,
                                  text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"apt-get {command[0]} (Debian 13's ubuntu-keyring) failed:"
                                   f"\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        deb = next(work.glob("ubuntu-keyring_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
        roots.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "x/usr/share/keyrings/ubuntu-archive-keyring.gpg", target)
    return target


def carry_host_settings(c: Any) -> None:
    """The host's CA bundle and pip configuration into a container made from another root."""
    for path in HOST_SETTINGS:
        if Path(path).exists():
            target = c.root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
