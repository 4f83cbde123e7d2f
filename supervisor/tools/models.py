"""Offline model bundles: an Ollama model (its manifest and every blob it names) in one .tar.zst.

The deployment notes move models to hosts without internet by tarring Ollama's
``models/manifests/...`` and ``models/blobs/sha256-*`` and fixing ownership by hand. A bundle is
that tar (the same paths), zstd-compressed with frame checksums, ending with
``llm-supervisor-model.json``: the model's name and the size and SHA-256 of every file.

Import streams the bundle into a hidden staging directory inside the models directory (so
the final renames stay on one filesystem), checking each blob against its own name
(``sha256-<hex>``) and every file against the bundle's list. Only when everything checked out
are the blobs renamed into ``blobs/`` and, last, the manifest into ``manifests/``: Ollama sees
the model whole or not at all. Any failure removes what this import added. Files are read and
written in chunks, so multi-GB blobs never sit in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import zstandard

from supervisor import names
from supervisor.errors import BundleError

BUNDLE_MANIFEST = "llm-supervisor-model.json"
FORMAT = 1
PREFIX = "models"
STAGING_PREFIX = ".llm-supervisor-import-"
CHUNK = 1024 * 1024
PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:[0-9]{1,5})?$")
BLOB_RE = re.compile(r"^sha256-([0-9a-f]{64})$")
DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- names and paths

def manifest_parts(name: str) -> tuple[str, str, str, str]:
    """``qwen2.5:7b`` -> (registry.ollama.ai, library, qwen2.5, 7b) (``supervisor.names``),
    checked: the parts become directories."""
    host, namespace, model, tag = parts = names.name_parts(name)
    if "@" in name or name.count("/") > 2 or not HOST_RE.match(host) \
            or not all(PART_RE.match(p) for p in (namespace, model, tag)):
        raise BundleError(f"not an Ollama model name: {name!r} (e.g. qwen2.5:7b-instruct)")
    return parts


def manifest_relpath(name: str) -> str:
    return "manifests/" + "/".join(manifest_parts(name))


def model_name(parts: tuple[str, ...]) -> str:
    host, namespace, model, tag = parts
    if host == names.DEFAULT_HOST:
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def blob_digests(manifest: bytes, where: str) -> list[str]:
    """The hex digests an Ollama manifest names (its config and its layers)."""
    document = _json(manifest, where)
    try:
        entries = [document["config"], *document["layers"]]
        digests = [DIGEST_RE.match(entry["digest"]) for entry in entries]
    except (KeyError, TypeError, IndexError) as exc:
        raise BundleError(f"{where}: not an Ollama manifest (no {exc})") from None
    if not all(digests):
        raise BundleError(f"{where}: a layer digest is not sha256:<64 hex>")
    return list(dict.fromkeys(m.group(1) for m in digests if m))


# --------------------------------------------------------------------------- streams

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


class _Counting:
    """A raw file whose position (compressed bytes read) drives import progress."""

    def __init__(self, raw: IO[bytes], tick: Callable[[int], None]) -> None:
        self.raw, self.tick = raw, tick

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.tick(len(data))
        return data


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def progress_printer(verb: str, stream: IO[str] | None = None) -> Progress:
    """Progress on one rewritten line of stderr (a terminal) at most twice a second; a
    pipe or a journal gets a line every 10 %."""
    out = stream or sys.stderr
    live = out.isatty()
    last = [0.0, -1.0]

    def report(done: int, total: int, label: str) -> None:
        share = done / total if total else 1.0
        now = time.monotonic()
        if live:
            if done < total and now - last[0] < 0.5:
                return
            end = "\n" if done >= total else "\x1b[K"
            out.write(f"\r{verb}: {_size(done)} of {_size(total)} ({share:.0%}) {label[:40]}{end}")
        else:
            if share < 1.0 and share - last[1] < 0.1:
                return
            last[1] = share
            out.write(f"{verb}: {_size(done)} of {_size(total)} ({share:.0%}) {label[:40]}\n")
        last[0] = now
        out.flush()

    return report


def _quiet(done: int, total: int, label: str) -> None:
    pass


# --------------------------------------------------------------------------- export

@dataclass(frozen=True)
class ExportPlan:
    name: str
    manifest: Path
    blobs: tuple[Path, ...]

    @property
    def total(self) -> int:
        return sum(p.stat().st_size for p in (self.manifest, *self.blobs))


def plan_export(models_dir: Path, name: str) -> ExportPlan:
    manifest = models_dir / manifest_relpath(name)
    try:
        data = manifest.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"no model {name!r} in {models_dir} (no {manifest})") from None
    except OSError as exc:
        raise BundleError(f"{manifest}: {exc.strerror}") from None
    blobs = tuple(models_dir / "blobs" / f"sha256-{hex_}"
                  for hex_ in blob_digests(data, str(manifest)))
    missing = [str(p) for p in blobs if not p.is_file()]
    if missing:
        raise BundleError(f"{name}: blobs missing from {models_dir}: {', '.join(missing)}")
    return ExportPlan(name, manifest, blobs)


def export_stream(models_dir: Path, name: str, out: IO[bytes],
                  progress: Progress = _quiet) -> dict[str, Any]:
    """Write the bundle of ``name`` to ``out``; returns the bundle's manifest."""
    plan = plan_export(models_dir, name)
    total, done = plan.total, 0
    files: list[dict[str, Any]] = []
    # Quantised weights hardly compress: the fastest level, on every core; the frame
    # checksum makes a damaged bundle fail in decompression already.
    compressor = zstandard.ZstdCompressor(level=1, threads=-1, write_checksum=True)
    with compressor.stream_writer(out, closefd=False) as zout, \
            tarfile.open(fileobj=zout, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                         copybufsize=CHUNK) as tar:  # typeshed lacks copybufsize (3.11 has it)
        for path in (plan.manifest, *plan.blobs):
            relative = path.relative_to(models_dir).as_posix()
            info = tarfile.TarInfo(f"{PREFIX}/{relative}")
            info.size, info.mtime, info.mode = path.stat().st_size, int(time.time()), 0o644

            def tick(n: int, label: str = path.name) -> None:
                nonlocal done
                done += n
                progress(done, total, label)

            with path.open("rb") as raw:
                reader = _Hashing(raw, tick)
                try:
                    tar.addfile(info, reader)
                except OSError as exc:  # the file shrank while being read
                    raise BundleError(f"{path}: {exc}") from None
            digest = reader.sha.hexdigest()
            blob = BLOB_RE.match(path.name)
            if blob and blob.group(1) != digest:
                raise BundleError(f"{path} is corrupt: its content hashes to sha256:{digest}")
            files.append({"path": f"{PREFIX}/{relative}", "size": info.size, "sha256": digest})
        document = {"format": FORMAT, "model": name, "files": files}
        body = json.dumps(document, indent=1).encode()
        info = tarfile.TarInfo(BUNDLE_MANIFEST)
        info.size, info.mtime, info.mode = len(body), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(body))
    progress(total, total, "done")
    return document


def export_file(models_dir: Path, name: str, output: Path,
                progress: Progress = _quiet) -> dict[str, Any]:
    """The bundle written atomically to ``output`` (a temp file beside it, then a rename)."""
    output = output.absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            document = export_stream(models_dir, name, fh, progress)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return document


# --------------------------------------------------------------------------- import

@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def _copy(src: IO[bytes], dest: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with dest.open("xb") as out:
        while chunk := src.read(CHUNK):
            sha.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, sha.hexdigest()


def _member_kind(name: str) -> tuple[str, tuple[str, ...]]:
    """What a bundle member is; anything else is refused (no path leaves the models dir)."""
    if name == BUNDLE_MANIFEST:
        return "bundle", ()
    parts = tuple(name.split("/"))
    if len(parts) == 3 and parts[:2] == (PREFIX, "blobs") and BLOB_RE.match(parts[2]):
        return "blob", parts[2:]
    if len(parts) == 6 and parts[:2] == (PREFIX, "manifests"):
        host, namespace, model, tag = parts[2:]
        if HOST_RE.match(host) and all(PART_RE.match(p) for p in (namespace, model, tag)):
            return "manifest", parts[2:]
    raise BundleError(f"unexpected member {name!r}: not a model bundle")


def _staged(tar: tarfile.TarFile, stage: Path) -> Iterator[tuple[str, tarfile.TarInfo, Path,
                                                                  int, str]]:
    for index, member in enumerate(tar):
        kind, _ = _member_kind(member.name)
        if not member.isfile():
            raise BundleError(f"unexpected member {member.name!r}: not a regular file")
        source = tar.extractfile(member)
        assert source is not None
        target = stage / f"{index:05d}"
        size, digest = _copy(source, target)
        yield kind, member, target, size, digest


def _verify(received: dict[str, tuple[Path, int, str]], bundle: dict[str, Any] | None
            ) -> tuple[str, str, list[str]]:
    """(manifest path in the models dir, model name, blob names) once everything checks out."""
    if bundle is None:
        raise BundleError(f"no {BUNDLE_MANIFEST} at the end: the bundle is truncated")
    if bundle.get("format") != FORMAT or not isinstance(bundle.get("files"), list):
        raise BundleError(f"{BUNDLE_MANIFEST}: unknown bundle format {bundle.get('format')!r}")
    listed = {}
    for entry in bundle["files"]:
        try:
            size = entry["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(size)
            listed[str(entry["path"])] = (size, str(entry["sha256"]))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{BUNDLE_MANIFEST}: a bad file entry:"
                              f" {str(entry)[:200]}") from None
    if set(listed) != set(received):
        missing = sorted(set(listed) - set(received))
        extra = sorted(set(received) - set(listed))
        raise BundleError(f"the bundle's files differ from its list: missing {missing},"
                          f" unlisted {extra}")
    for path, (size, digest) in listed.items():
        _, got_size, got_digest = received[path]
        if (got_size, got_digest) != (size, digest):
            raise BundleError(f"{path}: SHA-256 or size mismatch (got {got_digest[:12]}…,"
                              f" {got_size} B; listed {digest[:12]}…, {size} B):"
                              " the bundle is corrupt")
    manifests = [p for p in received if p.startswith(f"{PREFIX}/manifests/")]
    if len(manifests) != 1:
        raise BundleError(f"a bundle carries one model manifest, this one {len(manifests)}")
    manifest = manifests[0]
    parts = tuple(manifest.split("/")[2:])
    name = model_name(parts)
    if bundle.get("model") and manifest_relpath(str(bundle["model"])[:512]) != \
            manifest.removeprefix(f"{PREFIX}/"):
        raise BundleError(f"{BUNDLE_MANIFEST} names {bundle['model']!r} but carries {manifest}")
    needed = blob_digests(received[manifest][0].read_bytes(), manifest)
    have = {p.rsplit("sha256-", 1)[-1] for p in received if p.startswith(f"{PREFIX}/blobs/")}
    absent = [d for d in needed if d not in have]
    if absent:
        raise BundleError(f"{name}: the manifest names blobs the bundle lacks:"
                          f" {', '.join(a[:12] for a in absent)}")
    return manifest.removeprefix(f"{PREFIX}/"), name, [f"sha256-{d}" for d in have]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json(data: bytes, where: str) -> Any:
    """Strict JSON: no NaN or Infinity, no nesting that would exhaust the stack."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        why = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise BundleError(f"{where}: not valid JSON ({why})") from None


def _bundle_document(data: bytes) -> dict[str, Any]:
    document = _json(data, BUNDLE_MANIFEST)
    if not isinstance(document, dict):
        raise BundleError(f"{BUNDLE_MANIFEST}: not a JSON object ({type(document).__name__})")
    return document


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: Path, owner: Owner | None, created: list[Path]) -> None:
    """mkdir -p, recording (and owning) each directory it creates."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o755)
        created.append(directory)
        if owner:
            os.chown(directory, owner.uid, owner.gid)


def _install_blobs(sources: list[Path], blobs: list[str], blob_dir: Path, stage: Path,
                   owner: Owner | None, added: list[Path],
                   replaced: list[tuple[Path, Path]]) -> None:
    """Each verified blob into ``blobs/``; one already there is kept only if its content
    hashes to its name (a blob corrupted in place is replaced: import repairs a model)."""
    for source, blob in zip(sources, blobs, strict=True):
        dest = blob_dir / blob
        if dest.is_file():
            if sha256_file(dest) == blob.removeprefix("sha256-"):
                continue  # content-addressed: the same blob is already there, intact
            aside = stage / f"replaced-{blob}"  # corrupt in place: repaired, put back
            os.rename(dest, aside)              # if the import fails after all
            replaced.append((dest, aside))
        os.chmod(source, 0o644)
        if owner:
            os.chown(source, owner.uid, owner.gid)
        os.rename(source, dest)
        added.append(dest)


def import_file(bundle: Path, models_dir: Path, owner: Owner | None = None,
                progress: Progress = _quiet) -> str:
    """Verify ``bundle`` whole, then install its model into ``models_dir``; returns its name.

    A corrupt or truncated bundle raises BundleError and leaves ``models_dir`` as it was.
    """
    try:
        total = bundle.stat().st_size
        raw = bundle.open("rb")
    except OSError as exc:
        raise BundleError(f"{bundle}: {exc.strerror}") from None
    created: list[Path] = []
    added: list[Path] = []
    replaced: list[tuple[Path, Path]] = []
    stage: Path | None = None
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        progress(min(done, total - 1), total, "verifying")

    try:
        _makedirs(models_dir, owner, created)
        remove_stale_staging(models_dir)
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=models_dir))
        received: dict[str, tuple[Path, int, str]] = {}
        document = None
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(
                _Counting(raw, tick))  # type: ignore[arg-type]  # read() is all it uses
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for kind, member, path, size, digest in _staged(tar, stage):
                    if member.name in received:
                        raise BundleError(f"{member.name} appears twice in the bundle")
                    if kind == "blob":
                        expected = BLOB_RE.match(member.name.rsplit("/", 1)[-1])
                        assert expected
                        if expected.group(1) != digest:
                            raise BundleError(f"{member.name}: its content hashes to"
                                              f" sha256:{digest[:12]}…: the bundle is corrupt")
                    if kind == "bundle":
                        document = _bundle_document(path.read_bytes())
                    else:
                        received[member.name] = (path, size, digest)
        except (zstandard.ZstdError, tarfile.TarError, EOFError, UnicodeError) as exc:
            raise BundleError(f"{bundle}: truncated or corrupt ({exc})") from None
        manifest_rel, name, blobs = _verify(received, document)
        # Everything checked out: blobs first, the manifest last (Ollama sees a model whole).
        blob_dir = models_dir / "blobs"
        _makedirs(blob_dir, owner, created)
        _install_blobs([received[f"{PREFIX}/blobs/{blob}"][0] for blob in blobs], blobs,
                       blob_dir, stage, owner, added, replaced)
        _fsync_dir(blob_dir)
        manifest_dest = models_dir / manifest_rel
        _makedirs(manifest_dest.parent, owner, created)
        source = received[f"{PREFIX}/{manifest_rel}"][0]
        os.chmod(source, 0o644)
        if owner:
            os.chown(source, owner.uid, owner.gid)
        os.replace(source, manifest_dest)
        _fsync_dir(manifest_dest.parent)
        progress(total, total, f"{name} installed")
        if replaced:
            log_repaired(name, [dest.name for dest, _ in replaced])
        return name
    except BaseException:
        for path in added:
            with contextlib.suppress(OSError):
                path.unlink()
        for dest, aside in replaced:
            with contextlib.suppress(OSError):
                os.rename(aside, dest)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty
        raise
    finally:
        raw.close()
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)


def log_repaired(name: str, blobs: list[str]) -> None:
    print(f"{name}: replaced {len(blobs)} corrupt blob(s): {', '.join(b[:19] for b in blobs)}",
          file=sys.stderr)


def remove_stale_staging(models_dir: Path) -> list[Path]:
    """Staging directories of imports whose process is gone (killed with SIGKILL, a power
    cut): partial data nobody will finish. Those of a live import are left alone."""
    removed = []
    for path in models_dir.glob(f"{STAGING_PREFIX}*"):
        pid = path.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if pid.isdigit() and psutil.pid_exists(int(pid)) or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


# --------------------------------------------------------------------------- the command

def engine_models_dir(engine: Any) -> Path:
    """Where the engine's Ollama reads models (``supervisor.names.models_dir``: OLLAMA_MODELS,
    else its user's ~/.ollama/models)."""
    return Path(names.models_dir(engine.environment, names.user_home(engine.user)))


def tree_owner(models_dir: Path) -> Owner:
    """The owner of the models directory, or of its nearest existing parent."""
    probe = models_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = probe.stat()
    return Owner(st.st_uid, st.st_gid)


MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown


def resolve_owner(spec: str) -> Owner:
    """``user[:group]`` (names or numbers) -> uid and gid; the user's group by default."""
    import grp
    import pwd

    user, _, group = spec.partition(":")
    for part in (user, group):
        if part.isdigit() and int(part) > MAX_ID:
            raise BundleError(f"{part}: not a user or group id (at most {MAX_ID})")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not user.isdigit():
            raise BundleError(f"no user {user!r} on this host (create it first)") from None
        uid, gid = int(user), int(user)
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise BundleError(f"no group {group!r} on this host") from None
    return Owner(uid, gid)


def _engine(args: Any) -> Any:
    from supervisor.config import load
    from supervisor.errors import ConfigError

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise BundleError("; ".join(exc.problems)) from None
    if args.engine:
        engine = next((e for e in config.engines if e.name == args.engine), None)
        if engine is None:
            raise BundleError(f"no engine named {args.engine!r} in {args.config}")
    else:
        engine = next((e for e in config.engines if e.kind == "ollama"), None)
        if engine is None:
            raise BundleError(f"no ollama engine in {args.config}: pass --models-dir")
    if engine.kind != "ollama":
        raise BundleError(f"{engine.name} is a {engine.kind} engine: bundles are Ollama models")
    return engine


def command(args: Any) -> int:
    """``llm-supervisorctl models export|import``. SIGTERM and SIGHUP (a dropped ssh session)
    end it like Ctrl-C: what it had written is removed, and it says so."""
    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _command(args)
    except (Interrupted, KeyboardInterrupt) as exc:
        what = str(exc) or "Ctrl-C"
        raise BundleError(f"interrupted by {what}: nothing was {args.verb}ed, what it had"
                          " written is removed") from None
    except OSError as exc:  # permissions, a full disk: already rolled back
        raise BundleError(_os_error(exc, args)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Interrupted(Exception):
    """A signal asked the command to stop."""


def _os_error(exc: OSError, args: Any) -> str:
    """The real place and cause: a staging or temporary path (gone by now) is named by the
    directory it was in."""
    where = str(exc.filename or "")
    if f"/{STAGING_PREFIX}" in where:  # a staging file: the models directory it was in
        where = where.split(f"/{STAGING_PREFIX}", 1)[0]
    elif where.rsplit("/", 1)[-1].startswith("."):  # export's temporary file: its directory
        where = where.rsplit("/", 1)[0]
    cause = exc.strerror or str(exc)
    return f"{where}: {cause}" if where else cause


def _command(args: Any) -> int:
    engine = None if args.models_dir else _engine(args)
    models_dir = Path(args.models_dir) if args.models_dir else engine_models_dir(engine)
    if args.verb == "export":
        progress = _quiet if args.quiet else progress_printer("export")
        if args.output == "-":
            export_stream(models_dir, args.model, sys.stdout.buffer, progress)
            return 0
        parts = manifest_parts(args.model)
        default = f"{parts[2]}-{parts[3]}.ollama.tar.zst"
        output = Path(args.output or default)
        if output.is_dir():  # -o DIR: the bundle goes into DIR
            output = output / default
        document = export_file(models_dir, args.model, output, progress)
        size = output.stat().st_size
        print(f"wrote {output}: {args.model}, {len(document['files'])} files,"
              f" {size / 2**30:.2f} GiB")
        return 0
    owner = None
    if args.owner:
        owner = resolve_owner(args.owner)
    elif engine is not None:
        owner = resolve_owner(f"{engine.user}:{engine.group}")
    else:  # --models-dir: whoever owns that tree (never silently root)
        owner = tree_owner(models_dir)
    progress = _quiet if args.quiet else progress_printer("import")
    name = import_file(Path(args.file), models_dir, owner, progress)
    print(f"imported {name} into {models_dir}" + (
        f" (owner {owner.uid}:{owner.gid})" if owner else ""))
    return 0
