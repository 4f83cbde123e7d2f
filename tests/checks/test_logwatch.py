"""The log classifier on lines the real engines and the kernel print (docs/field-notes.md) and on
what the simulated engine prints."""

from __future__ import annotations

import pytest

from llm_supervisor.causes import Cause
from llm_supervisor.checks.classify import (
    ENGINE_PATTERNS,
    KERNEL_PATTERNS,
    classify,
    compile_rules,
    logfmt,
    parse_device,
    parse_offload,
)
from llm_supervisor.checks.observations import backend_observations, opencl_on_cpu

FAULT, CHECK = Cause.GPU_FAULT, Cause.OOM
RESET, FATAL_RESET = Cause.RESET, Cause.FATAL_RESET

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
     'msg="failure during GPU discovery" error="runner crashed"', Cause.DISCOVERY),
    ('level=WARN msg="failure during llama-server GPU discovery"', Cause.DISCOVERY),
    ("Error: listen tcp 127.0.0.1:11434: bind: address already in use", Cause.PORT_IN_USE),
    ("ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): "
     "address already in use", Cause.PORT_IN_USE),
    ("Error: mkdir /usr/share/ollama/.ollama: permission denied", Cause.PERMISSION),
    ("vllm serve: error: unrecognized arguments: --bogus", Cause.CONFIG),
    ("Error: unknown flag: --bogus", Cause.CONFIG),
    ('error while handling argument "--device": invalid device: Vulkan0', Cause.DISCOVERY),
    ("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000 MiB on device 0: "
     "cudaMalloc failed: out of memory", CHECK),
])
def test_engine_lines_on_a_gpu_tier(line, severity):
    found = classify(ENGINE, line, tier="rocm")
    assert found is not None and found.cause == severity
    assert found.finding.evidence == line.strip() and found.source == "log"


@pytest.mark.parametrize("line", [
    'level=INFO source=types.go:42 msg="inference compute" id=0 library=ROCm compute=gfx906',
    'level=INFO source=types.go:42 msg="inference compute" id=0 library=Vulkan name=Vulkan0',
    'level=WARN source=runner.go:487 msg="user overrode visible devices" ROCR_VISIBLE_DEVICES=-1',
    # devices are data (parse_device), judged against the tier by the engine: not findings
    "level=WARN msg=\"dropping ROCm device — no rocblas support for gfx target\"",
    'level=INFO source=types.go:60 msg="inference compute" id=cpu library=cpu name=cpu',
    '[GIN] 2026/11/22 - 16:17:08 | 200 |  124.516436ms |       127.0.0.1 | POST "/api/generate"',
])
def test_normal_lines_are_not_findings(line):
    assert classify(ENGINE, line, tier="rocm") is None
    assert classify(KERNEL, line, tier="rocm", kernel=True) is None


def test_gpu_lines_do_not_matter_on_the_cpu_tier():
    assert classify(ENGINE, "ROCm error: unspecified launch failure", tier="cpu") is None
    assert classify(ENGINE, 'msg="inference compute" id=cpu library=cpu', tier="cpu") is None
    assert classify(ENGINE, "cudaMalloc failed: out of memory", tier="cpu") is not None
    # what no tier fixes matters on every tier
    found = classify(ENGINE, "Error: listen tcp 127.0.0.1:11434: bind: address already in use",
                     tier="cpu")
    assert found is not None and found.cause == Cause.PORT_IN_USE and found.finding.fix


@pytest.mark.parametrize(("line", "severity"), [
    ("amdgpu 0000:03:00.0: [drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx timeout, "
     "signaled seq=1234, emitted seq=1236", RESET),
    ("amdgpu 0000:03:00.0: amdgpu: GPU reset begin!", RESET),
    ("amdgpu 0000:03:00.0: amdgpu: GPU Recovery Failed: -22", FATAL_RESET),
    ("amdgpu 0000:03:00.0: amdgpu: VRAM is lost due to GPU reset!", FATAL_RESET),
])
def test_kernel_lines(line, severity):
    found = classify(KERNEL, line, tier="vulkan", kernel=True)
    assert found is not None and found.cause == severity
    if severity == RESET:
        assert classify(KERNEL, line, tier="cpu", kernel=True) is None
    else:  # a failed reset concerns every engine: the host needs a reboot
        assert classify(KERNEL, line, tier="cpu", kernel=True) is not None


def test_config_extends_the_patterns():
    rules = compile_rules(ENGINE_PATTERNS, {"gpu_fault": [r"amdgpu_cs_ioctl failed"]})
    found = classify(rules, "llama: amdgpu_cs_ioctl failed (-19)", tier="rocm")
    assert found is not None and found.cause == FAULT
    assert classify(ENGINE, "llama: amdgpu_cs_ioctl failed (-19)", tier="rocm") is None


def test_simulated_engine_error_lines_are_recognised():
    from llm_supervisor.simengine.engine import Engine
    from llm_supervisor.simengine.logs import Log
    from llm_supervisor.simengine.narrate import gpu_error_lines
    from llm_supervisor.simengine.plan import Faults

    engine = Engine(kind="ollama", model="m", library="rocm", faults=Faults(), log=Log("ollama"))
    lines = gpu_error_lines(engine)
    assert any(classify(ENGINE, line, tier="rocm") for line in lines), lines


def test_logfmt_reads_quoted_values():
    kv = logfmt('time=x level=INFO msg="inference compute" id=0 description="AMD \\"MI50\\""'
                ' total="16.0 GiB" empty=')
    assert kv["msg"] == "inference compute" and kv["description"] == 'AMD "MI50"'
    assert kv["total"] == "16.0 GiB" and kv["empty"] == ""


@pytest.mark.parametrize(("line", "used", "library", "label", "compute"), [
    ('time=2026-11-23T10:00:01.000Z level=INFO source=types.go:42 msg="inference compute" id=0'
     ' filter_id=0 library=ROCm compute=gfx906 name=ROCm0 description="AMD Instinct MI50"'
     ' libdirs=ollama,rocm driver=60342.13 pci_id=0000:03:00.0 type=discrete total="16.0 GiB"',
     True, "ROCm", "ROCm: AMD Instinct MI50", "gfx906"),
    ('level=INFO source=types.go:42 msg="inference compute" id=00000000-0300 library=Vulkan'
     ' compute=0.0 name=Vulkan0 description="AMD Instinct MI50 (RADV VEGA20)"',
     True, "Vulkan", "Vulkan: AMD Instinct MI50 (RADV VEGA20)", "0.0"),
    ('level=INFO source=types.go:60 msg="inference compute" id=cpu library=cpu compute=""'
     ' name=cpu description=cpu libdirs=ollama', True, "cpu", "cpu", ""),
    ('time=2026-11-23T10:00:00.000Z level=WARN source=amd.go:120 msg="dropping ROCm device —'
     ' no rocblas support for gfx target" device=0 gfx_target=gfx906'
     ' supported="[gfx908 gfx90a gfx942]" hint="see docs/gpu.mdx"',
     False, "ROCm", "ROCm: 0", "gfx906"),
])
def test_device_lines_are_read_as_data(line, used, library, label, compute):
    device = parse_device(line)
    assert device is not None and device.used is used and device.library == library
    assert device.compute == compute and device.label() == label
    if not used:
        assert device.reason == "no rocblas support for gfx target"


def test_other_lines_are_no_devices():
    assert parse_device('level=INFO msg="Listening on 127.0.0.1:11434 (version 0.33.0)"') is None
    assert parse_device("dropping the ball on the device") is None


def test_the_runners_offload_line_is_read_as_data():
    assert parse_offload("load_tensors: offloaded 29/29 layers to GPU") == (29, 29)
    assert parse_offload("time=… level=INFO source=llama_server.go:602 msg=\"load_tensors:"
                         " offloaded 17/29 layers to GPU\"") == (17, 29)
    assert parse_offload("load_tensors: CPU_Mapped model buffer size = 4437.80 MiB") is None


def test_opencl_dropping_an_amd_gpu_is_read_as_a_dropped_device():
    device = parse_device("ggml_opencl: unsupported GPU 'AMD Instinct MI50 (rusticl)'")
    assert device is not None and not device.used and device.library == "OpenCL"
    assert device.description == "AMD Instinct MI50 (rusticl)"
    assert "does not support this GPU" in device.reason


def test_an_opencl_tier_computing_on_the_cpu_is_a_backend_mismatch_never_opencl():
    lines = ["ggml_opencl: unsupported GPU 'AMD Instinct MI50 (rusticl)'",
             "load_tensors: offloaded 0/29 layers to GPU"]
    devices = [d for d in map(parse_device, lines) if d is not None]
    said = backend_observations("opencl", devices, True, "cpu", "llama-server")
    assert [o.cause for o in said] == [Cause.PLACEMENT]  # what the log says, as on any tier
    found = opencl_on_cpu("opencl", said)  # the one rule that makes it no opencl at all
    assert [o.cause for o in found] == [Cause.BACKEND_MISMATCH]
    assert found[0].finding is not None and found[0].finding.facts["backend"] == "cpu"
    assert "computes on the CPU" in found[0].reason
    # the GPU dropped and nothing said about where the model went: still not opencl
    alone = opencl_on_cpu("opencl", backend_observations("opencl", devices[:1], True, "",
                                                         "llama-server"))
    assert [o.cause for o in alone] == [Cause.BACKEND_MISMATCH]
    # on the rocm tier, all on the CPU stays what it was: placement
    rocm = backend_observations("rocm", devices[1:], True, "cpu", "llama-server")
    assert [o.cause for o in rocm] == [Cause.PLACEMENT]
