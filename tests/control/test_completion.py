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


def test_tiers_engines_units_and_files_where_they_go(tmp_path: Path) -> None:
    """Tiers after ``pin ENGINE`` and ``--tier``, engines after ``--engine``, files only
    where a file goes (never after an engine that takes none)."""
    script = tmp_path / "llm-supervisorctl"
    script.write_text(completion.bash())
    (tmp_path / "supervisor.toml").write_text('[[engine]]\nname = "main"\n')
    (tmp_path / "somefile").write_text("")
    tiers = ["rocm", "vulkan", "opencl", "cpu"]
    assert complete(script, ["llm-supervisorctl", "pin", "main", "''"], tmp_path) == tiers
    assert complete(script, ["llm-supervisorctl", "render", "--tier", "v"], tmp_path) == \
        ["vulkan"]
    assert complete(script, ["llm-supervisorctl", "events", "--engine", "''"], tmp_path) == \
        ["main"]
    assert complete(script, ["llm-supervisorctl", "restart", "main", "''"], tmp_path) == []
    assert complete(script, ["llm-supervisorctl", "check-config", str(tmp_path / "some")],
                    tmp_path) == [str(tmp_path / "somefile")]


def test_zsh_runs_the_same_completion_through_bashcompinit() -> None:
    text = completion.zsh()
    assert text.startswith("#compdef llm-supervisorctl\n")
    assert "bashcompinit" in text and completion.bash().removeprefix(completion.HEADER) in text
