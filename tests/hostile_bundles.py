"""Hostile model bundles, forged member by member: the corpus ``tests/tools/models/test_bundle_hostile.py``
refuses one by one and ``dev/bundle_corpus.py`` measures (bytes written, peak memory).

A ``Model`` is an Ollama model as files (manifest and blobs); ``forge`` writes any sequence of
tar members, well-formed or not, zstd-compressed, so each case is the honest bundle with one
thing changed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zstandard

from llm_supervisor.tools.models import format as bundle

NAME = "qwen2.5:7b-instruct"
MANIFEST = "models/manifests/registry.ollama.ai/library/qwen2.5/7b-instruct"


@dataclass(frozen=True)
class Member:
    """One tar member: its name, content, type and any pax headers."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    size: int | None = None        # the header's size, if not len(data)
    link: str = ""
    pax: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    manifest: bytes
    blobs: dict[str, bytes]  # hex -> content

    @property
    def document(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.manifest)
        return result

    def members(self) -> list[Member]:
        return [Member(MANIFEST, self.manifest),
                *(Member(f"models/blobs/sha256-{h}", data) for h, data in self.blobs.items())]

    def listing(self, members: Iterable[Member] | None = None, **changes: Any) -> Member:
        files = [{"path": m.name, "size": len(m.data),
                  "sha256": hashlib.sha256(m.data).hexdigest()}
                 for m in (self.members() if members is None else members)]
        document = {"format": 1, "model": NAME, "files": files} | changes
        return Member(bundle.BUNDLE_MANIFEST, json.dumps(document).encode())

    def honest(self) -> list[Member]:
        return [*self.members(), self.listing()]

    def install(self, models: Path, name: str = NAME) -> None:
        """Laid out as Ollama lays it out."""
        (models / "blobs").mkdir(parents=True, exist_ok=True)
        for hex_, data in self.blobs.items():
            (models / "blobs" / f"sha256-{hex_}").write_bytes(data)
        path = models / bundle.manifest_relpath(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.manifest)


def model(weights: bytes, extra: bytes = b"You are a helpful assistant.",
          sizes: dict[str, Any] | None = None) -> Model:
    """A model: config, weights and a system prompt (``sizes`` overrides listed sizes)."""
    config = json.dumps({"model_format": "gguf"}).encode()
    blobs = {hashlib.sha256(d).hexdigest(): d for d in (config, weights, extra)}

    def entry(data: bytes) -> dict[str, Any]:
        hex_ = hashlib.sha256(data).hexdigest()
        return {"mediaType": "application/vnd.ollama.image.model",
                "digest": f"sha256:{hex_}", "size": (sizes or {}).get(hex_, len(data))}

    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": entry(config), "layers": [entry(weights), entry(extra)]}
    return Model(json.dumps(manifest).encode(), blobs)


def forge(members: Iterable[Member], level: int = 3) -> bytes:
    """The members as a .tar.zst, exactly as given (sizes, types, order, pax headers)."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=level, write_checksum=True).stream_writer(
            out, closefd=False) as z, tarfile.open(fileobj=z, mode="w|",
                                                   format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.linkname, info.mode = m.type, m.link, 0o644
            info.size = len(m.data) if m.size is None else m.size
            info.pax_headers = dict(m.pax)
            tar.addfile(info, io.BytesIO(m.data) if info.isreg() else None)
    return out.getvalue()


class Zeros(io.RawIOBase):
    """``size`` zero bytes, never held in memory (a bomb's content)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def bomb(base: Model, size: int) -> bytes:
    """A manifest that lists a ``size``-byte weights blob (and a header that agrees), whose
    content is zeros that hash to something else: a few KB compressed."""
    weights_hex = next(h for h in base.blobs if len(base.blobs[h]) > 100)
    document = base.document
    document["layers"][0]["size"] = size
    manifest = json.dumps(document).encode()
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as z, \
            tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        info = tarfile.TarInfo(f"models/blobs/sha256-{weights_hex}")
        info.size = size
        tar.addfile(info, Zeros(size))  # type: ignore[arg-type]
    return out.getvalue()


def _document(base: Model, **changes: Any) -> list[Member]:
    return [*base.members(), base.listing(**changes)]


def _renamed(members: list[Member], old: str, new: str) -> list[Member]:
    return [replace(m, name=new) if m.name == old else m for m in members]


@dataclass(frozen=True)
class Case:
    name: str
    data: Callable[[Model], bytes]
    refusal: str  # a regular expression the refusal's line must match


def corpus() -> list[Case]:
    """Every hostile bundle: each is refused, and the models directory stays as it was."""
    blob = lambda m, i=1: f"models/blobs/sha256-{list(m.blobs)[i]}"  # noqa: E731
    cases = [
        Case("not zstd (/etc/passwd)", lambda m: b"root:x:0:0:root:/root:/bin/bash\n",
             "not a model bundle"),
        Case("empty file", lambda m: b"", "not a model bundle"),
        Case("zstd of text", lambda m: zstandard.ZstdCompressor().compress(b"hello" * 300),
             "truncated or corrupt"),
        Case("empty archive", lambda m: forge([]), "empty archive"),
        Case("path traversal", lambda m: forge([Member("models/../../etc/cron.d/x", b"bad")]),
             "unexpected member"),
        Case("absolute path", lambda m: forge([Member("/etc/cron.d/x", b"bad")]),
             "unexpected member"),
        Case("symlink member", lambda m: forge([m.members()[0], Member(
            blob(m), type=tarfile.SYMTYPE, link="/etc/shadow"), *m.members()[2:]]),
             "not a regular file"),
        Case("hard link member", lambda m: forge([m.members()[0], Member(
            blob(m), type=tarfile.LNKTYPE, link="/etc/shadow"), *m.members()[2:]]),
             "not a regular file"),
        Case("device member", lambda m: forge([m.members()[0], Member(
            blob(m), type=tarfile.CHRTYPE)]), "not a regular file"),
        Case("FIFO member", lambda m: forge([m.members()[0], Member(
            blob(m), type=tarfile.FIFOTYPE)]), "not a regular file"),
        Case("directory member", lambda m: forge([Member("models/blobs", type=tarfile.DIRTYPE)]),
             "unexpected member"),
        Case("manifest as a symlink", lambda m: forge([Member(
            MANIFEST, type=tarfile.SYMTYPE, link="/etc/passwd")]), "not a regular file"),
        Case("blob before the manifest", lambda m: forge([*m.members()[1:], m.members()[0],
                                                          m.listing()]),
             "starts with its manifest"),
        Case("listing first", lambda m: forge([m.listing(), *m.members()]),
             "starts with its manifest"),
        Case("a blob the manifest does not name", lambda m: forge([
            *m.members(), Member(f"models/blobs/sha256-{hashlib.sha256(b'x').hexdigest()}",
                                 b"x"), m.listing()]), "does not name"),
        Case("a blob twice", lambda m: forge([*m.members(), m.members()[1], m.listing()]),
             "appears twice"),
        Case("a blob that does not hash to its name", lambda m: forge([
            m.members()[0], replace(m.members()[1], data=b"X" * len(m.members()[1].data)),
            *m.members()[2:], m.listing()]), "hashes to"),
        Case("a blob longer than its manifest says", lambda m: forge([
            m.members()[0], replace(m.members()[2], data=m.members()[2].data + b"!"),
            *m.members()[3:], m.listing()]), "the manifest says"),
        Case("a blob missing", lambda m: forge([*m.members()[:-1], m.listing()]),
             "names blobs the bundle lacks"),
        Case("no listing (truncated)", lambda m: forge(m.members()), "truncated"),
        Case("two listings", lambda m: forge([*m.honest(), m.listing()]), "after"),
        Case("a member after the listing", lambda m: forge([*m.honest(), Member(
            "models/blobs/x", b"x")]), "after"),
        Case("format true", lambda m: forge(_document(m, format=True)), "format"),
        Case("format 1.0", lambda m: forge(_document(m, format=1.0)), "format"),
        Case("format '1'", lambda m: forge(_document(m, format="1")), "format"),
        Case("format 2", lambda m: forge(_document(m, format=2)), "format"),
        Case("no format", lambda m: forge([*m.members(), Member(
            bundle.BUNDLE_MANIFEST, json.dumps({"files": []}).encode())]),
             "names no bundle format"),
        Case("listing without a file", lambda m: forge([*m.members(), m.listing(
            m.members()[:-1])]), "differ from its list"),
        Case("listing with a wrong SHA-256", lambda m: forge([*m.members(), m.listing(
            [*m.members()[:-1], replace(m.members()[-1], data=b"other")])]), "mismatch"),
        Case("listing with a file twice", lambda m: forge([*m.members(), m.listing(
            [*m.members(), m.members()[0]])]), "listed twice"),
        Case("listing naming another model", lambda m: forge(_document(m, model="llama3:8b")),
             "names"),
        Case("listing naming the model with a newline", lambda m: forge(
            _document(m, model=NAME + "\n")), "names|not an Ollama model name"),
        Case("listing with NaN", lambda m: forge([*m.members(), Member(
            bundle.BUNDLE_MANIFEST, b'{"format": 1, "files": [{"size": NaN}]}')]),
             "not valid JSON"),
        Case("listing nested too deep", lambda m: forge([*m.members(), Member(
            bundle.BUNDLE_MANIFEST, b"[" * 100_000 + b"]" * 100_000)]), "nested too deep"),
        Case("listing of 150 MiB (compressible)", lambda m: forge([*m.members(), Member(
            bundle.BUNDLE_MANIFEST, b" " * (150 * 2**20))], level=1), "more than"),
        Case("tag with a trailing newline", lambda m: forge(_renamed(
            m.honest(), MANIFEST, MANIFEST + "\n")), "starts with its manifest"),
        Case("tag '..'", lambda m: forge(_renamed(m.honest(), MANIFEST, MANIFEST.rsplit(
            "/", 1)[0] + "/..")), "starts with its manifest"),
        Case("host with a slash", lambda m: forge(_renamed(m.honest(), MANIFEST, MANIFEST.replace(
            "registry.ollama.ai", "registry.ollama.ai/x"))), "starts with its manifest"),
        Case("manifest of 2 MiB", lambda m: forge([Member(MANIFEST, b" " * (2 * 2**20))]),
             "more than"),
        Case("manifest not JSON", lambda m: forge([Member(MANIFEST, b"\xff\xfe")]),
             "not valid JSON"),
        Case("manifest with a float size", lambda m: forge(model(
            m.blobs[list(m.blobs)[1]], sizes={list(m.blobs)[1]: 1.5}).honest()),
             "whole number"),
        Case("manifest with a bool size", lambda m: forge(model(
            m.blobs[list(m.blobs)[1]], sizes={list(m.blobs)[1]: True}).honest()),
             "whole number"),
        Case("manifest with a 5 TiB blob", lambda m: forge(model(
            m.blobs[list(m.blobs)[1]], sizes={list(m.blobs)[1]: 5 * 2**40}).honest()),
             "whole number"),
        Case("manifest of 1001 layers", lambda m: forge([Member(MANIFEST, json.dumps({
            "config": {"digest": "sha256:" + "0" * 64, "size": 1},
            "layers": [{"digest": f"sha256:{i:064x}", "size": 1} for i in range(1, 1002)]}
        ).encode())]), "more than 1000"),
        Case("zstd bomb: 6 KB listing a 172 MB blob", lambda m: bomb(m, 172_000_000),
             "cannot carry"),
        Case("pax header of 8 MiB", lambda m: forge([Member(MANIFEST, m.manifest, pax={
            "comment": "x" * (8 * 2**20)})], level=1), "tar headers|expands"),
        Case("sparse member", lambda m: forge([m.members()[0], Member(
            blob(m), m.members()[1].data, type=tarfile.GNUTYPE_SPARSE)]),
             "not a regular file|unexpected"),
        Case("a flipped byte in the frame", lambda m: _flip(forge(m.honest()), -6),
             "truncated or corrupt|corrupt"),
        Case("cut short", lambda m: forge(m.honest())[:-40], "truncated or corrupt"),
    ]
    return cases


def _flip(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


def tree(root: Path) -> dict[str, tuple[str, bytes, int, int, int]]:
    """Everything under ``root`` (symlinks not followed): kind, content or target, owner,
    mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                kind, content = "link", os.readlink(path).encode()
            elif path.is_dir():
                kind, content = "dir", b""
            elif path.is_file():
                kind, content = "file", path.read_bytes()
            else:
                kind, content = "other", b""
            out[str(path.relative_to(root))] = (kind, content, st.st_uid, st.st_gid,
                                                st.st_mode & 0o7777)
    return out


class Faults:
    """``os`` as the bundle code sees it: every call that changes the disk is counted, and
    the one numbered ``at`` fails (``errno``) or is followed by a signal."""

    STEPS = ("open", "write", "fsync", "rename", "mkdir", "fchown", "fchmod", "unlink", "rmdir")

    def __init__(self, at: int = -1, how: str = "") -> None:
        self.at, self.how, self.calls = at, how, []  # type: list[str]
        self.count = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*args: Any, **kwargs: Any) -> Any:
            index = self.count
            self.count += 1
            self.calls.append(name)
            if index == self.at and self.how in ("EIO", "ENOSPC"):
                code = getattr(errno, self.how)
                raise OSError(code, os.strerror(code))
            result = real(*args, **kwargs)
            if index == self.at and self.how == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
            return result

        return step


def restore(models: Path, state: dict[str, tuple[str, bytes, int, int, int]],
            owner: Any) -> None:
    """Put ``models`` back to a tree recorded by ``hostile_bundles.tree``."""
    shutil.rmtree(models)
    models.mkdir()
    for rel, (kind, content, uid, gid, mode) in sorted(state.items()):
        path = models / rel
        if kind == "dir":
            path.mkdir()
        else:
            path.write_bytes(content)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    os.chown(models, owner.uid, owner.gid)
