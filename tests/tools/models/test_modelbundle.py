"""Offline model bundles (`llm-supervisorctl models export|import`): round trip with digests and
ownership, and corrupt or truncated bundles refused with nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from llm_supervisor.control import cli
from llm_supervisor.errors import BundleError
from llm_supervisor.tools.models import cli as models
from llm_supervisor.tools.models import export, install
from llm_supervisor.tools.models import format as modelbundle
from llm_supervisor.tools.models.beneath import Owner
from llm_supervisor.tools.models.install import NotImported

# root (CI, ./dev/test) can give files away; anyone else can still give them to themselves
OWNER = Owner(4242, 4343) if os.geteuid() == 0 else Owner(os.geteuid(), os.getegid())


def _blob(models: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (models / "blobs").mkdir(parents=True, exist_ok=True)
    (models / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
            "size": len(data)}


def make_model(models: Path, name: str = "qwen2.5:7b-instruct", weights: int = 3 * 2**20 + 7
               ) -> dict[str, Path]:
    """An Ollama model laid out as Ollama does: a manifest naming a config and its layers."""
    layers = [_blob(models, os.urandom(weights)),          # crosses the 1 MiB copy chunks
              _blob(models, b'{"temperature": 0.7}'),
              _blob(models, b"You are a helpful assistant.")]
    config = _blob(models, json.dumps({"model_format": "gguf"}).encode())
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": config, "layers": layers}
    path = models / modelbundle.manifest_relpath(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return {"manifest": path}


def tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file and directory under root with its content (files) and owner."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (path.read_bytes() if path.is_file() else b"",
                                            st.st_uid, st.st_gid)
    return out


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    source = tmp_path / "a" / "models"
    make_model(source)
    make_model(source, "library/gemma3:4b", weights=1000)  # a second model, not exported
    out = tmp_path / "qwen.tar.zst"
    _, document = export.export_file(source, "qwen2.5:7b-instruct", out)
    assert len(document["files"]) == 5  # manifest + config + 3 layers
    return out


def test_model_names_map_to_ollamas_layout():
    assert modelbundle.manifest_relpath("qwen2.5:7b-instruct") == \
        "manifests/registry.ollama.ai/library/qwen2.5/7b-instruct"
    assert modelbundle.manifest_relpath("llama3.1") == \
        "manifests/registry.ollama.ai/library/llama3.1/latest"
    assert modelbundle.manifest_relpath("someone/model:q4") == \
        "manifests/registry.ollama.ai/someone/model/q4"
    assert modelbundle.manifest_relpath("example.com:5000/ns/m:v1") == \
        "manifests/example.com:5000/ns/m/v1"
    for bad in ("../etc:passwd", "a/b/c/d:e", "x:../y", ""):
        with pytest.raises(BundleError):
            modelbundle.manifest_relpath(bad)


def test_round_trip_between_two_models_dirs(tmp_path, bundle):
    source = tmp_path / "a" / "models"
    target = tmp_path / "b" / "models"   # does not exist yet: created with the owner
    progress = []
    name = install.import_file(bundle, target, OWNER,
                             lambda done, total, label: progress.append((done, total))).name
    assert name == "qwen2.5:7b-instruct"
    assert progress and progress[-1][0] == progress[-1][1] == bundle.stat().st_size

    manifest_rel = "manifests/registry.ollama.ai/library/qwen2.5/7b-instruct"
    manifest = json.loads((target / manifest_rel).read_text())
    digests = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    for digest in digests:
        blob = target / "blobs" / digest.replace(":", "-")
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest.split(":")[1]
        assert blob.read_bytes() == (source / "blobs" / blob.name).read_bytes()
    got = tree(target)
    assert set(got) == {"blobs", *(f"blobs/{d.replace(':', '-')}" for d in digests),
                        "manifests", "manifests/registry.ollama.ai",
                        "manifests/registry.ollama.ai/library",
                        "manifests/registry.ollama.ai/library/qwen2.5", manifest_rel}
    assert all((uid, gid) == (OWNER.uid, OWNER.gid) for _, uid, gid in got.values())
    assert (target.stat().st_uid, target.stat().st_gid) == (OWNER.uid, OWNER.gid)
    assert oct((target / manifest_rel).stat().st_mode & 0o777) == "0o644"
    assert not list(target.rglob(".llm-supervisor-import-*"))  # staging removed

    # importing again changes nothing and succeeds (content-addressed blobs are kept)
    before = tree(target)
    assert install.import_file(bundle, target, OWNER).name == name
    assert tree(target) == before


def _refused(bundle: Path, target: Path, match: str) -> None:
    before = tree(target)
    with pytest.raises(NotImported) as failed:
        install.import_file(bundle, target, OWNER)
    assert isinstance(failed.value.cause, BundleError)
    assert re.search(match, str(failed.value.cause)), failed.value.cause
    assert failed.value.state == f"{target} is as it was"
    assert tree(target) == before, "the import left something behind"


@pytest.mark.parametrize("where", [0.02, 0.3, 0.5, 0.9, 0.9995])
def test_a_flipped_byte_is_refused_and_nothing_lands(tmp_path, bundle, where):
    target = tmp_path / "b" / "models"
    make_model(target, "gemma3:4b", weights=100)  # a models dir already in use
    data = bytearray(bundle.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    bad = tmp_path / "flipped.tar.zst"
    bad.write_bytes(bytes(data))
    _refused(bad, target, "corrupt|truncated|unexpected|mismatch")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_bundle_is_refused_and_nothing_lands(tmp_path, bundle, keep):
    target = tmp_path / "b" / "models"
    make_model(target, "gemma3:4b", weights=100)
    data = bundle.read_bytes()
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(data[: int(len(data) * keep)])
    _refused(cut, target, "truncated|corrupt")


def test_a_fresh_models_dir_is_not_left_behind(tmp_path, bundle):
    target = tmp_path / "fresh" / "models"
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(bundle.read_bytes()[:5000])
    with pytest.raises(NotImported):
        install.import_file(cut, target, OWNER)
    assert not target.exists()


def test_export_refuses_a_corrupt_or_incomplete_source(tmp_path):
    source = tmp_path / "models"
    make_model(source)
    blob = max((source / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = tmp_path / "x.tar.zst"
    with pytest.raises(BundleError, match="corrupt"):
        export.export_file(source, "qwen2.5:7b-instruct", out)
    assert not out.exists() and not list(tmp_path.glob(".x.tar.zst.*"))
    blob.unlink()
    with pytest.raises(BundleError, match="blobs missing"):
        export.export_file(source, "qwen2.5:7b-instruct", out)
    with pytest.raises(BundleError, match="no model"):
        export.export_file(source, "nothere:1b", out)


def test_a_bundle_that_smuggles_a_path_is_refused(tmp_path):
    import io
    import tarfile

    import zstandard

    evil = tmp_path / "evil.tar.zst"
    with evil.open("wb") as fh, zstandard.ZstdCompressor().stream_writer(fh) as z, \
            tarfile.open(fileobj=z, mode="w|") as tar:
        info = tarfile.TarInfo("models/../../etc/cron.d/x")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    _refused(evil, tmp_path / "models", "unexpected member")
    assert not (tmp_path / "etc").exists()


def test_cli_export_and_import(tmp_path, capsys):
    source = tmp_path / "a"
    make_model(source)
    out = tmp_path / "m.tar.zst"
    assert cli.cli(["models", "export", "qwen2.5:7b-instruct", "--models-dir", str(source),
                    "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    target = tmp_path / "b"
    assert cli.cli(["models", "import", str(out), "--models-dir", str(target),
                    "--owner", f"{OWNER.uid}:{OWNER.gid}"]) == 0
    captured = capsys.readouterr()
    assert "imported qwen2.5:7b-instruct" in captured.out
    assert "importing m.tar.zst: " in captured.err  # progress on stderr, the bundle named
    assert (target / "manifests/registry.ollama.ai/library/qwen2.5/7b-instruct").is_file()
    # --json: one document on stdout, the same outcome
    assert cli.cli(["models", "export", "qwen2.5:7b-instruct", "--models-dir", str(source),
                    "-o", str(tmp_path / "j.tar.zst"), "-q", "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["exported"] == "qwen2.5:7b-instruct" and exported["bytes"] > 0
    assert exported["file"] == str(tmp_path / "j.tar.zst") and exported["files"]
    assert cli.cli(["models", "import", str(tmp_path / "j.tar.zst"), "--models-dir",
                    str(target), "--owner", f"{OWNER.uid}:{OWNER.gid}", "-q", "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["imported"] == "qwen2.5:7b-instruct" and imported["models_dir"] == \
        str(target) and imported["replaced"] is None and imported["repaired"] == []
    out.write_bytes(out.read_bytes()[:-100])
    assert cli.cli(["models", "import", str(out), "--models-dir", str(tmp_path / "c"), "-q"]) == 1
    assert "truncated" in capsys.readouterr().err


def test_engine_models_dir(tmp_path):
    from llm_supervisor import config

    cfg = config.loads('[[engine]]\nname = "a"\nexec = "/bin/true"\n'
                       '[[engine]]\nname = "b"\nexec = "/bin/true"\nlisten = "127.0.0.1:11435"\n'
                       'environment = { OLLAMA_MODELS = "/srv/models" }\n', "/x.toml")
    a, b = cfg.engines
    assert models.engine_models_dir(a) == Path("/usr/share/ollama/.ollama/models")
    assert models.engine_models_dir(b) == Path("/srv/models")


def test_reimporting_repairs_a_blob_corrupted_in_place(tmp_path, bundle):
    """Same size, wrong bytes: re-importing is how an operator repairs a model offline."""
    target = tmp_path / "b" / "models"
    install.import_file(bundle, target, OWNER)
    good = tree(target)
    blob = max((target / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupted in place: the size is unchanged
    blob.write_bytes(bytes(data))
    imported = install.import_file(bundle, target, OWNER)
    assert imported.repaired == [blob.name] and imported.replaced is None
    assert tree(target) == good
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name.removeprefix("sha256-")


def test_export_into_a_directory_and_errors_name_the_real_place(tmp_path, capsys):
    source = tmp_path / "a"
    make_model(source)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.cli(["models", "export", "qwen2.5:7b-instruct", "--models-dir", str(source),
                    "-o", str(out)]) == 0
    assert (out / "qwen2.5-7b-instruct.ollama.tar.zst").is_file()
    assert not list(tmp_path.glob("*.tar.zst")) and not list(tmp_path.glob(".*"))


def test_a_stale_staging_directory_of_a_killed_import_is_removed(tmp_path, bundle):
    import subprocess
    import sys

    target = tmp_path / "b" / "models"
    target.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (target / "blobs").mkdir()
    stale = target / "blobs" / f"{modelbundle.STAGING_PREFIX}{dead}-abc"
    stale.mkdir()
    (stale / "00001").write_bytes(b"partial data")
    (stale / "link").symlink_to("/etc")  # removed, never followed
    older = target / f"{modelbundle.STAGING_PREFIX}{dead}-0a"  # where older versions staged
    older.mkdir()
    live = target / "blobs" / f"{modelbundle.STAGING_PREFIX}{os.getpid()}-def"  # a live one
    live.mkdir()
    install.import_file(bundle, target, OWNER)
    assert not stale.exists() and not older.exists() and live.exists()
    assert Path("/etc/passwd").exists()


def test_sigterm_mid_import_leaves_nothing(tmp_path):
    """A real process, killed with SIGTERM while it copies a blob: it says so and leaves the
    models directory as it was (no staging directory, no blob)."""
    import signal
    import subprocess
    import sys
    import time

    source = tmp_path / "a"
    make_model(source, weights=96 * 2**20)  # long enough to be caught mid-copy
    out = tmp_path / "big.tar.zst"
    export.export_file(source, "qwen2.5:7b-instruct", out)
    target = tmp_path / "b"
    make_model(target, "gemma3:4b", weights=100)
    before = tree(target)
    proc = subprocess.Popen([sys.executable, "-c", "from llm_supervisor.control import cli;"
                             " raise SystemExit(cli.cli())", "models", "import", str(out),
                             "--models-dir", str(target), "--owner",
                             f"{OWNER.uid}:{OWNER.gid}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list(target.glob(f"blobs/{modelbundle.STAGING_PREFIX}*/*")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"interrupted by SIGTERM: nothing was imported, {target} is as it was" in err
    assert "Traceback" not in err
    assert tree(target) == before


HOSTILE = [
    b"[]", b'"a string"', b"Infinity", b'{"format": 1, "files": [{"path": "x",'
    b' "size": Infinity, "sha256": "0"}]}', b"[" * 100_000 + b"]" * 100_000,
    b'{"format": 1, "files": [{"path": "x", "size": -1, "sha256": "0"}]}',
    b'{"format": 1, "files": [{"path": "x", "size": 1e400, "sha256": "0"}]}',
    b'{"format": 1, "files": "nope"}', b'{"format": 1, "files": [[]]}', b"\xff\xfe",
]


def _bundle_with_document(path: Path, source: Path, document: bytes) -> Path:
    """A real bundle of ``source``'s model whose llm-supervisor-model.json is ``document``."""
    import io
    import tarfile

    import zstandard

    with path.open("wb") as fh, zstandard.ZstdCompressor().stream_writer(fh) as z, \
            tarfile.open(fileobj=z, mode="w|") as tar:
        for file in sorted(source.rglob("*")):
            if file.is_file():
                tar.add(file, f"models/{file.relative_to(source).as_posix()}")
        info = tarfile.TarInfo(modelbundle.BUNDLE_MANIFEST)
        info.size = len(document)
        tar.addfile(info, io.BytesIO(document))
    return path


@pytest.mark.parametrize("document", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_bundle_documents_are_refused_with_the_tree_unchanged(tmp_path, document):
    source = tmp_path / "a"
    make_model(source, weights=1000)
    evil = _bundle_with_document(tmp_path / "evil.tar.zst", source, document)
    target = tmp_path / "b"
    make_model(target, "gemma3:4b", weights=100)
    _refused(evil, target, "llm-supervisor-model.json|bundle")


def test_a_user_id_past_the_maximum_is_refused_with_a_line(tmp_path, bundle, capsys):
    code = cli.cli(["models", "import", str(bundle), "--models-dir", str(tmp_path / "b"),
                    "--owner", "99999999999"])
    assert code == 1 and "not a user or group id" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
