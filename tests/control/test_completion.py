"""Bash completion, generated from the CLI's own parser, run in a real bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

from llm_supervisor.control import completion


def complete(script: Path, words: list[str], config_dir: Path | None = None) -> list[str]:
    line = " ".join(words)
    program = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1};"
               " _llm_supervisorctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = {"PATH": "/usr/bin:/bin"}
    if config_dir is not None:
        env["LLM_SUPERVISOR_CONFIG_DIR"] = str(config_dir)
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env,
                          check=True)
    return [w for w in done.stdout.splitlines() if w]


def test_commands_options_subcommands_and_engine_names(tmp_path: Path) -> None:
    script = tmp_path / "llm-supervisorctl"
    script.write_text(completion.bash())
    assert complete(script, ["llm-supervisorctl", "sta"]) == ["start", "status"]
    assert set(complete(script, ["llm-supervisorctl", "''"])) >= {"status", "events", "adopt",
                                                                   "models", "doctor"}
    assert complete(script, ["llm-supervisorctl", "models", "''"]) == ["export", "import"]
    assert complete(script, ["llm-supervisorctl", "advise", "--v"]) == ["--vram"]
    assert "--follow" in complete(script, ["llm-supervisorctl", "events", "--"])
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "supervisor.toml").write_text('[[engine]]\nname = "main"\n')
    (tmp_path / "conf.d" / "50-b.toml").write_text('[[engine]]\n  name = "gpu-b"\n')
    assert complete(script, ["llm-supervisorctl", "restart", "''"], tmp_path) == ["main",
                                                                                  "gpu-b"]
    # every command the parser has is offered: the script cannot drift from the CLI
    offered = set(complete(script, ["llm-supervisorctl", "''"]))
    assert offered - {"--help"} == {c for c in completion.commands(
        completion.parser()) if " " not in c}
