"""The simulated host's cards: the probe tools' outputs it prints, and the card the simulated
Ollama holds to, chosen from the variables real Ollama reads."""

# ruff: noqa: F811  (``start``, the simulated-engine fixture, is imported and then requested)
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_simengine import INHERITED, Sim, slog_attrs, start  # noqa: F401

from llm_supervisor import pci
from llm_supervisor.host.cards import from_radv_uuid
from llm_supervisor.simengine.cards import HOSTS, amdgpu_lines, card_for, host_cards
from llm_supervisor.simengine.placement import choose_library

PROBES = Path(__file__).resolve().parents[1] / "data" / "probes"
FOUR = {"SIMENGINE_CARDS": "four"}
MI50_43, MI50_83 = "0000:43:00.0", "0000:83:00.0"


def simengine(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not INHERITED.match(k)}
    return subprocess.run([sys.executable, "-m", "llm_supervisor.simengine", *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("fixture", "argv"), [
    ("rocminfo-four-cards.txt", ["rocminfo"]),
    ("vulkaninfo-summary-four-cards.txt", ["vulkaninfo", "--summary"]),
    ("clinfo-raw-four-cards.txt", ["clinfo", "--raw"]),
])
def test_it_prints_the_four_card_hosts_probe_outputs(fixture: str, argv: list[str]) -> None:
    done = simengine(*argv, env=FOUR)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (PROBES / fixture).read_text().split("# ---\n", 1)[1]


def test_the_default_host_lists_its_one_mi50_and_other_arguments_are_refused() -> None:
    rocminfo = simengine("rocminfo", env={}).stdout
    assert "Marketing Name:          AMD Instinct MI50\n" in rocminfo
    assert "BDFID:                   768\n" in rocminfo  # 03:00.0
    assert rocminfo.count("Device Type:             GPU") == 1
    refused = simengine("vulkaninfo", env={})
    assert refused.returncode == 2 and "vulkaninfo --summary" in refused.stderr
    assert simengine("rocminfo", env={"SIMENGINE_CARDS": "nine"}).returncode == 2


def chosen(env: dict[str, str]) -> tuple[str, str | None, int | None]:
    """The library Ollama would take on the four-card host, its card's address and number."""
    env = {**FOUR, **env}
    library = choose_library(env)[0]
    found = card_for(host_cards(env), library, env) if library != "cpu" else None
    return library, found[0].pci if found else None, found[1] if found else None


@pytest.mark.parametrize(("env", "expected"), [
    ({}, ("rocm", "0000:0c:00.0", 0)),  # ROCm's first GPU agent
    ({"ROCR_VISIBLE_DEVICES": "1"}, ("rocm", MI50_43, 0)),
    ({"ROCR_VISIBLE_DEVICES": "GPU-022849817348c2f7"}, ("rocm", MI50_83, 0)),
    ({"ROCR_VISIBLE_DEVICES": "1,2", "HIP_VISIBLE_DEVICES": "1"}, ("rocm", MI50_83, 0)),
    ({"ROCR_VISIBLE_DEVICES": "-1", "GGML_VK_VISIBLE_DEVICES": "2"}, ("vulkan", MI50_83, 0)),
    ({"ROCR_VISIBLE_DEVICES": "-1"}, ("vulkan", "0000:03:00.0", 0)),  # Vulkan's first card
    ({"ROCR_VISIBLE_DEVICES": "-1", "GGML_VK_VISIBLE_DEVICES": "4,1"}, ("vulkan", MI50_43, 1)),
    # the RX 580 has no ROCm number: selecting past ROCm's list leaves ROCm no device
    ({"ROCR_VISIBLE_DEVICES": "3"}, ("vulkan", "0000:03:00.0", 0)),
    ({"ROCR_VISIBLE_DEVICES": "3", "OLLAMA_VULKAN": "0"}, ("cpu", None, None)),
    ({"ROCR_VISIBLE_DEVICES": "GPU-ffffffffffffffff", "GGML_VK_VISIBLE_DEVICES": "-1"},
     ("cpu", None, None)),
    ({"ROCR_VISIBLE_DEVICES": "-1", "GGML_VK_VISIBLE_DEVICES": "4"}, ("cpu", None, None)),
])
def test_ollama_holds_to_the_selected_card(env: dict[str, str], expected: tuple) -> None:
    assert chosen(env) == expected


def test_the_default_host_is_one_mi50_at_03() -> None:
    (card,) = host_cards({})
    assert (card.pci, card.name, card.gfx) == ("0000:03:00.0", "AMD Instinct MI50", "gfx906")
    assert card_for(HOSTS["one"], "vulkan", {}) == (card, 0)
    assert from_radv_uuid(card.radv_uuid) == card.pci
    assert choose_library({"ROCR_VISIBLE_DEVICES": "0"})[0] == "rocm"
    assert choose_library({"ROCR_VISIBLE_DEVICES": "1"})[0] == "vulkan"


def test_the_kernel_names_the_card_in_each_amdgpu_line() -> None:
    lines = amdgpu_lines(MI50_43, signaled=41, emitted=43)
    assert lines[0] == ("amdgpu 0000:43:00.0: amdgpu: ring gfx timeout, signaled seq=41, "
                        "emitted seq=43")
    assert "amdgpu 0000:43:00.0: amdgpu: GPU reset begin!" in lines
    assert lines[-1] == "amdgpu 0000:43:00.0: amdgpu: GPU Recovery Failed: -22"
    assert {pci.in_line(line) for line in lines} == {MI50_43}


def llama_device_line(sim: Sim) -> str:
    assert sim.generate().status_code == 200
    return sim.wait_line("using device")


@pytest.mark.parametrize(("env", "library", "address", "description", "device_id"), [
    ({"ROCR_VISIBLE_DEVICES": "1"}, "ROCm", MI50_43, "AMD Instinct MI50/MI60", "0"),
    ({"ROCR_VISIBLE_DEVICES": "-1", "GGML_VK_VISIBLE_DEVICES": "2"}, "Vulkan", MI50_83,
     "AMD Instinct MI50/MI60 (RADV VEGA20)", "00000000-8300-0000-0000-000000000000"),
])
def test_the_log_names_the_card_it_holds_to(start, env, library, address, description,
                                            device_id) -> None:
    sim = start(env={**FOUR, **env}).ready()
    attrs = slog_attrs(sim.wait_line('msg="inference compute"'))
    assert {k: attrs[k] for k in ("id", "library", "name", "description", "compute", "pci_id",
                                  "type", "total", "available")} == {
        "id": device_id, "library": library, "name": f"{library}0", "description": description,
        "compute": "gfx906" if library == "ROCm" else "0.0", "pci_id": address,
        "type": "discrete", "total": "32.0 GiB", "available": "32.0 GiB"}
    assert llama_device_line(sim) == (f"llama_model_load_from_file_impl: using device "
                                      f"{library}0 ({description}) ({address}) - 32732 MiB free")


def test_the_igpu_is_an_igpu_and_rocm_numbers_it_first(start) -> None:
    attrs = slog_attrs(start(env=FOUR).ready().wait_line('msg="inference compute"'))
    assert (attrs["pci_id"], attrs["name"], attrs["type"], attrs["total"]) == (
        "0000:0c:00.0", "ROCm0", "iGPU", "0.5 GiB")


def test_before_0_30_llama_cpp_does_not_name_the_address(start) -> None:
    new = llama_device_line(start().ready())
    assert new.endswith("using device ROCm0 (AMD Instinct MI50) (0000:03:00.0) - 16304 MiB free")
    old = llama_device_line(start("--ollama-version", "0.29.0").ready())
    assert old.endswith("using device ROCm0 (AMD Instinct MI50) - 16304 MiB free")


def test_an_unknown_host_exits_2(start) -> None:
    sim = start(env={"SIMENGINE_CARDS": "nine"})
    assert sim.wait_exit() == 2
    assert "SIMENGINE_CARDS='nine'" in sim.log
