"""``models import``: a bundle's model installed into the models directory — as root, on a
tree the engine user owns.

Every path is opened beneath a descriptor of the models root, never through a symlink
(``beneath``). Import is all or nothing:

1. The bundle is streamed into a staging directory inside ``blobs/`` (root's, 0700; the same
   filesystem as the blobs' destination, whatever is mounted where) and checked whole
   (``format``).
2. Each blob is renamed into ``blobs/`` (an intact one already there, owned and moded right,
   is kept; any other is replaced by the verified copy), the directory fsynced, and last the
   manifest goes in by one atomic rename. That rename is the import: before it the previous
   version is whole on disk, after it the new one.
3. A failure before that rename removes the blobs this import added, except any that a
   manifest on disk names; a failure after it (the last fsync, a signal) undoes nothing.
   What is on disk is read back, not assumed, and the result says it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from llm_supervisor.errors import BundleError
from llm_supervisor.tools.models import beneath
from llm_supervisor.tools.models.beneath import Dir, Owner
from llm_supervisor.tools.models.format import (
    MAX_JSON,
    STAGING_PREFIX,
    Progress,
    Received,
    hash_fd,
    manifest_blobs,
    manifest_dir,
    quiet,
    receive,
    sniff,
)
from llm_supervisor.tools.models.signals import Interrupted, Signals


@dataclass
class NotImported(Exception):
    """An import that failed before its manifest went in: why, and what is on disk."""

    cause: BaseException
    state: str



@dataclass
class Imported:
    """What an import installed. ``trouble`` is what went wrong after the manifest went in
    (the model is installed all the same)."""

    name: str
    models_dir: str
    replaced: str | None = None             # the manifest digest of the version replaced
    repaired: list[str] = field(default_factory=list)  # blobs replaced by the verified copy
    trouble: BaseException | None = None



class Install:
    """One import and its undo journal: the directories it made (``made``), the blobs it
    added (``added``), its manifest's temporary file (``temp``) — so that a failure before
    its manifest went in takes exactly that away, and nothing else."""

    def __init__(self, root: Dir, blob_dir: Dir, stage: Dir, owner: Owner | None,
                 made: list[tuple[Dir, str]]) -> None:
        self.root, self.blob_dir, self.stage, self.owner = root, blob_dir, stage, owner
        self.made = made
        self.added: list[str] = []
        self.folder: Dir | None = None
        self.tag = self.temp = self.name = ""
        self.manifest = b""
        self.previous: str | None = None
        self.repaired: list[str] = []

    def commit(self, received: Received) -> Imported:
        self.name = received.name
        self.folder = manifest_dir(self.root, received.parts, self.owner, self.made)
        assert self.folder is not None  # made
        self.tag = received.parts[3]
        self.previous = self._previous()
        names_ = [f"sha256-{h}" for h in received.blobs]
        keep = {name for name in names_ if self._intact(name)}
        for hex_ in received.blobs:
            name = f"sha256-{hex_}"
            if name in keep:
                continue
            if self.blob_dir.lstat(name) is None:
                self.added.append(name)
            else:
                self.repaired.append(name)
            self.stage.rename(hex_, self.blob_dir, name)
        self.blob_dir.sync()
        self._sweep(self.folder)
        self.temp = f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        fd = self.folder.create(self.temp)
        try:
            beneath.write_all(fd, received.manifest, self.folder.path)
            beneath.sync_file(fd, self.folder.path)
            beneath.give(fd, self.owner, 0o644, self.folder.path)
        finally:
            os.close(fd)
        self.manifest = received.manifest
        self.folder.rename(self.temp, self.folder, self.tag)  # the import, in one step
        try:
            self.folder.sync()
        except BundleError as exc:  # installed all the same: said, not undone
            return self.result(trouble=BundleError(
                f"{exc} (the directory was not fsynced: a power cut now could lose the new"
                " manifest)"))
        return self.result()

    def result(self, trouble: BaseException | None = None) -> Imported:
        new = hashlib.sha256(self.manifest).hexdigest()
        replaced = self.previous if self.previous not in (None, new) else None
        return Imported(self.name, self.root.path, replaced, list(self.repaired), trouble)

    def _previous(self) -> str | None:
        """The digest of the version this replaces; a symlink or a directory where the
        manifest goes is refused before anything moves."""
        assert self.folder is not None
        st = self.folder.lstat(self.tag)
        if st is None:
            return None
        fd, _ = self.folder.open(self.tag)  # refuses what is not a regular file
        try:
            return hash_fd(fd)
        finally:
            os.close(fd)

    def _intact(self, name: str) -> bool:
        """A blob already there is kept only if it is a regular file of its own (no other
        links), owned and moded as an import leaves it, and hashes to its name; anything
        else (corrupt, root's, 0600) is replaced by the verified copy. A symlink, a
        directory or a FIFO there is refused."""
        st = self.blob_dir.lstat(name)
        if st is None:
            return False
        fd, st = self.blob_dir.open(name)
        try:
            owner = self.owner or Owner(st.st_uid, st.st_gid)
            return st.st_nlink == 1 and (st.st_uid, st.st_gid) == (owner.uid, owner.gid) \
                and stat.S_IMODE(st.st_mode) == 0o644 \
                and hash_fd(fd) == name.removeprefix("sha256-")
        finally:
            os.close(fd)

    def _sweep(self, folder: Dir) -> None:
        """A manifest's temporary file left by a killed import (SIGKILL between its create
        and its rename): Ollama would read it as a tag."""
        for name in folder.names():
            if name.startswith(STAGING_PREFIX) and not _alive(name):
                folder.unlink(name)

    def installed(self) -> bool:
        """Is this import's manifest what is on disk now? (Read back, not assumed: a signal
        can land between the rename and the next line.)"""
        if self.folder is None or not self.manifest:
            return False
        try:
            return self.folder.read(self.tag, MAX_JSON) == self.manifest
        except BundleError:
            return False

    def undo(self) -> str:
        """Take back what this import added; returns what is on disk afterwards."""
        if self.folder is not None and self.temp:
            with contextlib.suppress(BundleError):
                self.folder.unlink(self.temp)
        kept: list[str] = []
        if self.added:
            try:
                named = _named_blobs(self.root)
            except BundleError:
                named = None  # the manifests could not be read: keep every blob
            for name in self.added:
                if named is None or name in named:
                    kept.append(name)
                else:
                    with contextlib.suppress(BundleError):
                        self.blob_dir.unlink(name)
        for parent, name in reversed(self.made):
            parent.rmdir(name)
        where = self.root.path
        if kept:
            return (f"{where} is as it was but for {len(kept)} new blob(s) in blobs/ that"
                    " no manifest there names (Ollama removes such blobs when it starts)")
        return f"{where} is as it was"



def _named_blobs(root: Dir) -> set[str]:
    """Every blob a manifest on disk names (``sha256-<hex>``); unreadable JSON names none
    (Ollama skips it too), an unreadable directory raises."""
    named: set[str] = set()

    def walk(folder: Dir, depth: int) -> None:
        for name in folder.names():
            st = folder.lstat(name)
            if st is None or stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode) and depth < 5:
                with folder.subdir(name) as sub:
                    walk(sub, depth + 1)
            elif stat.S_ISREG(st.st_mode):
                with contextlib.suppress(BundleError):
                    named.update(f"sha256-{h}" for h in
                                 manifest_blobs(folder.read(name, MAX_JSON), name))

    if root.lstat("manifests") is not None:
        with root.subdir("manifests") as manifests:
            walk(manifests, 0)
    return named


def _alive(name: str) -> bool:
    pid = name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
    return pid.isdigit() and psutil.pid_exists(int(pid))


def remove_stale_staging(folder: Dir) -> list[str]:
    """Staging directories of imports whose process is gone (killed with SIGKILL, a power
    cut): partial data nobody will finish. Those of a live import are left alone."""
    removed = []
    for name in folder.names():
        if name.startswith(STAGING_PREFIX) and not _alive(name):
            folder.remove_tree(name)
            removed.append(name)
    return removed


class Stage:
    """The staging directory inside ``blobs/`` (root's, 0700: nobody else reaches what is
    in it), emptied through its descriptor when the import ends. If the engine user moved it
    away meanwhile, what now has its name is not ours and stays; ours is emptied wherever it
    went."""

    def __init__(self, blob_dir: Dir) -> None:
        self.blob_dir = blob_dir
        self.name = f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.made = False
        self.dir = Dir(-1, blob_dir.path, shown=blob_dir.path)

    def make(self) -> Dir:
        self.made = True  # first: a signal right after the mkdir must not lose it
        try:
            os.mkdir(self.name, 0o700, dir_fd=self.blob_dir.fd)
        except OSError as exc:
            self.made = False
            raise beneath.failed(exc, self.blob_dir.path) from None
        self.dir = self.blob_dir.subdir(self.name)
        self.dir.shown = self.blob_dir.path  # errors name blobs/, not a directory about to go
        return self.dir

    def remove(self) -> str | None:
        """Empties and removes it; what could not be removed, said, or None."""
        try:
            if self.dir.fd < 0:  # made, never opened (a signal in between): still empty
                if self.made:
                    self.blob_dir.rmdir(self.name)
                return None
            ours = os.fstat(self.dir.fd)
            for staged in self.dir.names():
                self.dir.unlink(staged)
            there = self.blob_dir.lstat(self.name)
            if there is not None and (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino):
                os.rmdir(self.name, dir_fd=self.blob_dir.fd)
            return None
        except (BundleError, OSError) as exc:
            return (f"the staging directory {self.blob_dir.path}/{self.name} is left"
                    f" ({cause_text(exc)}); the next import removes it")
        finally:
            self.dir.close()


def cause_text(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)



def import_stream(raw: IO[bytes], size: int | None, label: str, models_dir: Path | str,
                  owner: Owner | None = None, progress: Progress = quiet,
                  signals: Signals | None = None) -> Imported:
    """Verify the bundle read from ``raw`` whole, then install its model into
    ``models_dir``. Raises NotImported (why, and what is on disk) if the model did not go in;
    trouble after it went in is in the result."""
    try:
        head = sniff(raw, label)  # before the models directory is touched
    except BundleError as exc:
        raise NotImported(exc, f"{models_dir} is as it was") from None
    owner = owner or Owner(os.geteuid(), os.getegid())
    signals = signals or Signals()
    made: list[tuple[Dir, str]] = []
    with contextlib.ExitStack() as stack:
        stack.callback(_close_all, made)
        try:
            root = stack.enter_context(beneath.open_root(models_dir, owner, made))
            blob_dir = stack.enter_context(root.subdir("blobs", owner, made))
        except BaseException as exc:
            with signals.held():
                for parent, name in reversed(made):
                    parent.rmdir(name)
            raise NotImported(exc, f"{models_dir} is as it was") from None
        stage = Stage(blob_dir)
        install = Install(root, blob_dir, stage.dir, owner, made)
        try:
            remove_stale_staging(blob_dir)
            remove_stale_staging(root)  # where imports before this version staged
            install.stage = stage.make()
            received = receive(raw, head, size, label, blob_dir, install.stage, owner, progress)
            imported = install.commit(received)
        except BaseException as exc:
            with signals.held():
                left = stage.remove()
                if install.installed():
                    return install.result(trouble=exc)
                state = install.undo()
            raise NotImported(exc, f"{state}; {left}" if left else state) from None
        finally:
            if install.folder is not None:
                install.folder.close()
        try:
            with signals.held(drop=False):
                left = stage.remove()
        except (Interrupted, KeyboardInterrupt) as exc:  # it came while the stage went
            imported.trouble = imported.trouble or exc
        else:
            if left and imported.trouble is None:
                imported.trouble = BundleError(left)
        return imported
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions


def _close_all(made: list[tuple[Dir, str]]) -> None:
    for parent, _ in made:
        parent.close()


def import_file(bundle: Path | str, models_dir: Path | str, owner: Owner | None = None,
                progress: Progress = quiet, signals: Signals | None = None) -> Imported:
    """``import_stream`` of a file (or of stdin for ``-``)."""
    if os.fspath(bundle) == "-":
        if sys.stdin.isatty():
            raise BundleError("stdin is a terminal: pipe a bundle in (… | llm-supervisorctl"
                              " models import -)")
        return import_stream(sys.stdin.buffer, None, "stdin", models_dir, owner, progress,
                             signals)
    try:
        raw = open(bundle, "rb")  # noqa: SIM115 (closed below); a FIFO (<(ssh …)) works too
    except OSError as exc:
        raise BundleError(f"{bundle}: {exc.strerror}") from None
    with raw:
        st = os.fstat(raw.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise BundleError(f"{bundle}: a directory, not a bundle")
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        return import_stream(raw, size, os.fspath(bundle), models_dir, owner, progress,
                             signals)
