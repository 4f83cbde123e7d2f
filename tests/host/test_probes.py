"""Host probes, on this machine's real tools and on recorded outputs from real AMD hosts.

This build machine has no AMD GPU: rocminfo, vulkaninfo (llvmpipe) and clinfo (PoCL) are installed
and must all say "no". The positive cases replay outputs recorded on AMD hosts (tests/data/probes/,
each file says where it comes from) through a tiny script, so the real subprocess path runs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import time
from pathlib import Path

import pytest

from llm_supervisor.host import probes
from llm_supervisor.host.probes import (
    ProbeResult,
    parse_clinfo,
    parse_rocminfo,
    parse_vulkan_summary,
    probe,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "probes"


def recorded(name: str) -> str:
    """A recorded output without its provenance header (everything up to the "# ---" line)."""
    return (DATA / name).read_text().split("# ---\n", 1)[1]


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def replay(tmp_path: Path, name: str) -> list[str]:
    """A command that prints a recorded output, as the real tool would have."""
    return [script(tmp_path, f"replay-{name}", f"exec sed '1,/^# ---$/d' '{DATA / name}'")]


def require(tool: str) -> None:
    assert shutil.which(tool), f"{tool} must be installed on this machine for this test"


def assert_well_formed(result: ProbeResult, tier: str) -> None:
    assert result.tier == tier
    assert result.reason and "\n" not in result.reason
    assert result.checked_at.endswith("Z") and "T" in result.checked_at
    assert json.loads(json.dumps(result.to_dict()))["tier"] == tier


# ---------------------------------------------------------------- this machine's real tools

async def test_rocm_absent_without_kfd() -> None:
    result = await probe("rocm", kfd="/dev/kfd")
    assert_well_formed(result, "rocm")
    assert not Path("/dev/kfd").exists()
    assert result.present is False
    assert result.reason.startswith("/dev/kfd is missing")
    assert result.command == ()


async def test_real_rocminfo_without_rock_module_is_no_gpu(tmp_path: Path) -> None:
    require("rocminfo")
    kfd = tmp_path / "kfd"
    kfd.touch()  # let the probe get past the device check, so rocminfo itself answers
    result = await probe("rocm", kfd=str(kfd))
    assert_well_formed(result, "rocm")
    assert result.present is False
    assert result.command == ("rocminfo",)
    assert "ROCk module is NOT loaded" in result.reason
    assert "ROCk module is NOT loaded" in result.evidence
    assert "\x1b[" not in result.evidence  # rocminfo colours that line; evidence is plain text


async def test_real_vulkaninfo_lists_only_llvmpipe() -> None:
    require("vulkaninfo")
    result = await probe("vulkan")
    assert_well_formed(result, "vulkan")
    assert result.present is False
    assert result.command == ("vulkaninfo", "--summary")
    assert result.returncode == 0
    assert result.reason.startswith("only software devices: llvmpipe")
    assert "PHYSICAL_DEVICE_TYPE_CPU" in result.reason
    assert "deviceType         = PHYSICAL_DEVICE_TYPE_CPU" in result.evidence


async def test_real_clinfo_lists_only_pocl_cpu() -> None:
    require("clinfo")
    result = await probe("opencl")
    assert_well_formed(result, "opencl")
    assert result.present is False
    assert result.command == ("clinfo", "--raw")
    assert result.returncode == 0
    assert result.reason.startswith("clinfo: no GPU device (Portable Computing Language: pthread-")
    assert result.reason.endswith(" is CPU)")
    assert "CL_DEVICE_TYPE_CPU" in result.evidence


async def test_cpu_is_always_present() -> None:
    result = await probe("cpu")
    assert_well_formed(result, "cpu")
    assert result.present is True
    assert result.command == () and result.returncode is None


async def test_probe_all_runs_every_tier_concurrently() -> None:
    for tool in ("vulkaninfo", "clinfo"):
        require(tool)
    results = await probes.probe_all()
    assert list(results) == list(probes.TIERS)
    assert {t: r.present for t, r in results.items()} == {
        "rocm": False, "vulkan": False, "opencl": False, "cpu": True}


async def test_unknown_tier_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="cuda"):
        await probe("cuda")


# ---------------------------------------------------------------- recorded AMD hosts, replayed

async def test_rocm_present_from_recorded_mi50(tmp_path: Path) -> None:
    kfd = tmp_path / "kfd"
    kfd.touch()
    command = replay(tmp_path, "rocminfo-mi50.txt")
    result = await probe("rocm", kfd=str(kfd), commands={"rocm": command})
    assert_well_formed(result, "rocm")
    assert result.present is True
    assert result.reason == "rocminfo lists GPU agent gfx906 (AMD Instinct MI50/MI60)"
    assert result.command == tuple(command) and result.returncode == 0
    assert "Device Type:             GPU" in result.evidence


async def test_recorded_mi50_is_still_absent_without_kfd(tmp_path: Path) -> None:
    result = await probe("rocm", kfd=str(tmp_path / "kfd"),
                         commands={"rocm": replay(tmp_path, "rocminfo-mi50.txt")})
    assert result.present is False
    assert result.reason.startswith(f"{tmp_path / 'kfd'} is missing")


async def test_vulkan_present_from_recorded_radv(tmp_path: Path) -> None:
    command = replay(tmp_path, "vulkaninfo-summary-radv.txt")
    result = await probe("vulkan", commands={"vulkan": command})
    assert_well_formed(result, "vulkan")
    assert result.present is True
    assert result.reason == (
        "vulkaninfo lists AMD Radeon RX 9070 XT (RADV GFX1201) (PHYSICAL_DEVICE_TYPE_DISCRETE_GPU, "
        "vendorID 0x1002, DRIVER_ID_MESA_RADV)")
    assert "llvmpipe" not in result.reason


async def test_opencl_present_from_recorded_amd_gpu(tmp_path: Path) -> None:
    result = await probe("opencl", commands={"opencl": replay(tmp_path, "clinfo-amd-gfx900.txt")})
    assert_well_formed(result, "opencl")
    assert result.present is True
    assert result.reason == "clinfo lists GPU device gfx900 (AMD Accelerated Parallel Processing)"


# ---------------------------------------------------------------- parsers on recorded text

def test_parse_rocminfo_mi50_keeps_agent_names_not_isa_names() -> None:
    agents = parse_rocminfo(recorded("rocminfo-mi50.txt"))
    assert [(a["name"], a["marketing_name"], a["device_type"]) for a in agents] == [
        ("AMD EPYC 7452 32-Core Processor", "AMD EPYC 7452 32-Core Processor", "CPU"),
        ("gfx906", "AMD Instinct MI50/MI60", "GPU"),
    ]


def test_parse_rocminfo_without_rock_module_finds_no_agents() -> None:
    assert parse_rocminfo(recorded("rocminfo-no-rock.txt")) == []


def test_parse_vulkan_summary_radv_and_llvmpipe() -> None:
    devices = parse_vulkan_summary(recorded("vulkaninfo-summary-radv.txt"))
    assert [(d["deviceType"], d["vendorID"], d["driverID"]) for d in devices] == [
        ("PHYSICAL_DEVICE_TYPE_DISCRETE_GPU", "0x1002", "DRIVER_ID_MESA_RADV"),
        ("PHYSICAL_DEVICE_TYPE_CPU", "0x10005", "DRIVER_ID_MESA_LLVMPIPE"),
    ]
    assert devices[1]["deviceName"] == "llvmpipe (LLVM 21.1.8, 256 bits)"


def test_parse_vulkan_summary_llvmpipe_only() -> None:
    devices = parse_vulkan_summary(recorded("vulkaninfo-summary-llvmpipe.txt"))
    assert [(d["deviceName"], d["deviceType"]) for d in devices] == [
        ("llvmpipe (LLVM 15.0.6, 256 bits)", "PHYSICAL_DEVICE_TYPE_CPU")]


def test_parse_clinfo_human_ignores_null_platform_section() -> None:
    # The recording lists gfx900 four times: once as a device, three times under NULL platform.
    assert parse_clinfo(recorded("clinfo-amd-gfx900.txt")) == [
        {"platform": "AMD Accelerated Parallel Processing", "name": "gfx900", "type": "GPU"}]


def test_parse_clinfo_raw_pocl() -> None:
    assert parse_clinfo(recorded("clinfo-raw-pocl.txt")) == [{
        "platform": "Portable Computing Language",
        "name": "pthread-skylake-avx512-Intel(R) Xeon(R) Processor", "type": "CPU"}]


# ---------------------------------------------------------------- tools that hang, vanish or crash

async def test_hanging_tool_is_cut_off_by_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The tool forks a child that would outlive a kill of the shell alone.
    hang = script(tmp_path, "hang", f"sleep 60 & echo $! > '{pidfile}'; wait")
    started = time.monotonic()
    result = await probe("vulkan", timeout=0.5, commands={"vulkan": [hang]})
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert result.present is False
    assert result.reason == "hang timed out after 0.5s"
    assert result.returncode is None
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not _alive(child), "the timeout must kill the tool's whole process group"


async def test_missing_tool_is_reported_not_installed() -> None:
    result = await probe("opencl", commands={"opencl": ["llm-supervisor-no-such-clinfo"]})
    assert_well_formed(result, "opencl")
    assert result.present is False
    assert result.reason == "llm-supervisor-no-such-clinfo is not installed"
    assert result.command == ("llm-supervisor-no-such-clinfo",)


async def test_crashing_tool_is_absent_with_its_exit_code(tmp_path: Path) -> None:
    crash = script(tmp_path, "crash",
                   "printf '\\001\\377garbage\\n'; echo 'Segmentation fault' >&2; exit 139")
    result = await probe("opencl", commands={"opencl": [crash]})
    assert result.present is False
    assert result.returncode == 139
    assert result.reason == "clinfo lists no OpenCL devices (crash exited with status 139)"
    assert "Segmentation fault" in result.evidence


async def test_tool_that_prints_a_gpu_then_dies_does_not_count(tmp_path: Path) -> None:
    radv = DATA / "vulkaninfo-summary-radv.txt"
    dies = script(tmp_path, "dies", f"sed '1,/^# ---$/d' '{radv}'; kill -SEGV $$")
    result = await probe("vulkan", commands={"vulkan": [dies]})
    assert result.present is False
    assert result.returncode == -11
    assert result.reason.startswith(
        "dies was killed by SIGSEGV, although it listed: vulkaninfo lists AMD Radeon")


async def test_evidence_is_capped(tmp_path: Path) -> None:
    chatty = script(tmp_path, "chatty", "yes 'ROCk module is NOT loaded' | head -c 200000")
    kfd = tmp_path / "kfd"
    kfd.touch()
    result = await probe("rocm", kfd=str(kfd), commands={"rocm": [chatty]})
    assert result.present is False
    assert len(result.evidence) < probes.EVIDENCE_LIMIT + 100
    assert "characters cut" in result.evidence


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


async def test_gpu_past_the_evidence_cap_still_counts(tmp_path: Path) -> None:
    # Many-agent hosts print far more than the evidence keeps; the verdict reads all of it.
    mi50 = DATA / "rocminfo-mi50.txt"
    long = script(tmp_path, "long", f"head -c 40000 /dev/zero | tr '\\\\0' ' '; echo;"
                                    f" sed '1,/^# ---$/d' '{mi50}'; head -c 40000 /dev/zero")
    kfd = tmp_path / "kfd"
    kfd.touch()
    result = await probe("rocm", kfd=str(kfd), commands={"rocm": [long]})
    assert "gfx906" not in result.evidence
    assert result.present is True
    assert result.reason == "rocminfo lists GPU agent gfx906 (AMD Instinct MI50/MI60)"
