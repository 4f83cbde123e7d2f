"""Model bundles as root on a tree the engine user owns: the hostile corpus, the engine
user's attacks on manifests, blobs and the staging directory, export's outputs, every
failure point of an import, and a property test over generated archives.

Run as root (CI, ``./dev/test``): the engine user is uid 4242, its files and symlinks are
given to it with ``lchown``, and a victim file outside the models directory is root's 0600.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hostile_bundles as hb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llm_supervisor.control import cli
from llm_supervisor.errors import BundleError
from llm_supervisor.tools.models import beneath, export, install
from llm_supervisor.tools.models.beneath import Owner
from llm_supervisor.tools.models.install import NotImported

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine user's attacks need"
                                " root to give files away (CI and ./dev/test run as root)")

ENGINE = Owner(4242, 4242)
OLD = hb.model(b"old weights " * 100)
NEW = hb.model(b"new weights " * 100)
SECRET = b"root's secret\n"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A models directory the engine user owns (one model in it), and root's victim."""
    home = tmp_path / "home"
    models = home / ".ollama" / "models"
    OLD.install(models)
    for path in [home, *home.rglob("*")]:
        os.lchown(path, ENGINE.uid, ENGINE.gid)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    victim = tmp_path / "etc"
    victim.mkdir()
    (victim / "victim.conf").write_bytes(SECRET)
    (victim / "victim.conf").chmod(0o600)
    yield {"models": models, "victim": victim, "tmp": tmp_path}


def owned(path: Path) -> Path:
    """What the engine user made: given to it, as if it had made it."""
    os.lchown(path, ENGINE.uid, ENGINE.gid)
    return path


def victim_intact(victim: Path) -> None:
    assert hb.tree(victim) == {"victim.conf": ("file", SECRET, 0, 0, 0o600)}


def write(tmp: Path, data: bytes, name: str = "b.tar.zst") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def refused(bundle: Path, models: Path, match: str) -> NotImported:
    before = hb.tree(models)
    with pytest.raises(NotImported) as failed:
        install.import_file(bundle, models, ENGINE)
    assert failed.value.state == f"{models} is as it was", failed.value.state
    assert isinstance(failed.value.cause, BundleError), failed.value.cause
    import re
    assert re.search(match, str(failed.value.cause)), str(failed.value.cause)
    assert hb.tree(models) == before
    return failed.value


# --------------------------------------------------------------------------- the corpus

@pytest.mark.parametrize("case", hb.corpus(), ids=lambda c: c.name)
def test_every_hostile_bundle_is_refused_and_the_tree_is_unchanged(host, case):
    refused(write(host["tmp"], case.data(NEW)), host["models"], case.refusal)
    victim_intact(host["victim"])


def test_the_honest_bundle_of_the_corpus_is_accepted(host):
    """The corpus changes one thing each: without it, the bundle goes in."""
    imported = install.import_file(write(host["tmp"], hb.forge(NEW.honest())), host["models"],
                                 ENGINE)
    assert imported.name == hb.NAME and imported.replaced == \
        hashlib.sha256(OLD.manifest).hexdigest()
    assert (host["models"] / hb.MANIFEST.removeprefix("models/")).read_bytes() == NEW.manifest


def test_a_bomb_from_a_pipe_stops_within_the_expansion_budget(host, monkeypatch):
    """From stdin the bundle's size is unknown: the bomb is stopped as it expands, having
    written at most the slack plus EXPANSION times what was read."""
    written = []
    real = beneath.write_all

    def counting(fd: int, data: Any, where: str) -> None:
        written.append(len(data))
        real(fd, data, where)

    monkeypatch.setattr(beneath, "write_all", counting)
    data = hb.bomb(NEW, 172_000_000)
    with pytest.raises(NotImported) as failed:
        install.import_stream(io.BytesIO(data), None, "stdin", host["models"], ENGINE)
    assert "expands" in str(failed.value.cause)
    assert sum(written) <= hb.bundle.EXPANSION_SLACK + hb.bundle.EXPANSION * len(data)
    assert not list(host["models"].rglob(".llm-supervisor-import-*"))


def test_a_model_larger_than_the_free_space_is_refused_before_a_byte(host, monkeypatch):
    monkeypatch.setattr(beneath.Dir, "free", lambda self: 100)
    written = []
    monkeypatch.setattr(beneath, "write_all", lambda fd, data, where: written.append(data))
    failed = refused(write(host["tmp"], hb.forge(NEW.honest())), host["models"], "free")
    assert str(host["models"] / "blobs") in str(failed.cause) and written == []


# --------------------------------------------------------------------------- the engine user's attacks

def test_a_symlinked_model_directory_is_refused_and_root_writes_nothing_through_it(host):
    """The issue's escalation: ``manifests/.../library/<name>`` -> a root directory, and a
    bundle whose tag names the victim."""
    library = host["models"] / "manifests/registry.ollama.ai/library"
    (library / "victim").symlink_to(host["victim"])
    owned(library / "victim")
    evil = hb.Model(NEW.manifest, NEW.blobs)
    members = [hb.Member(hb.MANIFEST.rsplit("/", 2)[0] + "/victim/victim.conf", NEW.manifest),
               *NEW.members()[1:]]
    listing = NEW.listing(members, model="victim:victim.conf")
    failed = refused(write(host["tmp"], hb.forge([*members, listing])), host["models"],
                     "a symlink inside the models directory")
    assert str(library / "victim") in str(failed.cause)
    victim_intact(host["victim"])
    assert evil.blobs  # (the same blobs: only the place differs)


@pytest.mark.parametrize("where", ["manifests", "manifests/registry.ollama.ai",
                                   "manifests/registry.ollama.ai/library/qwen2.5", "blobs"])
def test_any_symlinked_directory_under_the_root_is_refused(host, where):
    path = host["models"] / where
    moved = path.with_name(path.name + ".real")
    path.rename(moved)
    path.symlink_to(host["victim"])
    owned(path)
    failed = refused(write(host["tmp"], hb.forge(NEW.honest())), host["models"], "symlink")
    assert str(path) in str(failed.cause)
    victim_intact(host["victim"])


def test_a_symlinked_manifest_is_refused_and_its_target_untouched(host):
    tag = host["models"] / hb.MANIFEST.removeprefix("models/")
    tag.unlink()
    tag.symlink_to(host["victim"] / "victim.conf")
    owned(tag)
    refused(write(host["tmp"], hb.forge(NEW.honest())), host["models"], "symlink")
    victim_intact(host["victim"])


def test_a_symlinked_blob_is_refused(host):
    hex_ = list(NEW.blobs)[1]
    blob = host["models"] / "blobs" / f"sha256-{hex_}"
    blob.symlink_to(host["victim"] / "victim.conf")
    owned(blob)
    refused(write(host["tmp"], hb.forge(NEW.honest())), host["models"], "symlink")
    victim_intact(host["victim"])


def test_a_fifo_where_a_blob_goes_is_refused_without_hanging(host):
    blob = host["models"] / "blobs" / f"sha256-{list(NEW.blobs)[1]}"
    os.mkfifo(blob)
    owned(blob)
    refused(write(host["tmp"], hb.forge(NEW.honest())), host["models"], "FIFO")


def test_a_hard_link_to_roots_file_is_replaced_never_written_or_given(host):
    """A blob that is a hard link to a file of root's (possible where
    fs.protected_hardlinks is off) is replaced by the verified copy: the other file keeps
    its owner, mode and content."""
    hex_ = list(NEW.blobs)[1]
    victim = host["victim"] / "victim.conf"
    victim.write_bytes(NEW.blobs[hex_])  # even with the right content
    os.link(victim, host["models"] / "blobs" / f"sha256-{hex_}")
    imported = install.import_file(write(host["tmp"], hb.forge(NEW.honest())), host["models"],
                                 ENGINE)
    assert f"sha256-{hex_}" in imported.repaired
    st = victim.stat()
    assert (st.st_uid, st.st_mode & 0o777, st.st_nlink) == (0, 0o600, 1)
    blob = (host["models"] / "blobs" / f"sha256-{hex_}").stat()
    assert (blob.st_uid, blob.st_mode & 0o777) == (ENGINE.uid, 0o644)


def test_export_never_reads_through_a_symlink_or_out_a_hard_link(host, capsysbinary):
    models = host["models"]
    hex_ = list(OLD.blobs)[1]
    blob = models / "blobs" / f"sha256-{hex_}"
    blob.unlink()
    os.link(host["victim"] / "victim.conf", blob)  # root's secret, under the blob's name
    out = host["tmp"] / "out.tar.zst"
    with pytest.raises(BundleError, match="corrupt"):
        export.export_file(models, hb.NAME, out)
    assert not out.exists()
    blob.unlink()
    blob.symlink_to(host["victim"] / "victim.conf")
    owned(blob)
    with pytest.raises(BundleError, match="symlink"):
        export.export_stream(models, hb.NAME, io.BytesIO())


def test_the_staging_directory_swapped_mid_import_changes_nothing_outside(host):
    """The engine user owns blobs/: mid-import it moves the staging directory away and puts
    a symlink to root's directory in its place. The import writes through its descriptor,
    never the path: the victim is untouched, the model lands whole."""
    blobs = host["models"] / "blobs"
    swapped = []

    def progress(done: int, total: int, label: str) -> None:
        stage = next(blobs.glob(".llm-supervisor-import-*"), None)
        if stage is not None and not swapped and not stage.is_symlink():
            stage.rename(host["tmp"] / "moved-stage")
            stage.symlink_to(host["victim"])
            owned(stage)
            swapped.append(stage)

    data = hb.forge(NEW.honest())
    install.import_file(write(host["tmp"], data), host["models"], ENGINE, progress)
    assert swapped
    victim_intact(host["victim"])
    for hex_, content in NEW.blobs.items():
        assert (blobs / f"sha256-{hex_}").read_bytes() == content


def test_a_symlink_on_the_way_to_the_root_is_followed_only_if_roots(host):
    models, tmp = host["models"], host["tmp"]
    bundle = write(tmp, hb.forge(NEW.honest()))
    dot = models.parent
    dot.rename(tmp / "dot-real")
    dot.symlink_to(host["victim"])  # the engine user's .ollama -> root's directory
    owned(dot)
    with pytest.raises(NotImported) as failed:
        install.import_file(bundle, models, ENGINE)
    assert "symlink owned by uid 4242" in str(failed.value.cause)
    victim_intact(host["victim"])
    dot.unlink()
    dot.symlink_to(tmp / "dot-real")  # root's own: an admin's relocation
    os.lchown(dot.parent, 0, 0)       # in a directory root owns
    assert install.import_file(bundle, models, ENGINE).name == hb.NAME


def test_a_manifests_temporary_file_left_by_a_killed_import_is_swept(host):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    folder = host["models"] / hb.MANIFEST.removeprefix("models/").rsplit("/", 1)[0]
    left = folder / f".llm-supervisor-import-{dead}-abcd"
    left.write_bytes(b"{}")
    install.import_file(write(host["tmp"], hb.forge(NEW.honest())), host["models"], ENGINE)
    assert not left.exists()


# --------------------------------------------------------------------------- what lands

def test_an_intact_blob_with_the_wrong_owner_or_mode_is_fixed(host):
    hex_ = list(OLD.blobs)[0]  # the config: shared by OLD and NEW
    assert hex_ in NEW.blobs
    blob = host["models"] / "blobs" / f"sha256-{hex_}"
    os.chown(blob, 0, 0)
    blob.chmod(0o600)
    imported = install.import_file(write(host["tmp"], hb.forge(NEW.honest())), host["models"],
                                 ENGINE)
    assert imported.repaired == [blob.name]
    st = blob.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (ENGINE.uid, ENGINE.gid, 0o644)


def test_replacing_another_version_says_which(host, capsys):
    code = cli.cli(["models", "import", str(write(host["tmp"], hb.forge(NEW.honest()))),
                    "--models-dir", str(host["models"]), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    old = hashlib.sha256(OLD.manifest).hexdigest()
    assert f"replaced another version of {hb.NAME} (manifest sha256:{old[:12]}…)" in out
    assert f"owner {ENGINE.uid}:{ENGINE.gid}" in out  # --models-dir: the tree's owner


def test_blobs_on_another_filesystem_import(host):
    """blobs/ is its own mount (a big disk): staging inside blobs/ keeps every rename on
    one filesystem."""
    blobs = host["models"] / "blobs"
    saved = host["tmp"] / "saved"
    blobs.rename(saved)
    blobs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(blobs)], check=True)
    try:
        os.chown(blobs, ENGINE.uid, ENGINE.gid)
        imported = install.import_file(write(host["tmp"], hb.forge(NEW.honest())),
                                     host["models"], ENGINE)
        assert imported.name == hb.NAME
        assert sorted(p.name for p in blobs.iterdir()) == sorted(
            f"sha256-{h}" for h in NEW.blobs)
    finally:
        subprocess.run(["umount", "-l", str(blobs)], check=True)


def test_a_full_disk_names_the_directory_and_leaves_the_tree(host):
    blobs = host["models"] / "blobs"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(blobs)], check=True)
    try:
        os.chown(blobs, ENGINE.uid, ENGINE.gid)
        big = hb.model(os.urandom(200_000))
        failed = refused(write(host["tmp"], hb.forge(big.honest())), host["models"],
                         "No space left on device|free")
        assert str(blobs) in str(failed.cause)
    finally:
        subprocess.run(["umount", "-l", str(blobs)], check=True)


# --------------------------------------------------------------------------- the command's lines

def test_owner_errors_are_lines(host, capsys):
    bundle = str(write(host["tmp"], hb.forge(NEW.honest())))
    for owner, words in (("²", "no user '²'"), ("1:²", "no group '²'"),
                         ("99999999999", "not a user or group id"), ("", "no user ''")):
        code = cli.cli(["models", "import", bundle, "--models-dir", str(host["models"]),
                        "--owner", owner, "-q"])
        err = capsys.readouterr().err
        assert code == 1 and words in err and "Traceback" not in err, (owner, err)


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", "from llm_supervisor.control import cli;"
                           " raise SystemExit(cli.cli())", *args],
                          input=stdin, capture_output=True, timeout=60)


def test_import_reads_stdin_and_refuses_what_is_no_bundle_before_any_progress(host):
    done = _run("models", "import", "-", "--models-dir", str(host["models"]),
                stdin=hb.forge(NEW.honest()))
    assert done.returncode == 0, done.stderr
    assert b"imported qwen2.5:7b-instruct" in done.stdout
    passwd = _run("models", "import", "/etc/passwd", "--models-dir", str(host["models"]))
    assert passwd.returncode == 1
    assert passwd.stderr.decode().splitlines() == [
        "llm-supervisorctl: /etc/passwd: not a model bundle (not zstd-compressed: a bundle"
        " is what `llm-supervisorctl models export` writes): nothing was imported,"
        f" {host['models']} is as it was"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_exit_128_plus_their_number(host, sig, monkeypatch, capsys):
    bundle = str(write(host["tmp"], hb.forge(NEW.honest())))
    before = hb.tree(host["models"])

    def progress(verb: str, what: str) -> Any:
        return lambda done, total, label: os.kill(os.getpid(), sig)

    from llm_supervisor.tools.models import cli as command
    monkeypatch.setattr(command, "progress_printer", progress)
    code = cli.cli(["models", "import", bundle, "--models-dir", str(host["models"])])
    err = capsys.readouterr().err
    assert code == 128 + sig, err
    assert f"interrupted by {signal.Signals(sig).name}: nothing was imported" in err
    assert hb.tree(host["models"]) == before


def test_a_closed_stdout_after_the_import_says_it_is_installed(host, monkeypatch, capsys):
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    code = cli.cli(["models", "import", str(write(host["tmp"], hb.forge(NEW.honest()))),
                    "--models-dir", str(host["models"]), "-q"])
    err = capsys.readouterr().err
    assert code == 141
    assert f"{hb.NAME} is installed in {host['models']}, but stdout was closed" in err
    assert (host["models"] / hb.MANIFEST.removeprefix("models/")).read_bytes() == NEW.manifest


# --------------------------------------------------------------------------- export's output

def _export(host: dict[str, Path], output: str) -> tuple[int, str]:
    code = _run("models", "export", hb.NAME, "--models-dir", str(host["models"]), "-o",
                output, "-q")
    return code.returncode, code.stderr.decode()


def test_export_writes_only_regular_files(host):
    tmp = host["tmp"]
    device = tmp / "null"
    os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a /dev/null of its own
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    link = tmp / "link"
    link.symlink_to(host["victim"] / "victim.conf")
    for path, kind in ((device, "a character device"), (fifo, "a FIFO"), (link, "a symlink")):
        code, err = _export(host, str(path))
        assert code == 1 and f"{path}: {kind}: export writes only a regular file" in err, err
    assert os.stat(device, follow_symlinks=False).st_mode & 0o170000 == 0o020000
    assert fifo.is_fifo() and link.is_symlink()
    victim_intact(host["victim"])
    code, err = _export(host, str(tmp / "newdir") + "/")
    assert code == 1 and "newdir/: no such directory" in err and not (tmp / "newdir").exists()
    code, err = _export(host, str(tmp / "nodir" / "x.tar.zst"))
    assert code == 1 and "nodir: no such directory" in err
    (tmp / "into").mkdir()
    assert _export(host, str(tmp / "into"))[0] == 0
    assert (tmp / "into" / "qwen2.5-7b-instruct.ollama.tar.zst").is_file()
    regular = tmp / "again.tar.zst"
    regular.write_bytes(b"an older bundle")
    inode = regular.stat().st_ino
    assert _export(host, str(regular))[0] == 0
    assert regular.stat().st_ino != inode and regular.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []


def test_export_to_a_closed_pipe_exits_141(host):
    proc = subprocess.Popen([sys.executable, "-c", "from llm_supervisor.control import cli;"
                             " raise SystemExit(cli.cli())", "models", "export", hb.NAME,
                             "--models-dir", str(host["models"]), "-o", "-", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert b"stdout was closed: the bundle written to stdout is incomplete" in err


# --------------------------------------------------------------------------- failure points

def _attempt(host: dict[str, Path], bundle: Path, faults: hb.Faults, monkeypatch: Any,
             capsys: Any) -> tuple[int, str, str]:
    from llm_supervisor.tools.models import format as format_
    for module in (beneath, export, install, format_):
        monkeypatch.setattr(module, "os", faults)
    try:
        code = cli.cli(["models", "import", str(bundle), "--models-dir", str(host["models"]),
                        "-q"])
    finally:
        monkeypatch.undo()
    out, err = capsys.readouterr()
    return code, out, err


def test_every_failure_point_leaves_the_old_version_or_the_new_one(host, monkeypatch, capsys,
                                                                   tmp_path):
    """Each disk step of an import (about 40), failing with EIO, with ENOSPC, or followed
    by SIGTERM: the models directory afterwards is exactly the old tree or exactly the new
    one, never anything between, and the line says which."""
    models = host["models"]
    bundle = write(host["tmp"], hb.forge(NEW.honest()))
    old = hb.tree(models)
    clean = hb.Faults()
    assert _attempt(host, bundle, clean, monkeypatch, capsys)[0] == 0
    new = hb.tree(models)
    assert new != old
    outcomes: dict[tuple[str, str], int] = {}
    for at in range(clean.count):
        for how in ("EIO", "ENOSPC", "SIGTERM"):
            hb.restore(models, old, ENGINE)
            faults = hb.Faults(at, how)
            code, out, err = _attempt(host, bundle, faults, monkeypatch, capsys)
            after = hb.tree(models)
            step = f"{at}:{faults.calls[at] if at < len(faults.calls) else '?'}"
            staging = sorted(p for p in after if ".llm-supervisor-import-" in p)
            if staging:  # the cleanup itself failed: said, and the next import removes it
                assert f"the staging directory {models}/{staging[0]} is left" in err, \
                    (step, how, err)
                after = {k: v for k, v in after.items() if k not in staging}
            assert after in (old, new), (step, how, err)
            if after == old:
                assert f"nothing was imported, {models} is as it was" in err, (step, how, err)
                assert code == (143 if how == "SIGTERM" else 1), (step, how, code, err)
                outcomes[(how, "old")] = outcomes.get((how, "old"), 0) + 1
            else:
                assert "imported" in out or f"{hb.NAME} is installed in {models}" in err, \
                    (step, how, out, err)
                outcomes[(how, "new")] = outcomes.get((how, "new"), 0) + 1
    assert outcomes[("EIO", "old")] > 10 and outcomes[("SIGTERM", "new")] >= 1
    print(outcomes)


# --------------------------------------------------------------------------- generated archives

NAMES = st.sampled_from([
    hb.MANIFEST, *(f"models/blobs/sha256-{h}" for h in NEW.blobs), "llm-supervisor-model.json",
    "models/blobs/sha256-" + "0" * 64, "models/../../etc/x", "/etc/x", "models/blobs",
    "models/manifests/registry.ollama.ai/library/qwen2.5/..", hb.MANIFEST + "\n", "x"])
TYPES = st.sampled_from([tarfile.REGTYPE] * 6 + [tarfile.SYMTYPE, tarfile.LNKTYPE,
                                                 tarfile.DIRTYPE, tarfile.FIFOTYPE,
                                                 tarfile.CHRTYPE])


@st.composite
def archives(draw: Any) -> bytes:
    """An honest bundle, or one with members dropped, repeated, reordered or swapped for
    generated ones (names, types, links, sizes)."""
    members = list(NEW.honest())
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "repeat", "swap", "insert", "resize"]))
        if not members:
            break
        i = draw(st.integers(0, len(members) - 1))
        if action == "drop":
            members.pop(i)
        elif action == "repeat":
            members.insert(draw(st.integers(0, len(members))), members[i])
        elif action == "swap":
            j = draw(st.integers(0, len(members) - 1))
            members[i], members[j] = members[j], members[i]
        elif action == "resize":
            members[i] = hb.Member(members[i].name, members[i].data[:draw(st.integers(
                0, len(members[i].data)))])
        else:
            members.insert(i, hb.Member(draw(NAMES), draw(st.binary(max_size=64)),
                                        draw(TYPES), link=draw(st.sampled_from(
                                            ["", "/etc/shadow", "../../x"]))))
    return hb.forge(members)


@given(archives())
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
def test_generated_archives_leave_the_old_state_or_the_new_and_nothing_outside(tmp_path,
                                                                                 data):
    root = tmp_path / "gen"
    if root.exists():
        import shutil
        shutil.rmtree(root)
    models, outside = root / "models", root / "outside"
    OLD.install(models)
    outside.mkdir()
    (outside / "file").write_bytes(SECRET)
    old, outside_before = hb.tree(models), hb.tree(outside)
    try:
        install.import_stream(io.BytesIO(data), len(data), "generated", models, ENGINE)
        installed = True
    except NotImported:
        installed = False
    event("installed" if installed else "refused")
    after = hb.tree(models)
    assert hb.tree(outside) == outside_before
    if not installed:
        assert after == old
    else:
        assert (models / hb.MANIFEST.removeprefix("models/")).read_bytes() == NEW.manifest
        for hex_, content in NEW.blobs.items():
            assert (models / "blobs" / f"sha256-{hex_}").read_bytes() == content
        assert not [p for p in after if ".llm-supervisor-import-" in p]


def test_progress_names_the_model_its_rate_and_time_left_and_says_100_once():
    """What an admin reads while a model moves: the model, the rate, the time left; shares
    rounded down, so the one 100 % line is the last, with the time it took."""
    from llm_supervisor.tools.models.cli import progress_printer

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream in (io.StringIO(), Tty()):
        now = [0.0]
        report = progress_printer("exporting", "qwen2.5:7b-instruct", stream,
                                  clock=lambda now=now: now[0])
        total = 4 << 30
        for step in range(1, 400):
            now[0] = step * 0.05
            report(min(total * step // 400, total - 1), total, "sha256-0123abcd")
        now[0] = 20.0
        report(total, total, "done")
        lines = [x for x in stream.getvalue().replace("\r", "\n").split("\n") if x.strip()]
        assert all(x.startswith("exporting qwen2.5:7b-instruct: ") for x in lines), lines
        assert not any("sha256" in x for x in lines)
        assert not [x for x in lines if "100%" in x], lines  # 99.9 % is 99 %
        assert lines[-1] == "exporting qwen2.5:7b-instruct: 4.00 GiB in 20s (204.8 MiB/s)"
        assert [x for x in lines if " in 20s " in x] == [lines[-1]]  # one final line
        assert "/s, " in lines[1] and " left" in lines[1] and "(" in lines[1], lines[1]
        if isinstance(stream, Tty):
            assert "\x1b[K" in stream.getvalue()  # rewritten in place
        else:
            assert len(lines) <= 11  # a line per 10 % and the last
