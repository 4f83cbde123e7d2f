"""``llm-supervisorctl bundle`` with the daemon down: read from where the daemon keeps
things, as root; a config that does not load is bundled as it is, with why."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from llm_supervisor.control.cli import cli
from llm_supervisor.records.history import EventLog
from llm_supervisor.tools import bundle

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a bundle without the daemon is root's")


def host(tmp: Path, config: str) -> Path:
    etc = tmp / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "supervisor.toml").write_text(config.format(tmp=tmp))
    (etc / "conf.d" / "50-token.toml").write_text(
        '[[engine]]\nname = "main"\nenvironment = { HF_TOKEN = "hf_secret_value_42" }\n')
    units = tmp / "units"
    (units / "llm-main.service.d").mkdir(parents=True)
    (units / "llm-main.service").write_text("[Service]\nExecStart=/usr/bin/ollama serve\n")
    (units / "llm-main.service.d" / "50-tier.conf").write_text("[Service]\n# tier rocm\n")
    state = tmp / "state"
    state.mkdir()
    (state / "state.json").write_text('{"version": 1, "engines": {"main": {"tier": "rocm"}}}')
    EventLog(state / "events").append("state", engine="main", to="degraded", reason="hung")
    return etc / "supervisor.toml"


CONFIG = """[supervisor]
unit_dir = "{tmp}/units"
state_dir = "{tmp}/state"
socket = "{tmp}/run/control.sock"
probe_timeout = "5s"
"""


def unpack(data: bytes) -> dict[str, str]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name.removeprefix("llm-supervisor-bundle/"):
                tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_the_bundle_is_read_from_the_daemons_files_when_it_is_down(tmp_path: Path,
                                                                   capsys) -> None:
    path = host(tmp_path, CONFIG)
    files = bundle.files("no socket", path)
    assert {"config/supervisor.toml", "config/conf.d/50-token.toml", "units/llm-main.service",
            "units/llm-main.service.d/50-tier.conf", "state.json", "events.jsonl",
            "journal/main.log", "journal/llm-supervisor.log", "journal/kernel.log",
            "tiers.json", "versions.txt", "status.json"} <= set(files), sorted(files)
    assert json.loads(files["events.jsonl"].splitlines()[0])["reason"] == "hung"
    assert json.loads(files["status.json"])["daemon"] == "not reachable: no socket"
    assert {t["tier"] for t in json.loads(files["tiers.json"])["tiers"]} >= {"rocm", "cpu"}
    # through the command, as an admin runs it with the daemon down
    out = tmp_path / "b.tar.zst"
    code = cli(["--socket", str(tmp_path / "run" / "control.sock"), "bundle", "-o", str(out),
                "--config", str(path)])
    assert code == 0, capsys.readouterr().err
    assert "not reachable" in capsys.readouterr().err
    texts = unpack(out.read_bytes())
    assert "hf_secret_value_42" not in "".join(texts.values())  # redacted as the daemon does
    assert "HF_TOKEN" in texts["config/conf.d/50-token.toml"]


def test_a_config_that_does_not_load_is_bundled_as_it_is_with_why(tmp_path: Path) -> None:
    path = host(tmp_path, CONFIG + '[health]\ninterval = "soon"\n')
    files = bundle.files("no socket", path)
    assert "interval" in files["config-problems.txt"]
    assert 'interval = "soon"' in files["config/supervisor.toml"]
    assert "config/conf.d/50-token.toml" in files
