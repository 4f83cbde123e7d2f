"""Files opened beneath a directory descriptor, never through a symlink.

``models import`` and ``export`` run as root on a tree the engine user owns: Ollama's models
directory. Whatever that user puts inside it — a symlink where ``blobs/`` or a manifest's
directory should be, a FIFO where a blob should be, a hard link to a file of root's — must not
lead root's writes or reads outside it. So no path under the models root is ever resolved by
the kernel in one go: each directory is opened relative to its parent's descriptor with
``O_NOFOLLOW | O_DIRECTORY``, each file with ``O_NOFOLLOW`` and checked to be a regular file,
and every create, rename, unlink, chown and chmod goes through a descriptor (``openat``,
``renameat``, ``fchown``...). A symlink met anywhere under the root is refused with its path
named. Once a directory is open, renaming or replacing it under us changes nothing: our
descriptor still names the directory we checked.

The path *to* the models root (``/usr/share/ollama/.ollama/models``) is walked the same way
from ``/``; a symlink on it is followed only when root (or the caller) owns both the link and
the directory holding it — an admin's ``/var/lib/ollama -> /data/ollama`` works, the engine
user's ``.ollama -> /etc`` is refused.

Every error names the path it concerns (a directory, for a file that is only staged).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Self

from llm_supervisor.errors import BundleError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO the engine user left where a file should be must not hang
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINKS = 40  # symlinks followed on the way to the root, as the kernel's own limit


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    for test, word in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a regular file"


def failed(exc: OSError, where: str) -> BundleError:
    return BundleError(f"{where}: {exc.strerror or exc}")


class Dir:
    """An open directory: its descriptor, and the path it was reached by (for messages).

    ``shown`` is what errors about its files name: the directory's own path, or for a
    staging directory that disappears with the import, the directory it lives in.
    """

    def __init__(self, fd: int, path: str, shown: str | None = None) -> None:
        self.fd, self.path = fd, path
        self.shown = shown

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def where(self, name: str) -> str:
        return self.shown if self.shown is not None else os.path.join(self.path, name)

    def lstat(self, name: str) -> os.stat_result | None:
        """What is at ``name`` (a symlink is reported as one), or None."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise failed(exc, self.where(name)) from None

    def subdir(self, name: str, make: Owner | None = None,
               made: list[tuple[Dir, str]] | None = None) -> Dir:
        """The directory ``name`` in this one, never through a symlink; created (mode 0755,
        owned by ``make``) when missing and ``make`` is given, and recorded in ``made``."""
        where = os.path.join(self.path, name)
        st = self.lstat(name)
        if st is None:
            if make is None:
                raise BundleError(f"{where}: no such directory")
            if made is not None:  # recorded first: a signal right after the mkdir
                made.append((Dir(os.dup(self.fd), self.path), name))  # must not lose it
            try:
                os.mkdir(name, 0o755, dir_fd=self.fd)
            except OSError as exc:
                if made is not None:
                    made.pop()[0].close()
                raise failed(exc, where) from None
        elif not stat.S_ISDIR(st.st_mode):
            raise _refused(where, st.st_mode)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:  # replaced by a symlink since the lstat: ELOOP, ENOTDIR
            raise failed(exc, where) from None
        opened = Dir(fd, where)
        if st is None and make is not None:
            opened.give(make, 0o755, where)
        return opened

    def open(self, name: str) -> tuple[int, os.stat_result]:
        """A regular file here, open for reading: a symlink, FIFO or device is refused
        before it is opened (opening a device can act on it)."""
        where = os.path.join(self.path, name)
        st = self.lstat(name)
        if st is None:
            raise failed(OSError(errno.ENOENT, "No such file or directory"), where)
        if not stat.S_ISREG(st.st_mode):
            raise _refused(where, st.st_mode)
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=self.fd)
        except OSError as exc:  # replaced by a symlink since the lstat: ELOOP
            raise failed(exc, where) from None
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != \
                (st.st_dev, st.st_ino):
            os.close(fd)
            raise BundleError(f"{where}: replaced while it was opened: refused")
        return fd, opened

    def read(self, name: str, limit: int) -> bytes:
        """A regular file's whole content, refused past ``limit`` bytes."""
        fd, st = self.open(name)
        try:
            if st.st_size > limit:
                raise BundleError(f"{os.path.join(self.path, name)}: {st.st_size} bytes,"
                                  f" more than the {limit} a manifest may have")
            data = os.read(fd, limit + 1)
            if len(data) > limit:
                raise BundleError(f"{os.path.join(self.path, name)}: grew past {limit} bytes")
            return data
        finally:
            os.close(fd)

    def create(self, name: str) -> int:
        """A new file (0600, ours until it is given away), never an existing name."""
        try:
            return os.open(name, CREATE_FLAGS, 0o600, dir_fd=self.fd)
        except OSError as exc:
            raise failed(exc, self.where(name)) from None

    def rename(self, name: str, into: Dir, new: str) -> None:
        """``renameat``: replaces what is at ``new`` (a symlink itself, never its target)."""
        try:
            os.rename(name, new, src_dir_fd=self.fd, dst_dir_fd=into.fd)
        except OSError as exc:
            raise failed(exc, os.path.join(into.path, new)) from None

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise failed(exc, self.where(name)) from None

    def rmdir(self, name: str) -> bool:
        """Removes an empty directory; False if it is not empty (or gone)."""
        try:
            os.rmdir(name, dir_fd=self.fd)
        except OSError:
            return False
        return True

    def remove_tree(self, name: str) -> None:
        """``rm -r`` of a directory here; symlinks in it are removed, never followed."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(name, dir_fd=self.fd)

    def names(self) -> list[str]:
        try:
            return os.listdir(self.fd)
        except OSError as exc:
            raise failed(exc, self.path) from None

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise failed(exc, self.path) from None

    def free(self) -> int:
        """Bytes an unprivileged writer may still use on this directory's filesystem."""
        st = os.fstatvfs(self.fd)
        return st.f_bavail * st.f_frsize

    def give(self, owner: Owner | None, mode: int, where: str) -> None:
        give(self.fd, owner, mode, where)


def _refused(where: str, mode: int) -> BundleError:
    if stat.S_ISLNK(mode):
        return BundleError(f"{where}: a symlink inside the models directory: refused"
                           " (the engine user can point it anywhere; replace it with the"
                           " real directory or file)")
    return BundleError(f"{where}: {kind(mode)}, not what an Ollama models directory holds"
                       " there: refused")


def give(fd: int, owner: Owner | None, mode: int, where: str) -> None:
    """``fchown`` + ``fchmod`` on an open file or directory (never a path: no race)."""
    try:
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, mode)
    except OSError as exc:
        raise failed(exc, where) from None


def write_all(fd: int, data: bytes | memoryview, where: str) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise failed(exc, where) from None


def sync_file(fd: int, where: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise failed(exc, where) from None


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def open_root(path: str | os.PathLike[str], make: Owner | None = None,
              made: list[tuple[Dir, str]] | None = None) -> Dir:
    """The directory at ``path``, walked from ``/`` one component at a time. A missing
    component is created (owned by ``make``) when ``make`` is given; a symlink is followed
    only when root or the caller owns it and the directory it is in."""
    parts = list(PurePosixPath(os.path.abspath(path)).parts[1:])
    stack = [Dir(os.open("/", DIR_FLAGS), "/")]
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            here = stack[-1]
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    stack.pop().close()
                continue
            st = here.lstat(name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                where = os.path.join(here.path, name)
                holder = os.fstat(here.fd)
                if not (_trusted(st.st_uid) and _trusted(holder.st_uid)):
                    raise BundleError(
                        f"{where}: a symlink owned by uid {st.st_uid} in a directory owned"
                        f" by uid {holder.st_uid}: refused on the way to {path} (only root's"
                        " own symlinks are followed; use the real path)")
                links += 1
                if links > MAX_LINKS:
                    raise BundleError(f"{path}: too many levels of symbolic links")
                target = PurePosixPath(os.readlink(name, dir_fd=here.fd))
                if target.is_absolute():
                    while len(stack) > 1:
                        stack.pop().close()
                parts[:0] = list(target.parts[1:] if target.is_absolute() else target.parts)
                continue
            stack.append(here.subdir(name, make, made))
        root = stack.pop()
        root.path = os.fspath(path)
        return root
    finally:
        for opened in stack:
            opened.close()
