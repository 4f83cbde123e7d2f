"""`llm-supervisorctl doctor` on recorded tool outputs: each check, its evidence and its fix."""

from __future__ import annotations

import json
from pathlib import Path

from llm_supervisor import config
from llm_supervisor.host.ports import Holder
from llm_supervisor.tools import doctor
from llm_supervisor.tools.doctor import FAIL, PASS, WARN, Facts, FileInfo

PROBES = Path(__file__).resolve().parents[1] / "data/probes"
MODELS = "/usr/share/ollama/.ollama/models"
MANIFEST = f"{MODELS}/manifests/registry.ollama.ai/library/qwen2.5/7b-instruct"

STOCK = """
[[engine]]
name = "main"
kind = "ollama"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11434"
model = "qwen2.5:7b-instruct"
"""


def mi50_host(text: str = STOCK, **changes) -> Facts:
    """An MI50 host with stock Ollama installed by its script (ollama user, models in its home)."""
    facts = Facts(
        config=config.loads(text, "/etc/llm-supervisor/supervisor.toml"),
        devices={"/dev/kfd": "render", "/dev/dri/renderD128": "render"},
        groups={"render": {"ollama"}, "video": {"ollama"}, "ollama": {"ollama"},
                "llm-supervisor": set()},
        users={"root", "ollama"}, user_homes={"ollama": "/usr/share/ollama"},
        user_ids={"ollama": (999, {999, 105, 44})},
        rocminfo=(PROBES / "rocminfo-mi50.txt").read_text(),
        vulkaninfo=(PROBES / "vulkaninfo-summary-radv.txt").read_text(),
        clinfo=(PROBES / "clinfo-amd-gfx900.txt").read_text(),
        programs={"/usr/local/bin/ollama": True},
        versions={"/usr/local/bin/ollama": "ollama version is 0.15.2"},
        holders={"127.0.0.1:11434": None},
        files={MODELS: FileInfo(999, 999, 0o40755, True),
               MANIFEST: FileInfo(999, 999, 0o100644, False)},
        systemd_version="systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT",
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def by_name(checks):
    return {c.name: c for c in checks}


def test_mi50_with_stock_ollama_names_gfx906_and_the_fix():
    checks = by_name(doctor.diagnose(mi50_host()))
    assert checks["gfx target"].status == PASS
    assert "gfx906 (AMD Instinct MI50/MI60)" in checks["gfx target"].evidence
    rocm = checks["main: rocm build"]
    assert rocm.status == FAIL
    assert "gfx906" in rocm.evidence and "dropping ROCm device" in rocm.evidence
    assert "[engine.tiers.rocm].exec" in rocm.fix and "gfx906-capable" in rocm.fix
    assert 'chain = ["vulkan", "opencl", "cpu"]' in rocm.fix
    assert checks["vulkan device"].status == PASS and "RADV" in checks["vulkan device"].evidence
    assert checks["main: ollama"].evidence.endswith("ollama version is 0.15.2")
    assert checks["main: model"].status == PASS
    assert checks["socket group"].status == PASS and checks["systemd"].status == PASS
    report = doctor.document(list(by_name(doctor.diagnose(mi50_host())).values()))
    assert report["ok"] is False and report["counts"]["FAIL"] == 1
    json.dumps(report)


def test_a_gfx906_build_or_a_vulkan_chain_passes():
    with_build = STOCK + '[engine.tiers.rocm]\nexec = "/opt/ollama-gfx906/bin/ollama serve"\n'
    facts = mi50_host(with_build, programs={"/usr/local/bin/ollama": True,
                                            "/opt/ollama-gfx906/bin/ollama": True})
    checks = by_name(doctor.diagnose(facts))
    assert checks["main: rocm build"].status == PASS
    assert "ollama-gfx906" in checks["main: rocm build"].evidence
    vulkan_first = STOCK + 'chain = ["vulkan", "cpu"]\n'
    assert by_name(doctor.diagnose(mi50_host(vulkan_first)))["main: rocm build"].status == PASS
    assert doctor.document(doctor.diagnose(mi50_host(vulkan_first)))["ok"] is True


def test_the_port_held_by_the_stock_ollama_service_fails_naming_it():
    held = Holder(pid=812, process="ollama", unit="ollama.service")
    checks = by_name(doctor.diagnose(mi50_host(holders={"127.0.0.1:11434": held})))
    check = checks["main: listen 127.0.0.1:11434"]
    assert check.status == FAIL
    assert "pid 812 (ollama) of ollama.service" in check.evidence
    assert "llm-supervisorctl adopt ollama.service" in check.fix
    # held by the engine's own unit: that is the engine serving
    own = Holder(pid=900, process="ollama", unit="llm-main.service")
    ok = by_name(doctor.diagnose(mi50_host(holders={"127.0.0.1:11434": own})))
    assert ok["main: listen 127.0.0.1:11434"].status == PASS


def test_a_host_without_a_gpu():
    facts = mi50_host(devices={}, rocminfo=(PROBES / "rocminfo-no-rock.txt").read_text(),
                      vulkaninfo=(PROBES / "vulkaninfo-summary-llvmpipe.txt").read_text(),
                      clinfo=(PROBES / "clinfo-raw-pocl.txt").read_text())
    checks = by_name(doctor.diagnose(facts))
    assert checks["device /dev/kfd"].status == WARN and "modprobe amdgpu" in checks[
        "device /dev/kfd"].fix
    assert checks["gfx target"].status == WARN
    assert checks["vulkan device"].status == WARN and "llvmpipe" in checks["vulkan device"].evidence
    assert checks["opencl device"].status == WARN
    assert "main: rocm build" not in checks  # no GPU agent: nothing to judge


def test_models_files_users_and_config_problems():
    home = STOCK.replace('model = ', 'environment = { OLLAMA_MODELS = "/home/al/models" }\nmodel = ')
    check = by_name(doctor.diagnose(mi50_host(home)))["main: models dir"]
    assert check.status == FAIL and "ProtectHome" in check.evidence
    outside = STOCK.replace('model = ', 'environment = { OLLAMA_MODELS = "/srv/models" }\nmodel = ')
    facts = mi50_host(outside, files={"/srv/models": FileInfo(999, 999, 0o40755, True)})
    checks = by_name(doctor.diagnose(facts))
    assert checks["main: models dir"].status == FAIL and "writable" in checks["main: models dir"].fix
    assert checks["main: model"].status == FAIL and "ollama pull qwen2.5:7b-instruct" in checks[
        "main: model"].fix
    root_owned = mi50_host(files={MODELS: FileInfo(0, 0, 0o40755, True)})
    assert by_name(doctor.diagnose(root_owned))["main: models dir"].status == FAIL
    missing = by_name(doctor.diagnose(mi50_host(programs={}, users={"root"})))
    assert missing["main: ollama"].status == FAIL and missing["user ollama"].status == FAIL
    assert missing["main: ollama"].fix.startswith("install Ollama (ollama) there")
    llama = config.loads('[[engine]]\nname = "l"\nkind = "llama-server"\n'
                         'exec = "/opt/llama/bin/llama-server -m /models/x.gguf"\n'
                         'listen = "127.0.0.1:8080"\nuser = "root"\ngroup = "root"\n')
    facts = mi50_host(programs={})
    facts.config = llama
    fix = by_name(doctor.diagnose(facts))["l: llama-server"].fix
    assert fix.startswith("install llama.cpp's llama-server there") and "ollama" not in fix
    no_group = by_name(doctor.diagnose(mi50_host(groups={"video": {"ollama"}})))
    assert no_group["socket group"].status == FAIL and no_group["group render"].status == WARN
    broken = by_name(doctor.diagnose(Facts(config_errors=["supervisor.toml: engine.x: bad"])))
    assert broken["config"].status == FAIL and "engine.x" in broken["config"].evidence


def test_output_shows_status_evidence_and_fix():
    text = doctor.format_checks(doctor.diagnose(mi50_host()))
    assert "FAIL  main: rocm build" in text and "fix: set [engine.tiers.rocm].exec" in text
    assert text.splitlines()[-1].endswith("1 failed")


def test_model_manifest_paths():
    assert doctor.model_manifest("/m", "qwen2.5:7b") == "/m/manifests/registry.ollama.ai/library/qwen2.5/7b"
    assert doctor.model_manifest("/m", "me/mine") == "/m/manifests/registry.ollama.ai/me/mine/latest"


def test_zero_engines_say_what_to_do():
    from llm_supervisor.control.cli import format_status
    out = format_status({"engines": [], "supervisor": {}})
    assert "no engines configured" in out and "adopt ollama.service" in out
    assert by_name(doctor.diagnose(mi50_host("")))["config"].status == WARN


FOUR = """
[[engine]]
name = "polaris"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11401"
gpus = ["0000:03:00.0"]
[[engine]]
name = "a"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11402"
gpus = [2]
[[engine]]
name = "b"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11403"
gpus = ["0000:43:00.0"]
[[engine]]
name = "igpu"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11404"
gpus = ["0000:0c:00.0"]
[[engine]]
name = "igpu2"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11405"
gpus = ["0000:0c:00.0"]
[[engine]]
name = "gone"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11406"
gpus = [7]
[[engine]]
name = "anywhere"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11407"
"""


def four_card_host(text: str = FOUR) -> Facts:
    """Two MI50s, an iGPU and an RX 580 ROCm dropped (the probe fixtures of four cards)."""
    return mi50_host(
        text, rocminfo=(PROBES / "rocminfo-four-cards.txt").read_text(),
        vulkaninfo=(PROBES / "vulkaninfo-summary-four-cards.txt").read_text(),
        clinfo=(PROBES / "clinfo-raw-four-cards.txt").read_text(),
        vram={"0000:03:00.0": 8 << 30, "0000:0c:00.0": 512 << 20, "0000:43:00.0": 32 << 30,
              "0000:83:00.0": 32 << 30})


def test_doctor_lists_the_cards_each_tiers_number_and_whose_they_are():
    checks = doctor.check_cards(four_card_host())
    lines = {c.name: c for c in checks if c.name.startswith("card ")}
    assert [lines[f"card {n}"].evidence.split()[0] for n in range(4)] == [
        "0000:03:00.0", "0000:0c:00.0", "0000:43:00.0", "0000:83:00.0"]
    mi50 = lines["card 2"].evidence
    assert "gfx906" in mi50 and "32.0 GiB" in mi50 and "rocm 1" in mi50 and "vulkan 1" in mi50
    assert "opencl 1" in mi50 and mi50.endswith("engines: a, b")
    assert "vulkan 0" in lines["card 0"].evidence and "rocm" not in lines["card 0"].evidence
    assert lines["card 3"].evidence.endswith("engines: none")


def test_doctor_fails_a_card_with_more_engines_than_fit_and_a_card_the_host_lacks():
    checks = doctor.check_cards(four_card_host())
    said = {}
    for c in checks:
        said.setdefault(c.name, []).append(c)
    # the iGPU's 512 MiB for two engines: 256 MiB each, less than an engine needs
    igpu = said["engine igpu cards"]
    assert [c.status for c in igpu] == [FAIL] and "0.25 GiB" in igpu[0].evidence
    assert "shared by 2 engines" in igpu[0].evidence
    assert [c.status for c in said["engine gone cards"]] == [FAIL]
    assert "card 7 is not on this host (it has 4 cards)" in said["engine gone cards"][0].evidence
    # ROCm dropped the RX 580: that engine skips rocm, said, and its 8 GiB are its own
    polaris = said["engine polaris cards"]
    assert [c.status for c in polaris] == [WARN, PASS]
    assert "skips rocm: rocm does not list card 0000:03:00.0" in polaris[0].evidence
    assert [c.status for c in said["engine a cards"]] == [WARN, PASS]  # named by number
    assert said["engine a cards"][0].fix == 'name it by address: gpus = ["0000:43:00.0"]'
    assert "16.0 GiB: card 0000:43:00.0, shared by 2 engines" in said["engine a cards"][1].evidence
    anywhere = said["engine anywhere cards"]
    assert [c.status for c in anywhere] == [WARN] and "may use all 4" in anywhere[0].evidence
    assert not doctor.document(doctor.diagnose(four_card_host()))["ok"]


def test_doctor_passes_engines_each_on_a_card_of_its_own():
    text = """
[[engine]]
name = "a"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11402"
gpus = ["43:00.0"]
[[engine]]
name = "b"
exec = "/usr/local/bin/ollama serve"
listen = "127.0.0.1:11403"
gpus = ["0000:83:00.0"]
"""
    checks = doctor.check_cards(four_card_host(text))
    assert {c.status for c in checks} == {PASS}, [c for c in checks if c.status != PASS]
    assert [c.name for c in checks if c.name.startswith("engine")] == ["engine a cards",
                                                                       "engine b cards"]


def test_a_vulkaninfo_too_old_to_say_device_uuids_is_said():
    old = (PROBES / "vulkaninfo-summary-four-cards.txt").read_text()
    old = "\n".join(line for line in old.splitlines() if "deviceUUID" not in line)
    checks = doctor.check_cards(mi50_host(FOUR, rocminfo=(PROBES / "rocminfo-four-cards.txt")
                                          .read_text(), vulkaninfo=old))
    said = [c for c in checks if c.name == "vulkan card addresses"]
    assert [c.status for c in said] == [WARN] and "deviceUUID" in said[0].evidence
    assert not [c for c in doctor.check_cards(four_card_host())
                if c.name == "vulkan card addresses"]
