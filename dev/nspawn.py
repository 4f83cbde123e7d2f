"""A throwaway systemd container for system tests and the demo (stdlib only, needs root).

The host's ``/`` becomes the lower layer of an overlay whose upper layer lives on a private
tmpfs; ``systemd-nspawn -b`` boots the host's own systemd on it, and commands run inside
through ``nsenter`` into its PID 1. Nothing written inside reaches the host's disk, the
container shares the host's network namespace (loopback ports are shared) unless it is given
a namespace of its own (``network=``, a path such as ``/run/netns/x``), and nspawn
mounts fresh /tmp, /run, /dev, /proc and /sys inside, so those are not reachable through
the overlay (``write``/``read`` fall back to running a command inside for them).

    with Container("demo") as c:
        c.run("systemctl start foo.service")
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["CommandError", "Container", "ContainerError", "DEFAULT_BASE"]

log = logging.getLogger("nspawn")

DEFAULT_BASE = Path("/var/tmp/llm-supervisor-nspawn")
PREFIX = "llmsup"
INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Mounted by nspawn itself inside the container: not reachable through the overlay.
INNER_MOUNTS = ("/tmp", "/run", "/dev", "/proc", "/sys")
# Host units enabled in these .wants dirs are disabled in the overlay (targets are kept):
# the host's postgresql, apt/man-db timers, ... would fight over ports or do slow work.
DISABLE_WANTS = ("multi-user", "graphical", "default", "timers", "sockets", "getty")

_counter = itertools.count(1)
_live: set[Container] = set()
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ContainerError(RuntimeError):
    """The container could not be booted, reached, or cleaned up."""


class CommandError(ContainerError):
    def __init__(self, argv: list[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.argv, self.returncode = argv, proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr
        super().__init__(
            f"command {argv!r} failed with exit status {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout.rstrip()}\n--- stderr ---\n{proc.stderr.rstrip()}"
        )


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_init_child(parent: int) -> int | None:
    """The host pid of the child of ``parent`` that is PID 1 in its own pid namespace."""
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
            if int(fields["PPid"]) == parent and fields["NSpid"].split()[-1] == "1":
                return int(status.parent.name)
    return None


def _host_runs_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def _own_cgroups() -> list[Path]:
    """Our cgroup in the hierarchies nspawn and systemd manage (name=systemd v1, and v2)."""
    mounts = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        _, where, fstype, opts, *_ = line.split()
        if fstype == "cgroup2":
            mounts[""] = where
        elif fstype == "cgroup" and "name=systemd" in opts.split(","):
            mounts["name=systemd"] = where
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in mounts:
            found.append(Path(mounts[controllers]) / path.lstrip("/"))
    return found


def _remove_cgroup_tree(root: Path) -> None:
    if not root.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _unmount(path: Path) -> None:
    if _sh("mountpoint", "-q", str(path)).returncode != 0:
        return
    if _sh("umount", str(path)).returncode != 0:
        r = _sh("umount", "-l", str(path))
        if r.returncode != 0:
            raise ContainerError(f"cannot unmount {path}: {r.stderr.strip()}")


def _cleanup_dir(state_dir: Path, machine: str) -> None:
    """Unmount, remove the cgroups and the state of one (stopped) container."""
    state = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((state_dir / "state.json").read_text())
    _unmount(state_dir / "fs" / "merged")
    _unmount(state_dir / "fs")
    for cg in state.get("cgroups", []):
        _remove_cgroup_tree(Path(cg))
    shutil.rmtree(state_dir, ignore_errors=True)
    shutil.rmtree(f"/run/systemd/nspawn/propagate/{machine}", ignore_errors=True)


def cleanup_stale(base: Path = DEFAULT_BASE) -> list[str]:
    """Tear down containers left by test sessions that died without cleaning up."""
    removed = []
    for d in sorted(base.glob(f"{PREFIX}-*")) if base.is_dir() else []:
        try:
            state = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            owner = d.name.split("-")[-2]
            state = {"owner": int(owner) if owner.isdigit() else 0}
        if _alive(state.get("owner")):
            continue
        for key in ("init", "nspawn"):  # killing a pid namespace's init kills all of it
            pid = state.get(key)
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() in ("systemd", "systemd-nspawn"):
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(0.2)
        _cleanup_dir(d, d.name)
        removed.append(d.name)
    if removed:
        log.warning("cleaned up stale containers: %s", ", ".join(removed))
    return removed


@atexit.register
def _shutdown_all() -> None:
    for c in list(_live):
        c.shutdown()


class Container:
    """One booted systemd; ``with Container("x") as c`` boots it and always tears it down."""

    def __init__(self, name: str, *, workdir: Path | None = None,
                 lower: Path = Path("/"), network: Path | None = None) -> None:
        slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:32] or "c"
        self.machine = f"{PREFIX}-{slug}-{os.getpid()}-{next(_counter)}"
        self.base = Path(workdir) if workdir else DEFAULT_BASE
        self.dir = self.base / self.machine
        self.root = self.dir / "fs" / "merged"
        self.lower = lower  # the image booted: the host's / by default, or another root
        self.network = network  # a network namespace of its own (its path), else the host's
        self.log_path = self.dir / "nspawn.log"
        self.pid: int | None = None  # host pid of the container's PID 1
        self.boot_seconds: float | None = None
        self.failed_units: list[str] = []
        self.disabled_units: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._cgroups: list[Path] = []

    def __repr__(self) -> str:
        return f"<Container {self.machine} pid={self.pid}>"

    def __enter__(self) -> Container:
        self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- lifecycle ---------------------------------------------------------------------------

    def boot(self, timeout: float = 60) -> None:
        if os.geteuid() != 0:
            raise ContainerError("booting a systemd container needs root (run the tests as root)")
        for tool in ("systemd-nspawn", "nsenter", "mount", "umount"):
            if not shutil.which(tool):
                raise ContainerError(f"{tool} not found: run dev/bootstrap "
                                     "(apt-get install systemd-container util-linux)")
        if self._proc is not None:
            raise ContainerError(f"{self.machine} was already booted")
        started = time.monotonic()
        self.failed_units, self.disabled_units = [], []
        _live.add(self)
        try:
            cleanup_stale(self.base)
            self._mount()
            self._disable_host_units()
            self._start_nspawn()
            self.pid = self.wait_for(self._find_init, timeout=timeout, what="container PID 1")
            self._save_state()
            left = max(timeout - (time.monotonic() - started), 1.0)
            state = self.wait_for(self._system_state, timeout=left,
                                  what="systemctl is-system-running: running/degraded")
            if state == "degraded":
                self.failed_units = self.run(
                    "systemctl list-units --failed --plain --no-legend | cut -d' ' -f1",
                    check=False).stdout.split()
                log.warning("%s is degraded; failed units: %s", self.machine, self.failed_units)
        except BaseException as e:
            tail = self.log_tail()
            self.shutdown()
            if isinstance(e, Exception):
                raise ContainerError(f"booting {self.machine} failed: {e}\n"
                                     f"--- nspawn log (tail) ---\n{tail}") from e
            raise
        self.boot_seconds = time.monotonic() - started
        log.info("%s booted in %.2fs (pid %s)", self.machine, self.boot_seconds, self.pid)

    def _mount(self) -> None:
        fs = self.dir / "fs"
        fs.mkdir(parents=True)
        self._save_state()
        overlay = f"lowerdir={self.lower},upperdir={fs / 'upper'},workdir={fs / 'work'}"
        for argv in (["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(fs)],
                     ["mkdir", str(fs / "upper"), str(fs / "work"), str(self.root)],
                     ["mount", "-t", "overlay", "overlay", "-o", overlay, str(self.root)]):
            r = _sh(*argv)
            if r.returncode != 0:
                raise ContainerError(f"{shlex.join(argv)}: {r.stderr.strip()}")

    def _disable_host_units(self) -> None:
        for target in DISABLE_WANTS:
            wants = self.root / f"etc/systemd/system/{target}.target.wants"
            for link in sorted(wants.glob("*")) if wants.is_dir() else []:
                if link.is_symlink() and not link.name.endswith(".target"):
                    link.unlink()
                    self.disabled_units.append(link.name)

    def _start_nspawn(self) -> None:
        # CAP_PERFMON, which nspawn drops by default, as a host has it: the Vulkan tier grants
        # it to engines (Ollama reads free VRAM with it)
        argv = ["systemd-nspawn", "-q", "-D", str(self.root), "-b", "--register=no",
                "--link-journal=no", "--console=passive", f"--machine={self.machine}",
                "--capability=CAP_PERFMON"]
        if self.network is not None:
            argv.append(f"--network-namespace-path={self.network}")
        if not _host_runs_systemd():
            # No systemd on the host to make a scope: --keep-unit, in a cgroup of our own
            # (else nspawn makes "payload"/"supervisor" in the caller's cgroup, which
            # concurrent containers would then share, unit cgroups and all).
            argv.insert(4, "--keep-unit")
            for parent in _own_cgroups():
                with contextlib.suppress(OSError):
                    (parent / self.machine).mkdir()
                    self._cgroups.append(parent / self.machine)
            self._save_state()
        enter = ('for cg in "$@"; do echo $$ > "$cg/cgroup.procs" '
                 '|| echo "nspawn.py: could not enter $cg" >&2; done')
        wrapper = ["/bin/sh", "-c", f"{enter}; exec {shlex.join(argv)}", "sh",
                   *map(str, self._cgroups)]
        with open(self.log_path, "wb") as logf:
            self._proc = subprocess.Popen(wrapper, stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self._save_state()

    def _find_init(self) -> int | None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited with status {self._proc.returncode}")
        return _ns_init_child(self._proc.pid)

    def _system_state(self) -> str | None:
        if self._proc is None or self._proc.poll() is not None:
            raise ContainerError("systemd-nspawn exited during boot")
        state = self.run(["systemctl", "is-system-running"], check=False, timeout=10).stdout.strip()
        return state if state in ("running", "degraded") else None

    def _save_state(self) -> None:
        state = {"owner": os.getpid(), "nspawn": self._proc.pid if self._proc else None,
                 "init": self.pid, "cgroups": [str(c) for c in self._cgroups]}
        with contextlib.suppress(OSError):
            (self.dir / "state.json").write_text(json.dumps(state))

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no nspawn log)"
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:]) or "(empty nspawn log)"

    def shutdown(self, timeout: float = 30) -> None:
        """Power off, kill if needed, unmount, remove everything. Idempotent, never raises
        for a container that is already gone."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                if self.pid and _alive(self.pid):
                    with contextlib.suppress(ContainerError, subprocess.TimeoutExpired):
                        self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not power off in %ss, killing it", self.machine, timeout)
                    for pid in (self.pid, proc.pid):
                        if pid:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        finally:
            self.pid = None
            if self.dir.exists():
                _cleanup_dir(self.dir, self.machine)
            for cg in self._cgroups:
                _remove_cgroup_tree(cg)
            self._cgroups = []
            _live.discard(self)

    # -- inside the container ----------------------------------------------------------------

    def run(self, argv: list[str] | str, *, check: bool = True, timeout: float = 60,
            input: str | None = None, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside (a string runs under ``bash -c``), as root, with a clean env."""
        if not self.pid:
            raise ContainerError(f"{self.machine} is not running")
        argv = ["bash", "-c", argv] if isinstance(argv, str) else list(argv)
        full_env = {"PATH": INNER_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb",
                    "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", **(env or {})}
        cmd = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-n", *argv]
        p = subprocess.Popen(cmd, text=True, env=full_env, start_new_session=True,
                             stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except BaseException:  # timeout or ^C: kill nsenter and what it started inside
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
        done = subprocess.CompletedProcess(argv, p.returncode, out, err)
        if check and done.returncode != 0:
            raise CommandError(argv, done)
        return done

    def host_path(self, path: str) -> Path:
        """Where container path ``path`` is on the host (symlinks resolved inside the
        container root, so absolute links never lead to the host's own files)."""
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            raise ValueError(f"not an absolute path: {path}")
        resolved, todo, hops = PurePosixPath("/"), list(pure.parts[1:]), 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                resolved = resolved.parent
                continue
            if part == ".":
                continue
            here = self.root / (resolved / part).relative_to("/")
            if here.is_symlink():
                hops += 1
                if hops > 40:
                    raise ContainerError(f"too many symlinks resolving {path}")
                target = PurePosixPath(os.readlink(here))
                if target.is_absolute():
                    resolved = PurePosixPath("/")
                todo[:0] = target.parts[1:] if target.is_absolute() else target.parts
                continue
            resolved = resolved / part
        if any(resolved == PurePosixPath(m) or PurePosixPath(m) in resolved.parents
               for m in INNER_MOUNTS):
            raise ValueError(f"{path} is under a mount of the container's own (not the overlay)")
        return self.root / resolved.relative_to("/")

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        try:
            target = self.host_path(path)
        except ValueError:
            script = 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"'
            self.run(["bash", "-c", script, "write", path, f"{mode:o}"], input=text)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def copy_in(self, source: Path, directory: str = "/root") -> str:
        """A host file copied into the container (a checkout under /tmp is out of its
        sight): its path inside."""
        target = self.host_path(f"{directory}/{source.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return f"{directory}/{source.name}"

    def read(self, path: str) -> str:
        try:
            return self.host_path(path).read_text()
        except ValueError:
            return self.run(["cat", path]).stdout

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2,
                 what: str = "") -> Any:
        """Poll ``predicate`` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.1f}s waiting for "
                                   f"{what or getattr(predicate, '__name__', predicate)}; "
                                   f"last value: {last!r}")
            time.sleep(interval)

    def journal(self, unit: str | None = None, since_cursor: str | None = None) -> str:
        self.run(["journalctl", "--sync"], check=False)
        argv = ["journalctl", "--no-pager", "-o", "short-iso"]
        argv += ["-u", unit] if unit else []
        argv += [f"--after-cursor={since_cursor}"] if since_cursor else []
        return self.run(argv).stdout

    def journal_cursor(self) -> str:
        """The journal's current cursor, for ``journal(since_cursor=...)``."""
        out = self.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"]).stdout
        return out.rsplit("-- cursor: ", 1)[-1].strip()

    def add_group(self, name: str) -> None:
        self.run(f"getent group {name} >/dev/null || groupadd --system {name}")

    def ensure_user(self, name: str, *, groups: tuple[str, ...] = ()) -> None:
        """A system user with its own group (engines run as one, e.g. ``ollama``)."""
        self.run(f"id -u {name} >/dev/null 2>&1 || useradd --system --user-group "
                 f"--no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {name}")
        for group in groups:
            self.add_group(group)
            self.run(["usermod", "-a", "-G", group, name])
