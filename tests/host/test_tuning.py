"""Ollama sized from the host (the deployment notes, docs/field-notes.md: one
OLLAMA_NUM_PARALLEL per 4 CPU cores, one OLLAMA_MAX_LOADED_MODELS per 64 GB of RAM), never
overriding what the operator set."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_supervisor import config, names
from llm_supervisor.host import tuning
from llm_supervisor.systemd.units import HostFacts, render, unit_tuning

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
    assert host.tuning(engine("plain")).environment == expected


def test_explicit_values_are_never_overridden():
    host = HostFacts(frozenset(), cpu_count=32, mem_total=meminfo_total(256))
    assert host.tuning(engine("tuned")).environment == {"OLLAMA_MAX_LOADED_MODELS": "4"}
    # set on one tier only: the drop-in carries it, so nothing is derived for it
    assert host.tuning(engine("pertier")).environment == {"OLLAMA_NUM_PARALLEL": "8"}
    assert host.tuning(engine("big")).environment == {}  # not an Ollama variable


def _environment(text: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("Environment=")]


def test_render_shows_derived_values_with_where_they_come_from():
    host = HostFacts(frozenset({"video"}), cpu_count=24, mem_total=meminfo_total(128))
    text = render(ENGINES, engine("plain"), "rocm", host).unit_text
    assert '"OLLAMA_NUM_PARALLEL=6"' in _environment(text)
    assert '"OLLAMA_MAX_LOADED_MODELS=2"' in _environment(text)
    comment = next(line for line in text.splitlines() if line.startswith("# derived from the host"))
    assert "24 CPUs" in comment and "OLLAMA_NUM_PARALLEL=6: one per 4 CPUs" in comment
    assert "VRAM bound unknown" in comment

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
    from llm_supervisor.control import cli

    conf = tmp_path / "supervisor.toml"
    conf.write_text(f'[supervisor]\nstate_dir = "{tmp_path}"\n'
                    f'[[engine]]\nname = "main"\nexec = "{SANE_EXEC}"\n')
    assert cli.cli(["render", "--config", str(conf), "--tier", "vulkan"]) == 0
    out = capsys.readouterr().out
    assert "# derived from the host" in out
    assert f'"OLLAMA_NUM_PARALLEL={tuning.num_parallel(tuning.read_cpu_count())}"' in out
    assert '"OLLAMA_MAX_LOADED_MODELS=' in out


def _ollama_model(models: Path, name: str, *, layers: int, kv_heads: int, head_size: int,
                  weights: int) -> None:
    """An Ollama models directory holding ``name``: a manifest and a GGUF blob whose header
    says the shape (written with the ``gguf`` library, llama.cpp's own), padded to
    ``weights`` bytes."""
    import hashlib
    import json

    import gguf

    gguf_path = models / "tmp.gguf"
    models.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(gguf_path), "llama")
    writer.add_block_count(layers)
    writer.add_head_count(kv_heads * 4)
    writer.add_head_count_kv(kv_heads)
    writer.add_embedding_length(kv_heads * 4 * head_size)
    writer.add_context_length(32768)
    writer.add_token_list([b"a"] * 1000)  # an array to skip, as a tokenizer is
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()  # (the header's: no need
    (models / "blobs").mkdir(exist_ok=True)                       # to hash gigabytes here)
    blob = models / "blobs" / f"sha256-{digest}"
    gguf_path.rename(blob)
    with blob.open("r+b") as fh:
        fh.truncate(weights)  # sparse: the weights' size without writing them
    manifest = models / names.manifest_relpath(name)  # where the engine looks: Ollama's rule
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
         "size": weights}]}))


@pytest.mark.parametrize(("vram_gib", "slots", "bound"), [
    (12, 3, "the VRAM bound"),   # 3 slots of 4k context beside an 8 GiB model
    (64, 16, "the CPU bound"),   # plenty of VRAM: the 64 CPUs decide
])
def test_slots_are_the_smaller_of_the_cpus_and_what_fits_in_vram(tmp_path, vram_gib, slots,
                                                                 bound):
    from llm_supervisor.host import gpu

    models = tmp_path / "models"
    # an 8B-like model: 32 layers, 8 KV heads of 128 -> 128 KiB of f16 cache per token,
    # 0.5 GiB per 4k-token slot; 8 GiB of weights
    _ollama_model(models, "llama3:8b", layers=32, kv_heads=8, head_size=128,
                  weights=8 * 2**30)
    found = gpu.ollama_model_file(models, "llama3:8b")
    assert found is not None and (found.layers, found.kv_heads, found.head_size) == (32, 8, 128)
    assert found.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2
    cfg = config.EngineConfig(name="m", kind="ollama", listen="127.0.0.1:11434",
                              model="llama3:8b", environment={"OLLAMA_MODELS": str(models)})
    host = HostFacts(frozenset(), cpu_count=64, mem_total=meminfo_total(128),
                     vram=vram_gib * 2**30)
    derived = host.tuning(cfg).environment
    assert derived["OLLAMA_NUM_PARALLEL"] == str(slots), host.tuning(cfg).why
    why = host.tuning(cfg).why
    assert bound in why and "beside the model's 8.00 GiB" in why
    # q8_0 only counts with flash attention on: then the cache halves and more slots fit
    fast = cfg.model_copy(update={"environment": {
        "OLLAMA_MODELS": str(models), "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_FLASH_ATTENTION": "1"}})
    assert int(host.tuning(fast).environment["OLLAMA_NUM_PARALLEL"]) >= slots


def test_the_gguf_header_reader_agrees_with_llama_cpps_library_and_refuses_garbage(tmp_path):
    import io
    import struct

    from llm_supervisor.host import gpu

    models = tmp_path / "models"
    _ollama_model(models, "x:1b", layers=4, kv_heads=2, head_size=64, weights=10000)
    blob = next((models / "blobs").iterdir())
    with blob.open("rb") as fh:
        header = gpu.gguf_header(fh)
    assert header["llama.block_count"] == 4 and header["llama.attention.head_count_kv"] == 2
    for bad in (b"", b"GGUF", b"NOPE" + b"\0" * 20,
                b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40),  # a key count past any file
                b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**40)):
        with pytest.raises(ValueError):
            gpu.gguf_header(io.BytesIO(bad))
    assert gpu.ollama_model_file(models, "absent:1b") is None


# ----------------------------------------------------------------- the values a start keeps

KEPT = tuning.Tuning({"OLLAMA_NUM_PARALLEL": "2", "OLLAMA_MAX_LOADED_MODELS": "1"},
                     "derived from the host (8 CPUs, MemTotal 23.5 GiB): as it was then")


def test_a_kept_tuning_renders_instead_of_the_hosts_new_values():
    host = HostFacts(frozenset({"video"}), cpu_count=64, mem_total=meminfo_total(128))
    fresh = render(ENGINES, engine("plain"), "rocm", host)
    kept = render(ENGINES, engine("plain"), "rocm", host, KEPT)
    assert '"OLLAMA_NUM_PARALLEL=16"' in _environment(fresh.unit_text)
    assert '"OLLAMA_NUM_PARALLEL=2"' in _environment(kept.unit_text)
    assert "# " + KEPT.why in kept.unit_text.splitlines()
    assert kept.tuning == KEPT and fresh.tuning == host.tuning(engine("plain"))


def test_a_kept_tuning_drops_what_the_operator_has_set_since_and_other_kinds():
    host = HostFacts(frozenset(), cpu_count=8, mem_total=meminfo_total(16))
    rendered = render(ENGINES, engine("tuned"), "rocm", host, KEPT)
    values = _environment(rendered.unit_text)
    assert '"OLLAMA_NUM_PARALLEL=2"' not in values and '"OLLAMA_MAX_LOADED_MODELS=1"' in values
    assert "OLLAMA_NUM_PARALLEL='3'" in rendered.env_text  # the operator's, in its own file
    assert KEPT.kept_for(engine("big"), tuning.Tuning()) == tuning.Tuning()
    assert "OLLAMA_" not in "".join(_environment(
        render(ENGINES, engine("big"), "rocm", host, KEPT).unit_text))


def test_a_kept_tuning_round_trips_through_the_state_file():
    assert tuning.Tuning.from_dict(KEPT.to_dict()) == KEPT
    assert tuning.Tuning.from_dict({"environment": {}, "why": ""}) == tuning.Tuning()


@pytest.mark.parametrize("data", [
    None, [], "x", {"environment": {}}, {"environment": {}, "why": "", "more": 1},
    {"environment": [], "why": ""},
    {"environment": {}, "why": "two\nlines"},                    # a second line in the unit
    {"environment": {}, "why": "x" * 1001},
    {"environment": {"OLLAMA_NUM_PARALLEL": 4}, "why": ""},      # not a string
    {"environment": {"OLLAMA_NUM_PARALLEL": "0"}, "why": ""},
    {"environment": {"OLLAMA_NUM_PARALLEL": "1234567"}, "why": ""},
    {"environment": {"OLLAMA_NUM_PARALLEL": "4\nExecStartPre=/bin/sh"}, "why": ""},
    {"environment": {"OLLAMA_NUM_PARALLEL": "4 "}, "why": ""},
    {"environment": {"HF_TOKEN": "1"}, "why": ""},               # not a derived key
    {"environment": {"OLLAMA_HOST": "0.0.0.0"}, "why": ""},
])
def test_a_hostile_kept_tuning_is_refused(data):
    assert tuning.Tuning.from_dict(data) is None


def test_a_key_that_applies_again_takes_its_fresh_value():
    """The operator unset OLLAMA_NUM_PARALLEL since the start: the kept record has no value for
    it, the host's fresh one fills it (the kept ones stay)."""
    host = HostFacts(frozenset(), cpu_count=24, mem_total=meminfo_total(16))
    kept = tuning.Tuning({"OLLAMA_MAX_LOADED_MODELS": "3"}, "as it was")
    values = _environment(render(ENGINES, engine("plain"), "rocm", host, kept).unit_text)
    assert '"OLLAMA_NUM_PARALLEL=6"' in values and '"OLLAMA_MAX_LOADED_MODELS=3"' in values


def test_the_values_a_unit_was_written_with_are_read_back(tmp_path):
    """A state without kept values (an older build's): the engine's own unit file says what
    its process was started with; anything that is not ours or not valid is refused."""
    host = HostFacts(frozenset(), cpu_count=24, mem_total=meminfo_total(16))
    plain = engine("plain")
    path = tmp_path / plain.unit
    assert unit_tuning(tmp_path, plain) is None  # no file
    path.write_text(render(ENGINES, plain, "rocm", host, KEPT).unit_text)
    assert unit_tuning(tmp_path, plain) == KEPT
    text = path.read_text()
    path.write_text(text.replace('OLLAMA_NUM_PARALLEL=2"', 'OLLAMA_NUM_PARALLEL=0"'))
    assert unit_tuning(tmp_path, plain) is None  # not a value this daemon writes
    path.write_text(text.replace("# Generated by llm-supervisor.", "# mine"))
    assert unit_tuning(tmp_path, plain) is None  # not ours


def test_engines_sharing_a_card_share_its_memory_and_a_reload_adding_one_restarts_none(
        tmp_path):
    """Two engines on one 32 GiB card: each sizes its slots by half of it. A reload that adds
    the second leaves the first's unit alone: its share changes at its next start."""
    from llm_supervisor.diff import diff
    from llm_supervisor.host import cards

    models = tmp_path / "models"
    _ollama_model(models, "llama3:8b", layers=32, kv_heads=8, head_size=128,
                  weights=8 * 2**30)
    host = HostFacts(frozenset(), cpu_count=64, mem_total=meminfo_total(128), cards=(
        cards.Card("0000:43:00.0", 0, 32 << 30, {"rocm": cards.Seen("0000:43:00.0", 0)}),))
    def engine(name: str, port: int) -> str:
        return (f'[[engine]]\nname = "{name}"\nmodel = "llama3:8b"\n'
                f'listen = "127.0.0.1:{port}"\ngpus = ["0000:43:00.0"]\n'
                f'environment = {{ OLLAMA_MODELS = "{models}" }}\n')

    one = config.loads(engine("a", 11401))
    two = config.loads(engine("a", 11401) + engine("b", 11402))
    alone = host.tuning(one.engines[0], one.engines).environment["OLLAMA_NUM_PARALLEL"]
    shared = host.tuning(two.engines[0], two.engines)
    assert int(shared.environment["OLLAMA_NUM_PARALLEL"]) < int(alone)
    assert "card 0000:43:00.0, shared by 2 engines" in shared.why
    change = diff(one, two, {"a": "rocm"}, host)
    assert change.added == ("b",) and change.changed == ()
