"""Ollama sized from the host (deployment notes: one OLLAMA_NUM_PARALLEL per 4 CPU cores, one
OLLAMA_MAX_LOADED_MODELS per 64 GB of RAM), never overriding what the operator set."""

from __future__ import annotations

import pytest

from supervisor import config
from supervisor.host import tuning
from supervisor.systemd.units import HostFacts, render

GIB = 1024**3
SANE_EXEC = "/bin/sleep infinity"


def load(text: str) -> config.Config:
    return config.loads(text, "/etc/llm-supervisor/supervisor.toml")


def meminfo_total(installed_gib: int) -> int:
    """MemTotal as a host with this much installed RAM reports it (about 2 % kept back)."""
    return int(installed_gib * GIB * 0.98)


@pytest.mark.parametrize(("cpus", "parallel"), [
    (None, 1), (1, 1), (2, 1), (4, 1), (7, 1), (8, 2), (16, 4), (24, 6), (64, 16), (256, 64)])
def test_num_parallel_one_per_four_cores(cpus, parallel):
    assert tuning.num_parallel(cpus) == parallel


@pytest.mark.parametrize(("installed_gib", "loaded"), [
    (4, 1), (16, 1), (32, 1), (64, 1), (96, 1), (128, 2), (192, 3), (256, 4), (512, 8)])
def test_max_loaded_models_one_per_64_gib(installed_gib, loaded):
    assert tuning.max_loaded_models(meminfo_total(installed_gib)) == loaded


def test_unknown_memory_falls_to_the_floor():
    assert tuning.max_loaded_models(None) == 1
    assert tuning.max_loaded_models(0) == 1


ENGINES = load(f"""
[[engine]]
name = "plain"
exec = "{SANE_EXEC}"

[[engine]]
name = "tuned"
exec = "{SANE_EXEC}"
listen = "127.0.0.1:11435"
environment = {{ OLLAMA_NUM_PARALLEL = "3" }}

[[engine]]
name = "pertier"
exec = "{SANE_EXEC}"
listen = "127.0.0.1:11436"
[engine.tiers.cpu]
environment = {{ OLLAMA_MAX_LOADED_MODELS = "1" }}

[[engine]]
name = "big"
kind = "vllm"
model = "Qwen/Qwen2.5-7B-Instruct"
""")


def engine(name: str) -> config.EngineConfig:
    return next(e for e in ENGINES.engines if e.name == name)


@pytest.mark.parametrize(("cpus", "installed_gib", "expected"), [
    (2, 8, {"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_LOADED_MODELS": "1"}),
    (16, 64, {"OLLAMA_NUM_PARALLEL": "4", "OLLAMA_MAX_LOADED_MODELS": "1"}),
    (24, 128, {"OLLAMA_NUM_PARALLEL": "6", "OLLAMA_MAX_LOADED_MODELS": "2"}),  # the notes' host
    (128, 1024, {"OLLAMA_NUM_PARALLEL": "32", "OLLAMA_MAX_LOADED_MODELS": "16"}),
])
def test_derived_for_several_hosts(cpus, installed_gib, expected):
    host = HostFacts(frozenset({"video"}), cpu_count=cpus, mem_total=meminfo_total(installed_gib))
    assert host.derived_environment(engine("plain")) == expected


def test_explicit_values_are_never_overridden():
    host = HostFacts(frozenset(), cpu_count=32, mem_total=meminfo_total(256))
    assert host.derived_environment(engine("tuned")) == {"OLLAMA_MAX_LOADED_MODELS": "4"}
    # set on one tier only: the drop-in carries it, so nothing is derived for it
    assert host.derived_environment(engine("pertier")) == {"OLLAMA_NUM_PARALLEL": "8"}
    assert host.derived_environment(engine("big")) == {}  # not an Ollama variable


def _environment(text: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("Environment=")]


def test_render_shows_derived_values_with_where_they_come_from():
    host = HostFacts(frozenset({"video"}), cpu_count=24, mem_total=meminfo_total(128))
    text = render(ENGINES, engine("plain"), "rocm", host).unit_text
    assert '"OLLAMA_NUM_PARALLEL=6"' in _environment(text)
    assert '"OLLAMA_MAX_LOADED_MODELS=2"' in _environment(text)
    comment = next(line for line in text.splitlines() if line.startswith("# derived from the host"))
    assert "24 CPUs" in comment and "one OLLAMA_NUM_PARALLEL per 4 CPUs" in comment

    explicit = render(ENGINES, engine("tuned"), "rocm", host)
    # the operator's value goes to the root-only environment file; nothing derived beside it
    assert "OLLAMA_NUM_PARALLEL='3'" in explicit.env_text.splitlines()
    assert not any(v.startswith('"OLLAMA_NUM_PARALLEL=')
                   for v in _environment(explicit.unit_text))

    vllm = render(ENGINES, engine("big"), "rocm", host).unit_text
    assert "derived from the host" not in vllm


def test_rendering_is_pure_for_the_same_facts():
    host = HostFacts(frozenset({"video"}), cpu_count=8, mem_total=meminfo_total(64))
    first = render(ENGINES, engine("plain"), "vulkan", host).files()
    assert first == render(ENGINES, engine("plain"), "vulkan", host).files()


def test_host_facts_read_from_proc(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       131584004 kB\nMemFree:         1000 kB\n")
    group = tmp_path / "group"
    group.write_text("video:x:44:\nrender:x:105:\n")
    host = HostFacts.read(group, meminfo)
    assert host.groups == frozenset({"video", "render"})
    assert host.mem_total == 131584004 * 1024
    assert host.cpu_count and host.cpu_count >= 1
    assert tuning.max_loaded_models(host.mem_total) == 2
    assert HostFacts.read(group, tmp_path / "missing").mem_total is None


def test_render_command_shows_the_derived_values(tmp_path, capsys):
    from supervisor.control import cli

    conf = tmp_path / "supervisor.toml"
    conf.write_text(f'[supervisor]\nstate_dir = "{tmp_path}"\n'
                    f'[[engine]]\nname = "main"\nexec = "{SANE_EXEC}"\n')
    assert cli.cli(["render", "--config", str(conf), "--tier", "vulkan"]) == 0
    out = capsys.readouterr().out
    assert "# derived from the host" in out
    assert f'"OLLAMA_NUM_PARALLEL={tuning.num_parallel(tuning.read_cpu_count())}"' in out
    assert '"OLLAMA_MAX_LOADED_MODELS=' in out
