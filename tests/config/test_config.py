"""Config: merging, defaults, and errors that name the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llm_supervisor import config
from llm_supervisor.config import ConfigError, load, parse_duration

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(path)
    return exc.value.problems


def test_the_shipped_example_is_valid_with_no_engine_enabled(tmp_path):
    cfg = load(REPO / "etc/llm-supervisor/supervisor.toml")
    assert cfg.engines == ()
    assert cfg.fallback.chain == ("rocm", "vulkan", "opencl", "cpu")
    assert cfg.health.startup_grace == 120.0 and cfg.fallback.promote_after == 1800.0
    assert cfg.fallback.probation == 600.0


def test_the_commented_mi50_example_is_valid_once_enabled(tmp_path):
    """Removing the leading "# " from the example engine gives the MI50 setup: a gfx906
    build on the rocm tier, stock Ollama below it."""
    text = (REPO / "etc/llm-supervisor/supervisor.toml").read_text()
    example = text[text.index("# [[engine]]"):]
    enabled = "\n".join(line.removeprefix("# ") for line in example.splitlines()
                        if line.startswith("# [") or line.startswith("# ") and "=" in line)
    cfg = load(write(tmp_path / "supervisor.toml", text + "\n" + enabled))
    main = cfg.engine("main")
    assert main is not None and main.kind == "ollama" and main.exec.endswith("ollama serve")
    assert main.environment["HSA_OVERRIDE_GFX_VERSION"] == "9.0.6"
    assert main.tiers["rocm"].exec == "/opt/ollama-gfx906/bin/ollama serve"
    assert "vulkan" not in main.tiers and main.health.startup_grace == 300.0


def test_defaults_per_kind(tmp_path):
    cfg = load(write(tmp_path / "s.toml", """
[[engine]]
name = "a"
[[engine]]
name = "b"
kind = "vllm"
model = "Qwen/Qwen2.5-7B-Instruct"
"""))
    a, b = cfg.engines
    assert (a.exec, a.listen, a.user, a.writable) == (
        "/usr/local/bin/ollama serve", "127.0.0.1:11434", "ollama", ("/usr/share/ollama",))
    assert b.listen == "127.0.0.1:8000"
    assert b.exec == "/usr/local/bin/vllm serve Qwen/Qwen2.5-7B-Instruct --host 127.0.0.1 --port 8000"
    assert a.unit == "llm-a.service" and a.endpoint == "http://127.0.0.1:11434"


def test_conf_d_overrides_keys_and_merges_engines_by_name(tmp_path):
    main = write(tmp_path / "supervisor.toml", """
[health]
interval = "5s"
failures = 3
[[engine]]
name = "main"
model = "qwen2.5:7b-instruct"
environment = { A = "1" }
""")
    write(tmp_path / "conf.d/20-late.toml", """
[health]
failures = 5
[[engine]]
name = "main"
environment = { B = "2" }
[[engine]]
name = "second"
listen = "127.0.0.1:11500"
""")
    write(tmp_path / "conf.d/10-early.toml", """
[health]
failures = 4
interval = "2s"
""")
    cfg = load(main)
    assert cfg.health.failures == 5 and cfg.health.interval == 2.0
    assert [e.name for e in cfg.engines] == ["main", "second"]
    assert cfg.engine("main").environment == {"A": "1", "B": "2"}
    assert cfg.engine("main").model == "qwen2.5:7b-instruct"
    assert cfg.files == (str(main), str(tmp_path / "conf.d/10-early.toml"),
                         str(tmp_path / "conf.d/20-late.toml"))


def test_engine_health_overrides_the_defaults(tmp_path):
    cfg = load(write(tmp_path / "s.toml", """
[health]
interval = "5s"
[[engine]]
name = "main"
[engine.health]
startup_grace = "5m"
"""))
    h = cfg.health_for(cfg.engines[0])
    assert h.startup_grace == 300.0 and h.interval == 5.0


@pytest.mark.parametrize(("text", "value"), [
    ("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("0", 0.0), (7, 7.0), (1.5, 1.5),
])
def test_durations(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["5 parsecs", "-1s", "s", "", True, [1]])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "needle"), [
    ('[[engine]]\nname = "main"\nlistne = "x"\n', "engine.main.listne: unknown key 'listne'"),
    ('[health]\nintervall = "5s"\n', "health.intervall: unknown key"),
    ('[health]\ninterval = "5 parsecs"\n', "health.interval: bad duration '5 parsecs'"),
    ('[[engine]]\nname = "Main_1"\n', "engine.Main_1.name: bad engine name 'Main_1'"),
    ('[[engine]]\nname = "../../etc"\n', "bad engine name '../../etc'"),
    ('[[engine]]\nname = "a"\n[[engine]]\nname = "a"\n', "engine.a: duplicate engine name 'a'"),
    ('[fallback]\nchain = ["rocm", "metal"]\n', "fallback.chain[1]: unknown tier"),
    ('[[engine]]\nname = "a"\nchain = ["rocm", "rocm"]\n', "appears twice"),
    ('[tiers.metal]\navailable = "auto"\n', "tiers.metal: unknown tier"),
    ('[tiers.rocm]\navailable = "maybe"\n', "tiers.rocm.available"),
    ('[[engine]]\nname = "a"\nenvironment = { X = "1\\nExecStartPre=/bin/evil" }\n',
     "engine.a.environment.X: newlines and control characters are not allowed"),
    ('[[engine]]\nname = "a"\nexec = "/bin/x\\n[Service]"\n', "engine.a.exec: newlines"),
    ('[[engine]]\nname = "a"\nexec = "ollama serve"\n', "must be an absolute path"),
    ('[[engine]]\nname = "a"\nlisten = "nope"\n', "bad listen address 'nope'"),
    ('[[engine]]\nname = "a"\nenvironment = { "BAD NAME" = "1" }\n', "bad environment variable"),
    ('[[engine]]\nname = "a"\nkind = "llamafile"\n', "engine.a.kind"),
    ('[[engine]]\nname = "a"\nkind = "vllm"\n', "needs `model`"),
    ('[[engine]]\nname = "a"\n[[engine]]\nname = "b"\n', "both listen on 127.0.0.1:11434"),
    ("[health\n", "invalid TOML"),
])
def test_each_error_names_file_and_key(tmp_path, text, needle):
    path = write(tmp_path / "supervisor.toml", text)
    problems = errors_of(path)
    assert any(needle in p for p in problems), problems
    assert all(p.startswith(str(path)) for p in problems), problems


def test_an_error_names_the_conf_d_file_that_set_the_key(tmp_path):
    main = write(tmp_path / "supervisor.toml",
                 '[[engine]]\nname = "main"\nenvironment = { A = "1" }\n')
    late = write(tmp_path / "conf.d/50-gpu.toml",
                 '[[engine]]\nname = "main"\nenvironment = { X = "a\\rb" }\n')
    problems = errors_of(main)
    assert problems == [f"{late}: engine.main.environment.X: newlines and control characters"
                        " are not allowed in values"]


def test_all_errors_are_reported_at_once(tmp_path):
    problems = errors_of(write(tmp_path / "s.toml", """
[health]
interval = "soon"
[[engine]]
name = "main"
bogus = 1
"""))
    assert len(problems) == 2, problems


def test_missing_file(tmp_path):
    assert errors_of(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: no such config file"]


def test_every_path_is_overridable(tmp_path):
    cfg = load(write(tmp_path / "s.toml", f"""
[supervisor]
socket = "{tmp_path}/c.sock"
state_dir = "{tmp_path}/state"
unit_dir = "{tmp_path}/units"
kfd_path = "{tmp_path}/kfd"
"""))
    assert cfg.supervisor.unit_dir == tmp_path / "units"
    assert "must be an absolute path" in errors_of(
        write(tmp_path / "r.toml", '[supervisor]\nstate_dir = "relative"\n'))[0]


def test_configs_are_frozen_and_comparable(tmp_path):
    text = '[[engine]]\nname = "main"\n'
    a = config.loads(text, "x")
    b = config.loads(text, "x")
    assert a == b and a.engines[0] == b.engines[0]
    with pytest.raises(ValidationError, match="frozen"):
        a.engines[0].name = "other"  # type: ignore[misc]
