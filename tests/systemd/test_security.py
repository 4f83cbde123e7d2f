"""`systemd-analyze security --offline=true`: the daemon's own unit <= 5.0 and a rendered
engine unit <= 2.0 (Ollama's stock unit: 9.2 UNSAFE, docs/field-notes.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from llm_supervisor import config
from llm_supervisor.systemd import units

REPO = Path(__file__).resolve().parents[2]


def score(unit: Path) -> float:
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (apt install systemd)"
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                           str(unit)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_the_daemon_unit_scores_at_most_5():
    assert score(REPO / "units/llm-supervisor.service") <= 5.0


def test_a_rendered_engine_unit_scores_at_most_2(tmp_path):
    cfg = config.loads('[[engine]]\nname = "main"\nexec = "/usr/local/bin/ollama serve"\n'
                       'environment = { HF_TOKEN = "x" }\n',
                       "/etc/llm-supervisor/supervisor.toml")
    host = units.HostFacts(frozenset({"render", "video"}))
    rendered = units.render(cfg, cfg.engines[0], "vulkan", host)
    units.write_files(tmp_path, rendered.files())
    assert score(tmp_path / "llm-main.service") <= 2.0
