"""``models export``: a model read from the models directory (only regular files beneath it,
never through a symlink; one with other hard links hashed before a byte of it goes out) and
written to a regular file, replaced atomically, or to stdout."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any

from llm_supervisor.errors import BundleError
from llm_supervisor.tools.models import beneath
from llm_supervisor.tools.models.beneath import Dir
from llm_supervisor.tools.models.format import (
    MAX_JSON,
    PREFIX,
    Progress,
    default_output,
    hash_fd,
    manifest_blobs,
    manifest_dir,
    manifest_parts,
    manifest_relpath,
    quiet,
    write_bundle,
)
from llm_supervisor.tools.models.signals import Signals


def export_stream(models_dir: Path | str, name: str, out: IO[bytes],
                  progress: Progress = quiet) -> dict[str, Any]:
    """Write the bundle of ``name`` to ``out``; returns the bundle's list of files. Only
    regular files beneath the models directory are read; one with other hard links (it
    could be anybody's file) is hashed before a byte of it is written out."""
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(beneath.open_root(models_dir))
        parts = manifest_parts(name)
        tag = parts[3]
        folder = manifest_dir(root, parts)
        if folder is not None:
            stack.enter_context(folder)
        if folder is None or folder.lstat(tag) is None:
            raise BundleError(f"no model {name!r} in {models_dir}"
                              f" (no {models_dir}/{manifest_relpath(name)})")
        data = folder.read(tag, MAX_JSON)
        where = f"{folder.path}/{tag}"
        blobs = manifest_blobs(data, where)
        blob_dir = stack.enter_context(root.subdir("blobs"))
        missing = [f"sha256-{h}" for h in blobs if blob_dir.lstat(f"sha256-{h}") is None]
        if missing:
            raise BundleError(f"{name}: blobs missing from {blob_dir.path}: {', '.join(missing)}")
        files: list[tuple[str, IO[bytes], int, str | None]] = [
            (f"{PREFIX}/{manifest_relpath(name)}", io.BytesIO(data), len(data), None)]
        for hex_, size in blobs.items():
            fd, st = blob_dir.open(f"sha256-{hex_}")
            raw = stack.enter_context(open(fd, "rb"))  # noqa: SIM115 (closed by the stack)
            shown = f"{blob_dir.path}/sha256-{hex_}"
            if st.st_size != size:
                raise BundleError(f"{shown} is corrupt: {st.st_size} bytes, its manifest"
                                  f" says {size}")
            if st.st_nlink > 1 and hash_fd(fd) != hex_:
                raise BundleError(f"{shown} is corrupt: its content does not hash to its name")
            files.append((f"{PREFIX}/blobs/sha256-{hex_}", raw, size, hex_))
        return write_bundle(name, files, out, progress)
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions


def export_file(models_dir: Path | str, name: str, output: Path | str,
                progress: Progress = quiet, signals: Signals | None = None
                ) -> tuple[str, dict[str, Any]]:
    """The bundle written to a regular file, created anew or replacing a regular file
    atomically (a temporary file beside it, then one rename); ``output`` naming a directory
    (or ending in ``/``) writes the default name into it. A device, a FIFO, a symlink, a
    socket or a missing directory is refused before anything is read. Returns the path
    written and the bundle's list of files."""
    spec = os.fspath(output)
    if spec.endswith("/") or os.path.isdir(spec):
        folder, leaf = spec, default_output(name)
    else:
        folder, leaf = os.path.dirname(spec) or ".", os.path.basename(spec)
    path = os.path.join(folder, leaf)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        why = "no such directory" if exc.errno in (2, 20) else exc.strerror
        raise BundleError(f"{folder}: {why}: nothing was written") from None
    with Dir(fd, folder) as parent:
        st = parent.lstat(leaf)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path}: {beneath.kind(st.st_mode)}: export writes only a"
                              " regular file (or stdout with -o -): nothing was written")
        temp = f".{leaf}.{secrets.token_hex(4)}"
        out = parent.create(temp)
        try:
            with open(out, "wb", closefd=False) as fh:
                document = export_stream(models_dir, name, fh, progress)
            beneath.sync_file(out, folder)
            beneath.give(out, None, 0o644, folder)
            parent.rename(temp, parent, leaf)
            parent.sync()
        except BaseException:
            with (signals or Signals()).held(), contextlib.suppress(BundleError):
                parent.unlink(temp)
            raise
        finally:
            os.close(out)
    return path, document
