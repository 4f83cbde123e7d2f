"""The model bundle's format: an Ollama model (its manifest and every blob it names) in one
.tar.zst, written and read as streams.

A bundle is the tar the deployment notes made by hand (``models/manifests/...`` and
``models/blobs/sha256-*``, Ollama's own layout), zstd-compressed with frame checksums, in a
fixed order: the model's manifest first, then each blob it names once, then
``llm-supervisor-model.json`` (format 1: the model's name and the size and SHA-256 of every
file).

Reading trusts nothing in it. The manifest comes first and names every blob with its size, so
a member it does not name, a size other than the listed one, or a model larger than the free
space is refused before a byte is written; each blob is hashed against its name. Headers and
JSON members are bounded, and the stream may expand at most ``EXPANSION`` times what was read
compressed: memory stays flat in the bundle's size and a decompression bomb stops early.
Where the blobs land is ``install``'s business: this module writes only into the staging
directory it is given.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import zstandard

from llm_supervisor import names
from llm_supervisor.errors import BundleError
from llm_supervisor.tools.models import beneath
from llm_supervisor.tools.models.beneath import Dir, Owner

BUNDLE_MANIFEST = "llm-supervisor-model.json"
FORMAT = 1
PREFIX = "models"
STAGING_PREFIX = ".llm-supervisor-import-"
CHUNK = 1024 * 1024
MAX_JSON = 1024 * 1024          # a manifest, or the bundle's list of files
MAX_HEADERS = 1024 * 1024       # tar headers (pax records included) between two members
MAX_BLOBS = 1000                # Ollama's models have a handful
MAX_BLOB = 4 * 2**40            # the largest GGUF published is about 1.3 TiB
EXPANSION = 4                   # quantised weights hardly compress; text blobs are small
EXPANSION_SLACK = 16 * 2**20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:[0-9]{1,5})?")
BLOB_RE = re.compile(r"sha256-([0-9a-f]{64})")
DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
NUMBER_RE = re.compile(r"[0-9]+")

Progress = Callable[[int, int, str], None]


def quiet(done: int, total: int, label: str) -> None:
    pass


def size_text(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- names

def manifest_parts(name: str) -> tuple[str, str, str, str]:
    """``qwen2.5:7b`` -> (registry.ollama.ai, library, qwen2.5, 7b) (``llm_supervisor.names``),
    checked whole: the parts become directories."""
    host, namespace, model, tag = parts = names.name_parts(name)
    if name != name.strip() or "@" in name or name.count("/") > 2 or not HOST_RE.fullmatch(host) \
            or not all(PART_RE.fullmatch(p) for p in (namespace, model, tag)):
        raise BundleError(f"not an Ollama model name: {name!r} (e.g. qwen2.5:7b-instruct)")
    return parts


def manifest_relpath(name: str) -> str:
    return "manifests/" + "/".join(manifest_parts(name))


def model_name(parts: tuple[str, ...]) -> str:
    host, namespace, model, tag = parts
    if host == names.DEFAULT_HOST:
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json(data: bytes, where: str) -> Any:
    """Strict JSON: no NaN or Infinity, no nesting that would exhaust the stack."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise BundleError(f"{where}: not valid JSON ({why})") from None


def _size_of(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_BLOB:
        raise ValueError(value)
    return value


def manifest_blobs(manifest: bytes, where: str) -> dict[str, int]:
    """The blobs an Ollama manifest names (its config and its layers): hex digest -> size."""
    document = _json(manifest, where)
    try:
        entries = [document["config"], *document["layers"]]
        blobs: dict[str, int] = {}
        for entry in entries:
            digest = DIGEST_RE.fullmatch(entry["digest"])
            if digest is None:
                raise BundleError(f"{where}: a layer digest is not sha256:<64 hex>")
            size = _size_of(entry["size"])
            if blobs.setdefault(digest.group(1), size) != size:
                raise BundleError(f"{where}: two sizes for one blob")
    except (KeyError, TypeError, IndexError) as exc:
        raise BundleError(f"{where}: not an Ollama manifest (no {exc})") from None
    except ValueError as exc:
        raise BundleError(f"{where}: a blob size is not a whole number of bytes"
                          f" up to {MAX_BLOB} ({str(exc)[:40]})") from None
    if len(blobs) > MAX_BLOBS:
        raise BundleError(f"{where}: {len(blobs)} blobs, more than {MAX_BLOBS}")
    return blobs


def blob_digests(manifest: bytes, where: str) -> list[str]:
    return list(manifest_blobs(manifest, where))


# --------------------------------------------------------------------------- writing

def hash_fd(fd: int) -> str:
    sha = hashlib.sha256()
    while chunk := os.read(fd, CHUNK):
        sha.update(chunk)
    os.lseek(fd, 0, os.SEEK_SET)
    return sha.hexdigest()


class _Hashing:
    """A reader that hashes what passes through and reports progress."""

    def __init__(self, raw: IO[bytes], tick: Callable[[int], None]) -> None:
        self.raw, self.tick = raw, tick
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        self.tick(len(data))
        return data


def write_bundle(name: str, files: list[tuple[str, IO[bytes], int, str | None]],
                  out: IO[bytes], progress: Progress) -> dict[str, Any]:
    total, done = sum(size for _, _, size, _ in files), 0
    listed: list[dict[str, Any]] = []
    now = int(time.time())
    # Quantised weights hardly compress: the fastest level, on every core; the frame
    # checksum makes a damaged bundle fail in decompression already.
    compressor = zstandard.ZstdCompressor(level=1, threads=-1, write_checksum=True)
    with compressor.stream_writer(out, closefd=False) as zout, \
            tarfile.open(fileobj=zout, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                         copybufsize=CHUNK) as tar:  # typeshed lacks copybufsize (3.11 has it)
        for path, raw, size, hex_ in files:
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = size, now, 0o644

            def tick(n: int, label: str = path.rsplit("/", 1)[-1]) -> None:
                nonlocal done
                done += n
                progress(min(done, total - 1), total, label)  # the end is said once, below

            reader = _Hashing(raw, tick)
            try:
                tar.addfile(info, reader)
            except OSError as exc:  # the file shrank while being read
                raise BundleError(f"{path}: {exc}") from None
            digest = reader.sha.hexdigest()
            if hex_ is not None and digest != hex_:
                raise BundleError(f"{path.removeprefix(PREFIX + '/')} is corrupt: its content"
                                  f" hashes to sha256:{digest}")
            listed.append({"path": path, "size": size, "sha256": digest})
        document = {"format": FORMAT, "model": name, "files": listed}
        body = json.dumps(document, indent=1).encode()
        info = tarfile.TarInfo(BUNDLE_MANIFEST)
        info.size, info.mtime, info.mode = len(body), now, 0o644
        tar.addfile(info, io.BytesIO(body))
    progress(total, total, "done")
    return document


def default_output(name: str) -> str:
    parts = manifest_parts(name)
    return f"{parts[2]}-{parts[3]}.ollama.tar.zst"


# --------------------------------------------------------------------------- import: reading

class _Counting:
    """The bundle as read (compressed bytes): drives progress and the expansion budget."""

    def __init__(self, raw: IO[bytes], head: bytes, tick: Callable[[int], None]) -> None:
        self.raw, self.head, self.tick = raw, head, tick
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
        else:
            data = self.raw.read(size)
        self.total += len(data)
        self.tick(len(data))
        return data


class _Bounded:
    """The decompressed stream tarfile reads, within two budgets: the tar headers between
    two members' data may take ``MAX_HEADERS`` bytes (tarfile holds a pax header in memory),
    and the whole may expand at most ``EXPANSION`` times what was read compressed."""

    def __init__(self, raw: IO[bytes], counted: _Counting) -> None:
        self.raw, self.counted = raw, counted
        self.total = 0
        self.allowed = MAX_HEADERS

    def allow(self, size: int) -> None:
        """A member's data (``size`` bytes) may follow, then the next headers."""
        self.allowed = self.total + size + MAX_HEADERS

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.total += len(data)
        if self.total > self.allowed:
            raise BundleError(f"tar headers of more than {MAX_HEADERS} bytes: not a model"
                              " bundle")
        if self.total > EXPANSION * self.counted.total + EXPANSION_SLACK:
            raise BundleError(f"it expands to {size_text(self.total)} from"
                              f" {size_text(self.counted.total)}: quantised weights do not"
                              f" compress {EXPANSION} times: not a model bundle")
        return data


@dataclass
class Received:
    """What a bundle carried, all checked: the model, its manifest, its staged blobs."""

    parts: tuple[str, str, str, str]
    manifest: bytes
    blobs: dict[str, int]

    @property
    def name(self) -> str:
        return model_name(self.parts)


def _member_file(member: tarfile.TarInfo) -> None:
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        raise BundleError(f"unexpected member {member.name[:200]!r}: not a regular file")


def _manifest_member(member: tarfile.TarInfo) -> tuple[str, str, str, str]:
    parts = member.name.split("/")
    if len(parts) == 6 and parts[:2] == [PREFIX, "manifests"] \
            and HOST_RE.fullmatch(parts[2]) and all(PART_RE.fullmatch(p) for p in parts[3:]):
        _member_file(member)
        if member.size > MAX_JSON:
            raise BundleError(f"{member.name}: {member.size} bytes, more than the {MAX_JSON}"
                              " a manifest may have")
        return parts[2], parts[3], parts[4], parts[5]
    raise BundleError(f"unexpected member {member.name[:200]!r}: a model bundle starts"
                      " with its manifest")


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    return source.read()


def _blob_member(member: tarfile.TarInfo, blobs: dict[str, int], staged: set[str]) -> str:
    parts = member.name.split("/")
    blob = BLOB_RE.fullmatch(parts[2]) if len(parts) == 3 and parts[:2] == [PREFIX, "blobs"] \
        else None
    if blob is None:
        raise BundleError(f"unexpected member {member.name[:200]!r}: not a model bundle")
    hex_ = blob.group(1)
    _member_file(member)
    if hex_ not in blobs:
        raise BundleError(f"{member.name}: a blob the manifest does not name")
    if hex_ in staged:
        raise BundleError(f"{member.name} appears twice in the bundle")
    if member.size != blobs[hex_]:
        raise BundleError(f"{member.name}: {member.size} bytes, the manifest says"
                          f" {blobs[hex_]}: the bundle is corrupt")
    return hex_


def stage_blob(tar: tarfile.TarFile, member: tarfile.TarInfo, stage: Dir, hex_: str,
           owner: Owner | None) -> None:
    """A blob into the staging directory, hashed against its name, fsynced and given to
    its owner (the staging directory is root's alone: nobody else can reach it yet)."""
    source = tar.extractfile(member)
    assert source is not None
    sha = hashlib.sha256()
    fd = stage.create(hex_)
    try:
        while chunk := source.read(CHUNK):
            sha.update(chunk)
            beneath.write_all(fd, chunk, stage.where(hex_))
        if sha.hexdigest() != hex_:
            raise BundleError(f"{member.name}: its content hashes to"
                              f" sha256:{sha.hexdigest()[:12]}…: the bundle is corrupt")
        beneath.sync_file(fd, stage.where(hex_))
        beneath.give(fd, owner, 0o644, stage.where(hex_))
    finally:
        os.close(fd)


def _check_format(document: dict[str, Any]) -> None:
    if "format" not in document:
        raise BundleError(f"{BUNDLE_MANIFEST}: names no bundle format (this reads {FORMAT})")
    if type(document["format"]) is not int or document["format"] != FORMAT:
        raise BundleError(f"{BUNDLE_MANIFEST}: unknown bundle format"
                          f" {str(document['format'])[:40]!r} (this reads {FORMAT})")


def _check_listing(document: Any, received: Received, manifest_sha: str) -> None:
    """The bundle's own list: format 1 exactly, every file once with its size and SHA-256."""
    if not isinstance(document, dict):
        raise BundleError(f"{BUNDLE_MANIFEST}: not a JSON object ({type(document).__name__})")
    _check_format(document)
    if not isinstance(document.get("files"), list):
        raise BundleError(f"{BUNDLE_MANIFEST}: no list of files")
    listed: dict[str, tuple[int, str]] = {}
    for entry in document["files"]:
        try:
            path, size, sha = entry["path"], _size_of(entry["size"]), entry["sha256"]
            if not isinstance(path, str) or not isinstance(sha, str):
                raise TypeError(path)
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{BUNDLE_MANIFEST}: a bad file entry: {str(entry)[:200]}") from None
        if path in listed:
            raise BundleError(f"{BUNDLE_MANIFEST}: {path[:200]!r} is listed twice")
        listed[path] = (size, sha)
    manifest_path = f"{PREFIX}/manifests/{'/'.join(received.parts)}"
    carried = {manifest_path: (len(received.manifest), manifest_sha)} | {
        f"{PREFIX}/blobs/sha256-{h}": (size, h) for h, size in received.blobs.items()}
    if set(listed) != set(carried):
        missing, extra = sorted(set(listed) - set(carried)), sorted(set(carried) - set(listed))
        raise BundleError(f"the bundle's files differ from its list: missing {missing[:5]},"
                          f" unlisted {extra[:5]}")
    for path, (size, sha) in carried.items():
        if listed[path] != (size, sha):
            got_size, got_sha = listed[path]
            raise BundleError(f"{path}: SHA-256 or size mismatch (carried {sha[:12]}…, {size} B;"
                              f" listed {got_sha[:12]}…, {got_size} B): the bundle is corrupt")
    model = document.get("model")
    if model is not None and (not isinstance(model, str) or len(model) > 512
                              or manifest_relpath(model) != manifest_path.split("/", 1)[1]):
        raise BundleError(f"{BUNDLE_MANIFEST} names {str(model)[:200]!r} but carries"
                          f" {manifest_path}")


def receive(raw: IO[bytes], head: bytes, size: int | None, label: str, blob_dir: Dir,
             stage: Dir, owner: Owner | None, progress: Progress) -> Received:
    """Stream the bundle into ``stage``, checking everything; nothing outside ``stage`` is
    written. Progress starts once the first member proved it a model bundle."""
    started = False
    total = size or 0

    def tick(n: int) -> None:
        if started:  # the end is said once, below
            progress(min(counted.total, total - 1) if total else counted.total, total,
                     "verifying")

    counted = _Counting(raw, head, tick)
    decompressed = zstandard.ZstdDecompressor().stream_reader(counted)  # type: ignore[arg-type]
    bounded = _Bounded(decompressed, counted)  # (read() is all the decompressor uses)
    try:
        with tarfile.open(fileobj=bounded, mode="r|") as tar:  # type: ignore[call-overload]
            members = iter(tar)
            first = next(members, None)
            if first is None:
                raise BundleError(f"{label}: an empty archive: not a model bundle")
            parts = _manifest_member(first)
            bounded.allow(first.size)
            data = _read_member(tar, first)
            blobs = manifest_blobs(data, first.name)
            received = Received(parts, data, blobs)
            _check_room(blob_dir, blobs, size)
            started = True
            staged: set[str] = set()
            for member in members:
                bounded.allow(member.size)
                if member.name == BUNDLE_MANIFEST:
                    _member_file(member)
                    if member.size > MAX_JSON:
                        raise BundleError(f"{BUNDLE_MANIFEST}: {member.size} bytes, more than"
                                          f" {MAX_JSON}")
                    missing = [h for h in blobs if h not in staged]
                    if missing:
                        raise BundleError(f"{received.name}: the manifest names blobs the"
                                          f" bundle lacks: {', '.join(m[:12] for m in missing)}")
                    _check_listing(_json(_read_member(tar, member), BUNDLE_MANIFEST), received,
                                   hashlib.sha256(data).hexdigest())
                    break
                hex_ = _blob_member(member, blobs, staged)
                stage_blob(tar, member, stage, hex_, owner)
                staged.add(hex_)
            else:
                raise BundleError(f"no {BUNDLE_MANIFEST} at the end: the bundle is truncated")
            extra = next(members, None)
            if extra is not None:
                raise BundleError(f"unexpected member {extra.name[:200]!r} after"
                                  f" {BUNDLE_MANIFEST}: not a model bundle")
        while bounded.read(CHUNK):  # to the frame's end: zstd checks its checksum there
            pass
    except (zstandard.ZstdError, tarfile.TarError, EOFError, UnicodeError) as exc:
        raise BundleError(f"{label}: truncated or corrupt ({exc})") from None
    except OSError as exc:  # reading the bundle itself
        raise BundleError(f"{label}: {exc.strerror or exc}") from None
    progress(counted.total, total or counted.total, "verified")
    return received


def _check_room(blob_dir: Dir, blobs: dict[str, int], size: int | None) -> None:
    """Before a byte is written: room for every blob, and (a bundle of known size) no
    more than it could carry."""
    need = sum(blobs.values())
    if size is not None and need > EXPANSION * size + EXPANSION_SLACK:
        raise BundleError(f"its manifest lists {size_text(need)} of blobs, a bundle of"
                          f" {size_text(size)} cannot carry that: not a model bundle")
    free = blob_dir.free()
    if need > free:
        raise BundleError(f"{blob_dir.path}: {size_text(free)} free, the model needs"
                          f" {size_text(need)}")


def sniff(raw: IO[bytes], label: str) -> bytes:
    head = raw.read(4)
    if head != ZSTD_MAGIC:
        raise BundleError(f"{label}: not a model bundle (not zstd-compressed: a bundle is"
                          " what `llm-supervisorctl models export` writes)")
    return head


def manifest_dir(root: Dir, parts: tuple[str, str, str, str], make: Owner | None = None,
                  made: list[tuple[Dir, str]] | None = None) -> Dir | None:
    """The directory holding a model's manifest (``manifests/HOST/NAMESPACE/MODEL``, never
    through a symlink), made when ``make`` is given; None if it is missing."""
    opened = [root]
    try:
        for part in ("manifests", *parts[:3]):
            if make is None and opened[-1].lstat(part) is None:
                return None
            opened.append(opened[-1].subdir(part, make, made))
        return opened.pop()
    finally:
        for directory in opened[1:]:
            directory.close()
