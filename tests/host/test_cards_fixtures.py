"""The four-card host's probe outputs (tests/data/probes/*-four-cards.txt): each tier finds its
cards, and numbers them as that tier does. The host: an RX 580 at 03:00.0 that ROCm does not
list, a Raphael iGPU at 0c:00.0, two MI50s at 43:00.0 and 83:00.0."""

from __future__ import annotations

from pathlib import Path

from llm_supervisor.host.cards import opencl_seen, rocm_seen, vulkan_seen
from llm_supervisor.host.probes import _judge_opencl, _judge_rocm, _judge_vulkan

PROBES = Path(__file__).resolve().parents[1] / "data" / "probes"


def probe_output(name: str) -> str:
    """A fixture's text below its header comment."""
    return (PROBES / name).read_text().split("# ---\n", 1)[1]


ROCMINFO = probe_output("rocminfo-four-cards.txt")
VULKANINFO = probe_output("vulkaninfo-summary-four-cards.txt")
CLINFO = probe_output("clinfo-raw-four-cards.txt")


def test_every_tier_finds_its_gpus() -> None:
    for judge, text in ((_judge_rocm, ROCMINFO), (_judge_vulkan, VULKANINFO),
                        (_judge_opencl, CLINFO)):
        present, reason = judge(text)
        assert present, reason


def test_rocm_numbers_its_gpu_agents_and_knows_the_mi50s_by_their_ids() -> None:
    assert [(s.pci, s.index, s.uuid) for s in rocm_seen(ROCMINFO)] == [
        ("0000:0c:00.0", 0, ""),  # the iGPU has no unique id (GPU-XX)
        ("0000:43:00.0", 1, "GPU-12b008e17337ecd9"),
        ("0000:83:00.0", 2, "GPU-022849817348c2f7")]


def test_vulkan_numbers_discrete_cards_first_and_the_cpu_device_last() -> None:
    assert [(s.pci, s.index) for s in vulkan_seen(VULKANINFO)] == [
        ("0000:03:00.0", 0), ("0000:43:00.0", 1), ("0000:83:00.0", 2), ("0000:0c:00.0", 3)]
    assert "GPU4:\n\tapiVersion" in VULKANINFO  # llvmpipe takes a number, but has no address


def test_opencl_numbers_the_gpus_within_rocms_platform() -> None:
    """clinfo 3 prints the topology of a bus from 0x80 up sign-extended (PCI-E,
    0000:ffffff83:00.0): read as the card at 83:00.0."""
    assert [(s.pci, s.index) for s in opencl_seen(CLINFO)] == [
        ("0000:0c:00.0", 0), ("0000:43:00.0", 1), ("0000:83:00.0", 2)]
