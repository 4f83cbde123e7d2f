"""The log classifier on lines the real engines and the kernel print (FIELD-NOTES) and on
what the simulated engine prints."""

from __future__ import annotations

import pytest

from supervisor.logwatch import ENGINE_PATTERNS, KERNEL_PATTERNS, classify, compile_rules
from supervisor.states import CHECK, FATAL_RESET, FAULT, RESET

ENGINE = compile_rules(ENGINE_PATTERNS)
KERNEL = compile_rules(KERNEL_PATTERNS)


@pytest.mark.parametrize(("line", "severity"), [
    ("ROCm error: unspecified launch failure", FAULT),
    ("  current device: 0, in function ggml_backend_cuda_synchronize ... ROCm error", FAULT),
    ("HW Exception by GPU node-1 (Agent handle: 0x55d0c8a2e6f0) reason :GPU Hang", FAULT),
    ("rocBLAS error: Cannot read /opt/rocm/lib/rocblas/library/TensileLibrary.dat: "
     "No such file or directory for GPU arch : gfx906", FAULT),
    ("RuntimeError: HIP error: an illegal memory access was encountered", FAULT),
    ("hipErrorNoBinaryForGpu: Unable to find code object for all current devices!", FAULT),
    ('time=2026-11-22T16:00:00.000Z level=INFO source=runner.go:545 '
     'msg="failure during GPU discovery" error="runner crashed"', FAULT),
    ('level=WARN msg="failure during llama-server GPU discovery"', FAULT),
    ("level=WARN msg=\"dropping ROCm device — no rocblas support for gfx target\"", FAULT),
    ('time=2026-11-22T16:00:00.000Z level=INFO source=types.go:60 msg="inference compute" '
     'id=cpu library=cpu compute="" name=cpu description=cpu total="31.2 GiB"', FAULT),
    ("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000 MiB on device 0: "
     "cudaMalloc failed: out of memory", CHECK),
])
def test_engine_lines_on_a_gpu_tier(line, severity):
    found = classify(ENGINE, line, tier="rocm")
    assert found is not None and found.severity == severity
    assert found.evidence == line.strip() and found.source == "log"


@pytest.mark.parametrize("line", [
    'level=INFO source=types.go:42 msg="inference compute" id=0 library=ROCm compute=gfx906',
    'level=INFO source=types.go:42 msg="inference compute" id=0 library=Vulkan name=Vulkan0',
    'level=WARN source=runner.go:487 msg="user overrode visible devices" ROCR_VISIBLE_DEVICES=-1',
    '[GIN] 2026/11/22 - 16:17:08 | 200 |  124.516436ms |       127.0.0.1 | POST "/api/generate"',
])
def test_normal_lines_are_not_findings(line):
    assert classify(ENGINE, line, tier="rocm") is None
    assert classify(KERNEL, line, tier="rocm", kernel=True) is None


def test_gpu_lines_do_not_matter_on_the_cpu_tier():
    assert classify(ENGINE, "ROCm error: unspecified launch failure", tier="cpu") is None
    assert classify(ENGINE, 'msg="inference compute" id=cpu library=cpu', tier="cpu") is None
    assert classify(ENGINE, "cudaMalloc failed: out of memory", tier="cpu") is not None


@pytest.mark.parametrize(("line", "severity"), [
    ("amdgpu 0000:03:00.0: [drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx timeout, "
     "signaled seq=1234, emitted seq=1236", RESET),
    ("amdgpu 0000:03:00.0: amdgpu: GPU reset begin!", RESET),
    ("amdgpu 0000:03:00.0: amdgpu: GPU Recovery Failed: -22", FATAL_RESET),
    ("amdgpu 0000:03:00.0: amdgpu: VRAM is lost due to GPU reset!", FATAL_RESET),
])
def test_kernel_lines(line, severity):
    found = classify(KERNEL, line, tier="vulkan", kernel=True)
    assert found is not None and found.severity == severity
    if severity == RESET:
        assert classify(KERNEL, line, tier="cpu", kernel=True) is None
    else:  # a failed reset concerns every engine: the host needs a reboot
        assert classify(KERNEL, line, tier="cpu", kernel=True) is not None


def test_config_extends_the_patterns():
    rules = compile_rules(ENGINE_PATTERNS, {"gpu_fault": [r"amdgpu_cs_ioctl failed"]})
    found = classify(rules, "llama: amdgpu_cs_ioctl failed (-19)", tier="rocm")
    assert found is not None and found.severity == FAULT
    assert classify(ENGINE, "llama: amdgpu_cs_ioctl failed (-19)", tier="rocm") is None


def test_simulated_engine_error_lines_are_recognised():
    from supervisor.simengine.engine import Engine
    from supervisor.simengine.logs import Log
    from supervisor.simengine.narrate import gpu_error_lines
    from supervisor.simengine.plan import Faults

    engine = Engine(kind="ollama", model="m", library="rocm", faults=Faults(), log=Log("ollama"))
    lines = gpu_error_lines(engine)
    assert any(classify(ENGINE, line, tier="rocm") for line in lines), lines
