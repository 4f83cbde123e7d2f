"""Unit rendering (pure, golden) and writing (atomic, change-only, ours only).

Every rendered unit goes through the real `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from llm_supervisor import config
from llm_supervisor.errors import UnitFileError
from llm_supervisor.systemd import units
from llm_supervisor.systemd.units import HostFacts, render
from llm_supervisor.tiers import TIERS

HOST = HostFacts(frozenset({"render", "video", "ollama"}))
NO_RENDER = HostFacts(frozenset({"video"}))
SANE_EXEC = "/bin/sleep infinity"


def parse(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]} (comments dropped, order kept)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        assert current is not None
        current.append((key, value))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def load(text: str) -> config.Config:
    return config.loads(text, "/etc/llm-supervisor/supervisor.toml")


MI50 = load(f"""
[[engine]]
name = "main"
exec = "{SANE_EXEC}"
model = "qwen2.5:7b-instruct"
environment = {{ HSA_OVERRIDE_GFX_VERSION = "9.0.6", OLLAMA_NUM_PARALLEL = "4" }}
writable = ["/usr/share/ollama", "/var/lib/models"]
""")


def test_engine_unit_golden():
    text = render(MI50, MI50.engines[0], "rocm", HOST).unit_text
    assert text.startswith(units.HEADER)
    assert "/etc/llm-supervisor/supervisor.toml" in text.splitlines()[0]
    service = parse(text)["Service"]
    assert values(service, "Type") == ["exec"]
    assert values(service, "ExecStart") == ['"/bin/sleep" "infinity"']
    assert values(service, "User") == ["ollama"] and values(service, "Group") == ["ollama"]
    assert values(service, "SupplementaryGroups") == ["render video"]
    # the engine's own values go to a root-only file, not into the world-readable unit;
    # what the host sized (llm_supervisor.host.tuning) is no secret
    assert values(service, "Environment") == [
        '"OLLAMA_HOST=127.0.0.1:11434"', '"OLLAMA_MAX_LOADED_MODELS=1"']
    assert values(service, "EnvironmentFile") == [
        "/etc/systemd/system/llm-main.service.d/environment.env"]
    assert values(service, "ReadWritePaths") == ["-/usr/share/ollama -/var/lib/models"]
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("DevicePolicy", "closed"), ("CapabilityBoundingSet", "")]:
        assert values(service, key) == [value], key
    assert values(service, "DeviceAllow") == ["/dev/kfd rw", "char-drm rw"]
    assert values(service, "Restart") == ["on-failure"]
    unit = parse(text)["Unit"]
    assert not values(unit, "PartOf") and not values(unit, "BindsTo")  # survives the daemon


@pytest.mark.parametrize(("tier", "expected"), [
    ("rocm", {"LLM_SUPERVISOR_TIER": "rocm", "OLLAMA_GPU_DRIVER": "rocm"}),
    ("vulkan", {"LLM_SUPERVISOR_TIER": "vulkan", "OLLAMA_GPU_DRIVER": "vulkan",
                "OLLAMA_VULKAN": "1", "OLLAMA_LLM_LIBRARY": "vulkan",
                "ROCR_VISIBLE_DEVICES": "-1"}),
    ("cpu", {"LLM_SUPERVISOR_TIER": "cpu", "OLLAMA_GPU_DRIVER": "cpu", "OLLAMA_VULKAN": "0",
             "OLLAMA_LLM_LIBRARY": "cpu", "ROCR_VISIBLE_DEVICES": "-1",
             "HIP_VISIBLE_DEVICES": "-1", "GGML_VK_VISIBLE_DEVICES": "-1"}),
])
def test_tier_dropin_golden(tier, expected):
    rendered = render(MI50, MI50.engines[0], tier, HOST)
    assert rendered.dropin == "llm-main.service.d/50-tier.conf"
    service = parse(rendered.dropin_text)["Service"]
    env = dict(v.strip('"').split("=", 1) for v in values(service, "Environment"))
    assert env == expected
    assert not values(service, "ExecStart")


def test_per_tier_exec_and_environment_override():
    cfg = load(f"""
[[engine]]
name = "main"
exec = "{SANE_EXEC}"
[engine.tiers.opencl]
exec = "/opt/llama-opencl/bin/llama-server --port 11434 -m /models/q.gguf"
environment = {{ GGML_OPENCL_PLATFORM = "AMD" }}
[engine.tiers.cpu]
environment = {{ OLLAMA_NUM_THREADS = "16", OLLAMA_VULKAN = "false" }}
""")
    opencl = parse(render(cfg, cfg.engines[0], "opencl", HOST).dropin_text)["Service"]
    assert values(opencl, "ExecStart") == [
        "", '"/opt/llama-opencl/bin/llama-server" "--port" "11434" "-m" "/models/q.gguf"']
    assert '"GGML_OPENCL_PLATFORM=AMD"' in values(opencl, "Environment")
    assert '"OLLAMA_GPU_DRIVER=opencl"' in values(opencl, "Environment")
    cpu = parse(render(cfg, cfg.engines[0], "cpu", HOST).dropin_text)["Service"]
    assert '"OLLAMA_VULKAN=false"' in values(cpu, "Environment")  # the override wins
    assert '"OLLAMA_VULKAN=0"' not in values(cpu, "Environment")


def test_missing_gpu_groups_are_left_out():
    service = parse(render(MI50, MI50.engines[0], "rocm", NO_RENDER).unit_text)["Service"]
    assert values(service, "SupplementaryGroups") == ["video"]
    assert NO_RENDER.missing_gpu_groups() == ["render"]


def test_rendering_is_pure():
    a = render(MI50, MI50.engines[0], "vulkan", HOST)
    b = render(load(f"""
[[engine]]
name = "main"
exec = "{SANE_EXEC}"
model = "qwen2.5:7b-instruct"
environment = {{ HSA_OVERRIDE_GFX_VERSION = "9.0.6", OLLAMA_NUM_PARALLEL = "4" }}
writable = ["/usr/share/ollama", "/var/lib/models"]
"""), MI50.engines[0], "vulkan", HOST)
    assert a == b


def test_systemd_quoting_of_special_characters():
    cfg = config.loads(r"""
[[engine]]
name = "main"
exec = '/bin/echo 100% "two words" $HOME back\slash'
environment = { WEIRD = 'a"b\\c %h $X ;', TIER_OVERRIDE = "1", QUOTE = "it's \"$x\"" }
[engine.tiers.cpu]
environment = { TIER_OVERRIDE = "2" }
""")
    rendered = render(cfg, cfg.engines[0], "rocm", HOST)
    env = parse(rendered.unit_text)["Service"]
    assert values(env, "ExecStart") == [
        r'"/bin/echo" "100%%" "two words" "$$HOME" "backslash"']
    # a tier-steering variable stays visible (and below the drop-in); the rest is private
    assert values(env, "Environment")[:2] == ['"OLLAMA_HOST=127.0.0.1:11434"',
                                              '"TIER_OVERRIDE=1"']
    assert "WEIRD" not in rendered.unit_text
    lines = rendered.env_text.splitlines()
    assert lines[0].startswith(units.HEADER)
    assert r"""WEIRD='a"b\\c %h $X ;'""" in lines  # single quotes: literal, no specifiers
    assert r'''QUOTE="it's \"\$x\""''' in lines


def test_no_value_can_add_a_directive():
    with pytest.raises(config.ConfigError):
        load('[[engine]]\nname = "a"\nenvironment = { X = "1\\nExecStartPre=/bin/evil" }\n')
    with pytest.raises(ValueError):
        units.quote_value("x\n[Service]\nUser=root")
    # an unescaped quote cannot close the value early either
    line = units.environment_line("X", '" ExecStartPre="/bin/evil')
    assert line == r'Environment="X=\" ExecStartPre=\"/bin/evil"'


# --------------------------------------------------------------------------- systemd-analyze

def verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (apt install systemd)"
    return subprocess.run(["systemd-analyze", "verify", str(unit_dir / unit)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("tier", TIERS)
def test_every_rendered_unit_passes_systemd_analyze_verify(tmp_path, tier):
    cfg = load("""
[[engine]]
name = "main"
exec = "/bin/sleep infinity"
user = "root"
group = "root"
environment = { WEIRD = 'a"b\\\\c %h $X' }
[engine.tiers.opencl]
exec = "/bin/sleep 100%"
""")
    units.write_files(tmp_path, render(cfg, cfg.engines[0], tier, HOST).files())
    done = verify(tmp_path, "llm-main.service")
    assert done.returncode == 0, done.stderr
    assert "llm-main" not in done.stderr, done.stderr  # not even a warning about our files


def test_systemd_analyze_sees_the_dropin(tmp_path):
    """Proof the verify above reads 50-tier.conf: it reports a bad line in the drop-in."""
    cfg = load('[[engine]]\nname = "main"\nexec = "/bin/sleep infinity"\nuser = "root"\n'
               'group = "root"\n')
    units.write_files(tmp_path, render(cfg, cfg.engines[0], "rocm", HOST).files())
    dropin = tmp_path / "llm-main.service.d/50-tier.conf"
    dropin.write_text(dropin.read_text() + "ExecStart=relative/path\n")
    done = verify(tmp_path, "llm-main.service")
    assert "50-tier.conf:" in done.stderr and "relative/path" in done.stderr, done.stderr


# --------------------------------------------------------------------------- writing

def test_writes_are_atomic_and_change_only(tmp_path):
    files = render(MI50, MI50.engines[0], "rocm", HOST).files()
    changed = units.write_files(tmp_path, files)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in changed) == sorted(files)
    unit = tmp_path / "llm-main.service"
    mtime = unit.stat().st_mtime_ns
    assert units.write_files(tmp_path, files) == []
    assert unit.stat().st_mtime_ns == mtime
    vulkan = render(MI50, MI50.engines[0], "vulkan", HOST).files()
    assert units.write_files(tmp_path, vulkan) == [tmp_path / "llm-main.service.d/50-tier.conf"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_file_that_is_not_ours_is_never_overwritten(tmp_path):
    foreign = tmp_path / "llm-main.service"
    foreign.write_text("[Service]\nExecStart=/usr/bin/handmade\n")
    with pytest.raises(UnitFileError, match="not written by llm-supervisor"):
        units.write_files(tmp_path, render(MI50, MI50.engines[0], "rocm", HOST).files())
    assert foreign.read_text() == "[Service]\nExecStart=/usr/bin/handmade\n"
    assert not (tmp_path / "llm-main.service.d").exists()  # nothing half-written


def test_environment_file_is_root_only(tmp_path):
    units.write_files(tmp_path, render(MI50, MI50.engines[0], "rocm", HOST).files())
    env = tmp_path / "llm-main.service.d/environment.env"
    assert env.stat().st_mode & 0o777 == 0o600
    assert "OLLAMA_NUM_PARALLEL='4'" in env.read_text().splitlines()
    assert (tmp_path / "llm-main.service").stat().st_mode & 0o777 == 0o644


def test_removal_touches_only_our_files(tmp_path):
    units.write_files(tmp_path, render(MI50, MI50.engines[0], "rocm", HOST).files())
    own = tmp_path / "llm-main.service.d/90-operator.conf"
    own.write_text("[Service]\nNice=5\n")
    (tmp_path / "llm-handmade.service").write_text("[Service]\nExecStart=/bin/true\n")
    assert units.managed_engines(tmp_path) == {"main"}
    removed = units.remove_engine(tmp_path, "main")
    assert sorted(p.name for p in removed) == ["50-tier.conf", "environment.env",
                                               "llm-main.service"]
    assert own.exists() and (tmp_path / "llm-handmade.service").exists()
    assert units.remove_engine(tmp_path, "handmade") == []


def test_ollamas_models_directory_is_writable_where_ollama_reads_it():
    """OLLAMA_MODELS outside the engine's writable paths: the unit lets the engine write
    there (a pull lands where Ollama reads); the stock one is under /usr/share/ollama."""
    from llm_supervisor.systemd.units import writable_paths

    def engine(**environment: str) -> config.EngineConfig:
        return config.EngineConfig(name="a", kind="ollama", listen="127.0.0.1:11434",
                                   user="ollama", group="ollama", environment=environment)

    stock = writable_paths(engine())
    assert stock[0] == "/usr/share/ollama" and all(  # the ollama user's home, if not stock
        p.endswith("/.ollama/models") for p in stock[1:])
    assert writable_paths(engine(OLLAMA_MODELS="/srv/models")) == ["/usr/share/ollama",
                                                                  "/srv/models"]
    assert writable_paths(engine(OLLAMA_MODELS="/usr/share/ollama/m")) == ["/usr/share/ollama"]
    # a value that would split the directive is left out, never written
    assert writable_paths(engine(OLLAMA_MODELS="/srv/my models")) == ["/usr/share/ollama"]
