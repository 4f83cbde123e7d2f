"""`llm-supervisorctl advise` against hand-computed cases (the arithmetic in llm_supervisor.tools.advise).

Shapes are Qwen2.5's (config.json on the model's card): 7B 7,615,616,512 parameters, 28 layers,
28 heads, 4 KV heads of size 128; 14B 14,770,033,664, 48 layers, 8 KV heads; 32B 32,763,876,352,
64 layers, 8 KV heads. GiB = 2**30 bytes.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from llm_supervisor.control import cli
from llm_supervisor.errors import AdviseError
from llm_supervisor.tools import advise
from llm_supervisor.tools.advise import GIB, Gpu, ModelShape

QWEN7 = ModelShape("qwen2.5:7b-instruct", 7_615_616_512, layers=28, kv_heads=4, head_size=128,
                   heads=28, max_context=32768)
QWEN14 = ModelShape("qwen2.5:14b", 14_770_033_664, layers=48, kv_heads=8, head_size=128)
QWEN32 = ModelShape("qwen2.5:32b", 32_763_876_352, layers=64, kv_heads=8, head_size=128)
MI50 = Gpu(16 * GIB, "--vram", 1024e9, "Vega 20")


def row(a: advise.Advice, quant: str) -> advise.Row:
    return next(r for r in a.rows if r.quant == quant)


def test_seeds_example_7b_on_16gb_recommends_q5_k_m():
    a = advise.advise(QWEN7, MI50, context=4096, parallel=1)
    # KV: 2 x 28 layers x 4 KV heads x 128 x 4096 tokens x 2 bytes = 234,881,024 B = 0.21875 GiB
    assert a.kv_cache == 234_881_024
    # Q5_K_M: 7,615,616,512 x 5.68 / 8 = 5,407,087,724 B (5.036 GiB); + KV + 1 GiB = 6.25 GiB
    q5 = row(a, "Q5_K_M")
    assert q5.weights == 5_407_087_724
    assert q5.needed == 5_407_087_724 + 234_881_024 + GIB
    assert q5.fits and q5.comfortable
    # bandwidth-bound ceiling: 1.024e12 B/s / 5.407e9 B per token = 189 tokens/s
    assert q5.tokens_per_second == pytest.approx(189.38, abs=0.01)
    assert a.recommended == "Q5_K_M"
    # "Q5_K_M or better fits": Q6_K and Q8_0 comfortably, F16 (14.19 GiB + 1.22) only tightly
    assert row(a, "Q6_K").comfortable and row(a, "Q8_0").comfortable
    assert row(a, "Q8_0").weights == 8_091_592_544
    f16 = row(a, "F16")
    assert f16.weights == 15_231_233_024 and f16.fits and not f16.comfortable


def test_14b_on_16gb_q5_k_m_fits_q8_0_does_not():
    a = advise.advise(QWEN14, MI50, context=4096)
    assert a.kv_cache == int(0.75 * GIB)                     # 2x48x8x128x4096x2
    assert row(a, "Q5_K_M").needed / GIB == pytest.approx(9.7665 + 0.75 + 1, abs=1e-3)
    assert a.recommended == "Q5_K_M"
    assert row(a, "Q6_K").fits                               # 11.28 + 1.75 = 13.03 GiB
    assert not row(a, "Q8_0").fits                           # 14.62 + 1.75 = 16.37 GiB > 16


def test_32b_on_16gb_only_q2_k_squeezes_in():
    a = advise.advise(QWEN32, MI50, context=4096)
    assert a.kv_cache == GIB                                  # 2x64x8x128x4096x2
    assert not row(a, "Q3_K_M").fits                          # 14.91 + 2 = 16.91 GiB
    q2 = row(a, "Q2_K")
    assert q2.fits and not q2.comfortable                     # 12.78 + 2 = 14.78 GiB > 14.4
    assert a.recommended == "Q2_K" and "tight" in a.why


def test_small_gpu_prefers_a_comfortable_smaller_quant_over_a_tight_q4_k_m():
    a = advise.advise(QWEN7, Gpu(6 * GIB, "--vram"), context=4096)
    assert row(a, "Q4_K_M").needed / GIB == pytest.approx(5.5098, abs=1e-3)   # > 5.4 = 90 %
    assert row(a, "Q4_K_M").fits and not row(a, "Q4_K_M").comfortable
    # Q4_0: 7,615,616,512 x 4.5 / 8 = 4,283,784,288 B (3.990 GiB) + 1.219 = 5.208 GiB <= 5.4
    assert row(a, "Q4_0").weights == 4_283_784_288
    assert row(a, "Q4_0").comfortable
    assert row(a, "Q3_K_M").needed / GIB == pytest.approx(4.6853, abs=1e-3)
    assert a.recommended == "Q4_0" and "no recommended k-quant" in a.why
    assert row(a, "Q4_0").tokens_per_second is None          # no bandwidth known


def test_context_parallel_and_kv_type_scale_the_cache():
    long = advise.advise(QWEN7, MI50, context=32768, parallel=4)
    assert long.kv_cache == 234_881_024 * 8 * 4               # 7 GiB
    assert long.recommended == "Q5_K_M"                        # 5.04 + 7 + 1 = 13.04 <= 14.4
    assert not row(long, "Q8_0").comfortable                   # 7.54 + 8 = 15.54
    q8kv = advise.advise(QWEN7, MI50, context=32768, parallel=4, kv_type="q8_0")
    assert q8kv.kv_cache == round(7 * GIB * 34 / 32 / 2)
    clipped = advise.advise(QWEN7, MI50, context=131072)
    assert clipped.context == 32768                            # the model's own maximum


def test_nothing_fits():
    a = advise.advise(QWEN32, Gpu(4 * GIB, "--vram"))  # the weights alone are too big
    assert a.recommended is None and "weights alone do not fit" in a.why
    assert "context" not in a.why and "smaller model" in a.why
    assert not any(r.fits for r in a.rows)
    # weights that fit, a context that does not: then a shorter context is the advice
    long = advise.advise(QWEN32, Gpu(24 * GIB, "--vram"), context=131072)
    assert long.recommended is None and "shorter context" in long.why


def test_the_kv_cache_is_counted_as_ollama_applies_it():
    """OLLAMA_KV_CACHE_TYPE quantises the cache only with OLLAMA_FLASH_ATTENTION=1."""
    assert advise.kv_cache_type({}) == ("f16", None)
    kv, note = advise.kv_cache_type({"OLLAMA_KV_CACHE_TYPE": "q8_0"})
    assert kv == "f16" and note is not None and "OLLAMA_FLASH_ATTENTION=1" in note
    assert advise.kv_cache_type({"OLLAMA_KV_CACHE_TYPE": "q8_0",
                                 "OLLAMA_FLASH_ATTENTION": "1"}) == ("q8_0", None)
    f16 = advise.advise(QWEN7, Gpu(16 * GIB, "--vram"), kv_type="f16")
    q8 = advise.advise(QWEN7, Gpu(16 * GIB, "--vram"), kv_type="q8_0")
    assert q8.kv_cache is not None and f16.kv_cache is not None
    assert abs(q8.kv_cache / f16.kv_cache - 34 / 64) < 0.01


def test_sizes_read_for_people():
    assert advise.human(512 * 1024**2) == "512 MiB"
    assert advise.human(4.37 * GIB) == "4.37 GiB"
    assert advise.human(3 * 1024**4) == "3.00 TiB"


@pytest.mark.parametrize("argv", [
    ["--vram", "-1"], ["--vram", "nan"], ["--vram", "inf"], ["--vram", "1e309"],
    ["--vram", "0"], ["--context", "-4096"], ["--context", "0"], ["--parallel", "-2"],
    ["--layers", "0"], ["--bandwidth", "nan"], ["--overhead", "-1"], ["--params", "0"],
    ["--params", "1e309"], ["--params", "nan"],
])
def test_nonsense_is_refused_with_a_clear_line(argv, capsys):
    args = ["advise", "--params", "7.6B", "--vram", "16"]
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        at = args.index(flag) if flag in args else None
        if at is None:
            args += [flag, value]
        else:
            args[at + 1] = value
    with pytest.raises(SystemExit) as exited:
        code = cli.cli(args)
        raise SystemExit(code)
    assert exited.value.code in (1, 2)
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err
    assert any(word in err for word in ("above 0", ">= 0", "not a number",
                                        "not a parameter count")), err


def test_context_is_never_dropped_silently(capsys):
    assert cli.cli(["advise", "--params", "7.6B", "--vram", "16", "--context", "131072"]) == 0
    out = capsys.readouterr().out
    assert "note: KV cache not counted" in out and "131072 tokens" in out
    assert "without the KV cache" in out


SHOW = {
    "details": {"family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"},
    "model_info": {"general.architecture": "qwen2", "general.parameter_count": 7615616512,
                   "qwen2.block_count": 28, "qwen2.context_length": 32768,
                   "qwen2.embedding_length": 3584, "qwen2.attention.head_count": 28,
                   "qwen2.attention.head_count_kv": 4},
}


def test_shape_from_ollama_show():
    shape = advise.shape_from_show("qwen2.5:7b-instruct", SHOW)
    assert shape == ModelShape("qwen2.5:7b-instruct", 7615616512, layers=28, kv_heads=4,
                               head_size=128, heads=28, max_context=32768, quantization="Q4_K_M")
    with pytest.raises(AdviseError, match="parameter count"):
        advise.shape_from_show("x", {"model_info": {}})


def test_gpu_from_sysfs_and_smi(tmp_path):
    card = tmp_path / "card1" / "device"
    card.mkdir(parents=True)
    (card / "mem_info_vram_total").write_text("17163091968\n")
    (card / "device").write_text("0x66a1\n")
    gpu = advise.detect_gpu(tmp_path, run=lambda argv: None)
    assert gpu.vram == 17163091968 and gpu.bandwidth == 1024e9 and "card1" in gpu.source

    rocm_smi = json.dumps({"card0": {"VRAM Total Memory (B)": "17163091968",
                                     "VRAM Total Used Memory (B)": "10"}})
    answers = {"rocm-smi": rocm_smi}
    gpu = advise.detect_gpu(tmp_path / "none", run=lambda argv: answers.get(argv[0]))
    assert gpu.vram == 17163091968 and gpu.source == "rocm-smi --showmeminfo"
    amd_smi = json.dumps([{"gpu": 0, "vram": {"type": "HBM", "size": {"value": 16368,
                                                                      "unit": "MB"}}}])
    assert advise.vram_from_smi_json(amd_smi) == 16368 * 1024**2
    with pytest.raises(AdviseError, match="--vram"):
        advise.detect_gpu(tmp_path / "none", run=lambda argv: None)


def sysfs_cards(root):
    """Two MI50s and an RX 580 as sysfs has them: each card's device is its PCI address."""
    drm = root / "drm"
    for card, address, vram, device in (("card0", "0000:03:00.0", 8 << 30, "0x67df"),
                                        ("card1", "0000:43:00.0", 32 << 30, "0x66a1"),
                                        ("card2", "0000:83:00.0", 32 << 30, "0x66a1")):
        where = root / "devices" / address
        where.mkdir(parents=True)
        (where / "mem_info_vram_total").write_text(f"{vram}\n")
        (where / "device").write_text(f"{device}\n")
        (drm / card).mkdir(parents=True)
        (drm / card / "device").symlink_to(where)
    return drm


def test_advice_for_an_engine_is_on_its_own_cards_share(tmp_path):
    """Two engines on one MI50: each is advised for half its memory, not the largest card."""
    drm = sysfs_cards(tmp_path)
    conf = tmp_path / "supervisor.toml"
    conf.write_text('[[engine]]\nname = "a"\ngpus = ["0000:43:00.0"]\n'
                    'listen = "127.0.0.1:11401"\n'
                    '[[engine]]\nname = "b"\ngpus = [1]\nlisten = "127.0.0.1:11402"\n'
                    '[[engine]]\nname = "small"\ngpus = ["0000:03:00.0"]\n'
                    'listen = "127.0.0.1:11403"\n')
    args = _args(engine="a", config=str(conf), params="7.6B", layers=28, kv_heads=4,
                 head_size=128)
    a = advise.command(args, drm=drm)
    assert a.gpu.vram == 16 << 30 and a.gpu.bandwidth == 1024e9
    assert "card 0000:43:00.0, shared by 2 engines" in a.gpu.source
    small = advise.command(_args(**{**vars(args), "engine": "small"}), drm=drm)
    assert small.gpu.vram == 8 << 30 and small.gpu.bandwidth is None
    conf.write_text('[[engine]]\nname = "a"\ngpus = ["0000:44:00.0"]\n')
    with pytest.raises(AdviseError, match="0000:44:00.0.*not known.*0000:03:00.0"):
        advise.command(_args(**{**vars(args), "config": str(conf)}), drm=drm)


def _args(**kw):
    base = dict(engine=None, model=None, vram=None, bandwidth=None, params=None, layers=None,
                kv_heads=None, head_size=None, context=None, parallel=None, overhead=1.0,
                config="/nonexistent", json=False)
    return SimpleNamespace(**{**base, **kw})


def test_command_asks_the_engine(tmp_path):
    conf = tmp_path / "supervisor.toml"
    conf.write_text('[[engine]]\nname = "main"\nexec = "/bin/sleep infinity"\n'
                    'model = "qwen2.5:7b-instruct"\nlisten = "127.0.0.1:11499"\n'
                    'environment = { OLLAMA_NUM_PARALLEL = "2", OLLAMA_CONTEXT_LENGTH = "8192" }\n')
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json=SHOW)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    a = advise.command(_args(engine="main", config=str(conf), vram=16), drm=tmp_path,
                       client=client)
    assert seen == [("/api/show", {"model": "qwen2.5:7b-instruct"})]
    assert (a.context, a.parallel) == (8192, 2)
    assert a.kv_cache == 234_881_024 * 2 * 2
    assert a.recommended == "Q5_K_M"
    text = advise.format_advice(a)
    assert "the engine has Q4_K_M" in text and "recommended: Q5_K_M" in text
    assert "KV cache = 2 x 28 layers x 4 KV heads x 128 x 8192 tokens x 2 parallel" in text


def test_cli_advise_offline_json(capsys):
    code = cli.cli(["advise", "--params", "7.6B", "--layers", "28", "--kv-heads", "4",
                    "--head-size", "128", "--vram", "16", "--bandwidth", "1024", "--json"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["recommended"] == "Q5_K_M"
    assert document["model"]["parameters"] == 7_600_000_000
    assert {r["quant"] for r in document["rows"]} >= {"Q4_K_M", "Q5_K_M", "Q8_0", "F16"}


def test_cli_advise_text_and_errors(capsys):
    assert cli.cli(["advise", "--params", "7.6B", "--vram", "16"]) == 0
    out = capsys.readouterr().out
    assert "note: KV cache not counted" in out and "recommended: Q5_K_M" in out
    assert cli.cli(["advise", "--params", "seven", "--vram", "16"]) == 2  # a bad argument: usage, like --layers -3
    assert "not a parameter count" in capsys.readouterr().err


def test_cli_advise_asks_a_running_engine(tmp_path, capsys):
    """End to end: the simulated Ollama answers /api/show over HTTP like the real one."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = subprocess.Popen([sys.executable, "-m", "llm_supervisor.simengine", "serve",
                            "--listen", f"127.0.0.1:{port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the simulated engine did not start"
            time.sleep(0.1)
        conf = tmp_path / "supervisor.toml"
        conf.write_text(f'[[engine]]\nname = "main"\nexec = "/bin/sleep infinity"\n'
                        f'model = "qwen2.5:7b-instruct"\nlisten = "127.0.0.1:{port}"\n'
                        'environment = { OLLAMA_NUM_PARALLEL = "1" }\n')
        assert cli.cli(["advise", "main", "--config", str(conf), "--vram", "16",
                        "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["model"]["parameters"] == 7615616512
        assert document["model"]["quantization"] == "Q4_K_M"
        assert document["kv_cache"] == 234_881_024
        assert document["recommended"] == "Q5_K_M"
        assert cli.cli(["advise", "main", "--config", str(conf), "--vram", "16",
                        "--model", "llama3:70b"]) == 1
        assert "HTTP 404" in capsys.readouterr().err
    finally:
        sim.terminate()
        sim.wait(10)
