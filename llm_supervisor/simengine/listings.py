"""What ``rocminfo``, ``vulkaninfo --summary`` and ``clinfo --raw`` print on the simulated host.

The text is real output with the cards put in (tests/data/probes/*-four-cards.txt are the
four-card host's, and their header comments say where each part came from): rocminfo as ROCm
6.4 prints it (the CPU agent is a Ryzen 9 7900X), vulkaninfo as Vulkan-Tools 1.4.341 with Mesa
26.1.8's RADV and llvmpipe, clinfo 3.0 over ROCm's OpenCL ("AMD Accelerated Parallel
Processing"). The numbers a card's architecture decides (compute units, wavefront, caches,
ISA) come from ``ARCH``; the rest is the same for every card, as in the outputs they came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llm_supervisor.simengine.cards import Card, listed


@dataclass(frozen=True)
class Arch:
    compute_units: int
    clock_mhz: int
    l2_kib: int
    wavefront: int
    simds: int  # per compute unit
    shader_engines: int
    ucode: tuple[int, int]  # packet processor, SDMA engine
    isas: tuple[str, ...]
    gfxip: tuple[int, int]


ARCH = {  # rocminfo of an MI50 (ROCm/ROCm#5107) and of a Ryzen 9 7900X's iGPU
    "gfx906": Arch(60, 1725, 8192, 64, 4, 4, (472, 145), ("gfx906:sramecc+:xnack-",), (9, 0)),
    "gfx1036": Arch(2, 2200, 256, 32, 2, 1, (22, 9), ("gfx1036", "gfx10-3-generic"), (10, 3)),
}


def _hex(value: int) -> str:
    return f"{value}({value:#x})"


ROCMINFO_HEAD = """\
ROCk module is loaded
=====================
HSA System Attributes
=====================
Runtime Version:         1.15
Runtime Ext Version:     1.7
System Timestamp Freq.:  1000.000000MHz
Sig. Max Wait Duration:  18446744073709551615 (0xFFFFFFFFFFFFFFFF) (timestamp count)
Machine Model:           LARGE
System Endianness:       LITTLE
Mwaitx:                  DISABLED
XNACK enabled:           NO
DMAbuf Support:          NO
VMM Support:             NO

==========
HSA Agents
==========
*******
Agent 1
*******
  Name:                    AMD Ryzen 9 7900X 12-Core Processor
  Uuid:                    CPU-XX
  Marketing Name:          AMD Ryzen 9 7900X 12-Core Processor
  Vendor Name:             CPU
  Feature:                 None specified
  Profile:                 FULL_PROFILE
  Float Round Mode:        NEAR
  Max Queue Number:        0(0x0)
  Queue Min Size:          0(0x0)
  Queue Max Size:          0(0x0)
  Queue Type:              MULTI
  Node:                    0
  Device Type:             CPU
  Cache Info:
    L1:                      32768(0x8000) KB
  Chip ID:                 0(0x0)
  ASIC Revision:           0(0x0)
  Cacheline Size:          64(0x40)
  Max Clock Freq. (MHz):   5733
  BDFID:                   0
  Internal Node ID:        0
  Compute Unit:            24
  SIMDs per CU:            0
  Shader Engines:          0
  Shader Arrs. per Eng.:   0
  WatchPts on Addr. Ranges:1
  Memory Properties:
  Features:                None
  Pool Info:
""" + "".join(f"""\
    Pool {n}
      Segment:                 GLOBAL; FLAGS: {flags}
      Size:                    97563340(0x5d0b2cc) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Recommended Granule:4KB
      Alloc Alignment:         4KB
      Accessible by all:       TRUE
""" for n, flags in enumerate(("FINE GRAINED", "EXTENDED FINE GRAINED", "KERNARG, FINE GRAINED",
                                "COARSE GRAINED"), 1)) + "  ISA Info:\n"

DIMENSIONS = """\
{indent}Workgroup Max Size:      1024(0x400)
{indent}Workgroup Max Size per Dimension:
{indent}  x                        1024(0x400)
{indent}  y                        1024(0x400)
{indent}  z                        1024(0x400)
"""
GRID = """\
{indent}Grid Max Size:           4294967295(0xffffffff)
{indent}Grid Max Size per Dimension:
{indent}  x                        4294967295(0xffffffff)
{indent}  y                        4294967295(0xffffffff)
{indent}  z                        4294967295(0xffffffff)
"""


def _agent(number: int, card: Card) -> str:
    arch = ARCH[card.gfx]
    kib = card.vram_mib * 1024
    pools = "".join(f"""\
    Pool {n}
      Segment:                 GLOBAL; FLAGS: {flags}
      Size:                    {_hex(kib)} KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Recommended Granule:2048KB
      Alloc Alignment:         4KB
      Accessible by all:       FALSE
""" for n, flags in ((1, "COARSE GRAINED"), (2, "EXTENDED FINE GRAINED")))
    isas = "".join(f"""\
    ISA {n}
      Name:                    amdgcn-amd-amdhsa--{isa}
      Machine Models:          HSA_MACHINE_MODEL_LARGE
      Profiles:                HSA_PROFILE_BASE
      Default Rounding Mode:   NEAR
      Default Rounding Mode:   NEAR
      Fast f16:                TRUE
""" + DIMENSIONS.format(indent="      ") + GRID.format(indent="      ") + """\
      FBarrier Max Size:       32
""" for n, isa in enumerate(arch.isas, 1))
    waves = 40 if arch.wavefront == 64 else 32
    return f"""\
*******
Agent {number + 1}
*******
  Name:                    {card.gfx}
  Uuid:                    {card.uuid or "GPU-XX"}
  Marketing Name:          {card.name}
  Vendor Name:             AMD
  Feature:                 KERNEL_DISPATCH
  Profile:                 BASE_PROFILE
  Float Round Mode:        NEAR
  Max Queue Number:        128(0x80)
  Queue Min Size:          64(0x40)
  Queue Max Size:          131072(0x20000)
  Queue Type:              MULTI
  Node:                    {number}
  Device Type:             GPU
  Cache Info:
    L1:                      16(0x10) KB
    L2:                      {_hex(arch.l2_kib)} KB
  Chip ID:                 {_hex(card.device_id)}
  ASIC Revision:           1(0x1)
  Cacheline Size:          64(0x40)
  Max Clock Freq. (MHz):   {arch.clock_mhz}
  BDFID:                   {card.bdfid}
  Internal Node ID:        {number}
  Compute Unit:            {arch.compute_units}
  SIMDs per CU:            {arch.simds}
  Shader Engines:          {arch.shader_engines}
  Shader Arrs. per Eng.:   1
  WatchPts on Addr. Ranges:4
  Coherent Host Access:    FALSE
  Memory Properties:{"       APU" if card.integrated else ""}
  Features:                KERNEL_DISPATCH
  Fast F16 Operation:      TRUE
  Wavefront Size:          {_hex(arch.wavefront)}
{DIMENSIONS.format(indent="  ")}\
  Max Waves Per CU:        {_hex(waves)}
  Max Work-item Per CU:    {_hex(waves * arch.wavefront)}
{GRID.format(indent="  ")}\
  Max fbarriers/Workgrp:   32
  Packet Processor uCode:: {arch.ucode[0]}
  SDMA engine uCode::      {arch.ucode[1]}
  IOMMU Support::          None
  Pool Info:
{pools}\
    Pool 3
      Segment:                 GROUP
      Size:                    64(0x40) KB
      Allocatable:             FALSE
      Alloc Granule:           0KB
      Alloc Recommended Granule:0KB
      Alloc Alignment:         0KB
      Accessible by all:       FALSE
  ISA Info:
{isas}"""


def rocminfo(cards: Sequence[Card]) -> str:
    """The CPU agent, then one agent for each GPU ROCm lists."""
    gpus = [c for c in listed(cards, "rocm") if c is not None]
    return ROCMINFO_HEAD + "".join(_agent(n, c) for n, c in enumerate(gpus, 1)) + "*** Done ***\n"


LAYERS = (  # name, description, version: what that host had installed
    ("VK_LAYER_INTEL_nullhw", "INTEL NULL HW", "1.1.73"),
    ("VK_LAYER_MANGOHUD_overlay_32_x86", "Vulkan Hud Overlay", "1.3.0"),
    ("VK_LAYER_MANGOHUD_overlay_64_x86_64", "Vulkan Hud Overlay", "1.3.0"),
    ("VK_LAYER_MESA_anti_lag", "Open-source implementation of the VK_AMD_anti_lag extension.",
     "1.4.303"),
    ("VK_LAYER_MESA_device_select", "Linux device selection layer", "1.4.303"),
    ("VK_LAYER_MESA_overlay", "Mesa Overlay layer", "1.4.303"),
    ("VK_LAYER_MESA_screenshot", "Mesa Screenshot layer", "1.4.303"),
    ("VK_LAYER_MESA_vram_report_limit", "Limit reported VRAM", "1.4.303"),
    ("VK_LAYER_VALVE_steam_fossilize_32", "Steam Pipeline Caching Layer", "1.3.207"),
    ("VK_LAYER_VALVE_steam_fossilize_64", "Steam Pipeline Caching Layer", "1.3.207"),
    ("VK_LAYER_VALVE_steam_overlay_32", "Steam Overlay Layer", "1.3.207"),
    ("VK_LAYER_VALVE_steam_overlay_64", "Steam Overlay Layer", "1.3.207"),
)


def _layers() -> str:
    """vulkaninfo's layer table: each column as wide as its widest entry, and a space."""
    name, description = (max(len(layer[i]) for layer in LAYERS) + 1 for i in (0, 1))
    title = f"Instance Layers: count = {len(LAYERS)}"
    return f"{title}\n{'-' * len(title)}\n" + "".join(
        f"{n:<{name}}{d:<{description}}{v:<9}version 1\n" for n, d, v in LAYERS)


VULKANINFO_HEAD = """\
==========
VULKANINFO
==========

Vulkan Instance Version: 1.4.341


Instance Extensions: count = 26
-------------------------------
""" + "".join(f"{name:<39}: extension revision {revision}\n" for name, revision in (
    ("VK_EXT_acquire_drm_display", 1), ("VK_EXT_acquire_xlib_display", 1),
    ("VK_EXT_debug_report", 10), ("VK_EXT_debug_utils", 2), ("VK_EXT_direct_mode_display", 1),
    ("VK_EXT_display_surface_counter", 1), ("VK_EXT_headless_surface", 1),
    ("VK_EXT_layer_settings", 2), ("VK_EXT_surface_maintenance1", 1),
    ("VK_EXT_swapchain_colorspace", 5), ("VK_KHR_device_group_creation", 1),
    ("VK_KHR_display", 23), ("VK_KHR_external_fence_capabilities", 1),
    ("VK_KHR_external_memory_capabilities", 1), ("VK_KHR_external_semaphore_capabilities", 1),
    ("VK_KHR_get_display_properties2", 1), ("VK_KHR_get_physical_device_properties2", 2),
    ("VK_KHR_get_surface_capabilities2", 1), ("VK_KHR_portability_enumeration", 1),
    ("VK_KHR_surface", 25), ("VK_KHR_surface_maintenance1", 1),
    ("VK_KHR_surface_protected_capabilities", 1), ("VK_KHR_wayland_surface", 6),
    ("VK_KHR_xcb_surface", 6), ("VK_KHR_xlib_surface", 6),
    ("VK_LUNARG_direct_driver_loading", 1))) + """
""" + _layers() + """
Devices:
========
"""
LLVMPIPE = {"apiVersion": "1.4.354", "driverVersion": "26.1.8", "vendorID": "0x10005",
            "deviceID": "0x0000", "deviceType": "PHYSICAL_DEVICE_TYPE_CPU",
            "deviceName": "llvmpipe (LLVM 21.1.8, 256 bits)",
            "driverID": "DRIVER_ID_MESA_LLVMPIPE", "driverName": "llvmpipe",
            "driverInfo": "Mesa 26.1.8 (LLVM 21.1.8)", "conformanceVersion": "1.3.1.1",
            "deviceUUID": "6d657361-3236-2e31-2e38-000000000000",
            "driverUUID": "6c6c766d-7069-7065-5555-494400000000"}


def _radv(card: Card) -> dict[str, str]:
    kind = "INTEGRATED" if card.integrated else "DISCRETE"
    return {"apiVersion": "1.4.354", "driverVersion": "26.1.8", "vendorID": "0x1002",
            "deviceID": f"{card.device_id:#06x}", "deviceType": f"PHYSICAL_DEVICE_TYPE_{kind}_GPU",
            "deviceName": card.radv, "driverID": "DRIVER_ID_MESA_RADV", "driverName": "radv",
            "driverInfo": "Mesa 26.1.8", "conformanceVersion": "1.4.0.0",
            "deviceUUID": card.radv_uuid, "driverUUID": "414d442d-4d45-5341-2d44-525600000000"}


def vulkaninfo_summary(cards: Sequence[Card]) -> str:
    """Every card through RADV, in the loader's order, then llvmpipe."""
    devices = [LLVMPIPE if c is None else _radv(c) for c in listed(cards, "vulkan")]
    return VULKANINFO_HEAD + "".join(
        f"GPU{n}:\n" + "".join(f"\t{key:<18} = {value}\n" for key, value in device.items())
        for n, device in enumerate(devices))


CL_PLATFORM = """\
#PLATFORMS                                        1
  CL_PLATFORM_NAME                                AMD Accelerated Parallel Processing
  CL_PLATFORM_VENDOR                              Advanced Micro Devices, Inc.
  CL_PLATFORM_VERSION                             OpenCL 2.1 AMD-APP (3625.0)
  CL_PLATFORM_PROFILE                             FULL_PROFILE
  CL_PLATFORM_EXTENSIONS                          cl_khr_icd cl_amd_event_callback
  CL_PLATFORM_ICD_SUFFIX_KHR                      AMD
  CL_PLATFORM_HOST_TIMER_RESOLUTION               1

[AMD/*]     CL_PLATFORM_NAME                                AMD Accelerated Parallel Processing
"""
CL_ICD_LOADER = """\
[OCLICD/*]   CL_ICDL_NAME                                    OpenCL ICD Loader
[OCLICD/*]   CL_ICDL_VENDOR                                  OCL Icd free software
[OCLICD/*]   CL_ICDL_VERSION                                 2.3.1
[OCLICD/*]   CL_ICDL_OCL_VERSION                             OpenCL 3.0
"""
CL_FP = ("CL_FP_DENORM | CL_FP_INF_NAN | CL_FP_ROUND_TO_NEAREST | CL_FP_ROUND_TO_ZERO | "
         "CL_FP_ROUND_TO_INF | CL_FP_FMA")
CL_EXTENSIONS = (
    "cl_khr_fp64 cl_khr_global_int32_base_atomics cl_khr_global_int32_extended_atomics "
    "cl_khr_local_int32_base_atomics cl_khr_local_int32_extended_atomics "
    "cl_khr_int64_base_atomics cl_khr_int64_extended_atomics cl_khr_3d_image_writes "
    "cl_khr_byte_addressable_store cl_khr_fp16 cl_khr_gl_sharing cl_amd_device_attribute_query "
    "cl_amd_media_ops cl_amd_media_ops2 cl_khr_image2d_from_buffer cl_khr_subgroups "
    "cl_khr_depth_images cl_amd_copy_buffer_p2p cl_amd_assembly_program")


def topology(address: str) -> str:
    """``CL_DEVICE_TOPOLOGY_AMD`` as clinfo 3 prints it: it widens the AMD topology's signed
    8-bit bus to 32 bits, so a bus from 0x80 up comes out as ``ffffff83``."""
    domain, bus, rest = address.split(":")
    number = int(bus, 16)
    return f"PCI-E, {domain}:{number | 0xFFFFFF00 if number >= 0x80 else number:02x}:{rest}"


def _cl_device(number: int, card: Card) -> str:
    arch = ARCH[card.gfx]
    memory = card.vram_mib * 2**20
    largest = memory * 3 // 4 if card.integrated else memory * 85 // 100
    values = {
        "CL_DEVICE_NAME": card.gfx,
        "CL_DEVICE_VENDOR": "Advanced Micro Devices, Inc.",
        "CL_DEVICE_VENDOR_ID": "0x1002",
        "CL_DEVICE_VERSION": "OpenCL 2.0",
        "CL_DRIVER_VERSION": "3625.0 (HSA1.1,LC)",
        "CL_DEVICE_OPENCL_C_VERSION": "OpenCL C 2.0",
        "CL_DEVICE_TYPE": "CL_DEVICE_TYPE_GPU",
        "CL_DEVICE_BOARD_NAME_AMD": card.name,
        "CL_DEVICE_PCIE_ID_AMD": f"{card.device_id:#x}",
        "CL_DEVICE_TOPOLOGY_AMD": topology(card.pci),
        "CL_DEVICE_PROFILE": "FULL_PROFILE",
        "CL_DEVICE_AVAILABLE": "CL_TRUE",
        "CL_DEVICE_COMPILER_AVAILABLE": "CL_TRUE",
        "CL_DEVICE_LINKER_AVAILABLE": "CL_TRUE",
        "CL_DEVICE_MAX_COMPUTE_UNITS": arch.compute_units,
        "CL_DEVICE_SIMD_PER_COMPUTE_UNIT_AMD": 4,
        "CL_DEVICE_SIMD_WIDTH_AMD": 16 if arch.wavefront == 64 else 32,
        "CL_DEVICE_SIMD_INSTRUCTION_WIDTH_AMD": 1,
        "CL_DEVICE_MAX_CLOCK_FREQUENCY": arch.clock_mhz,
        "CL_DEVICE_GFXIP_MAJOR_AMD": arch.gfxip[0],
        "CL_DEVICE_GFXIP_MINOR_AMD": arch.gfxip[1],
        "CL_DEVICE_PARTITION_MAX_SUB_DEVICES": arch.compute_units,
        "CL_DEVICE_PARTITION_PROPERTIES": "CL_NONE",
        "CL_DEVICE_PARTITION_AFFINITY_DOMAIN": "",
        "CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS": 3,
        "CL_DEVICE_MAX_WORK_ITEM_SIZES": "1024 1024 1024",
        "CL_DEVICE_MAX_WORK_GROUP_SIZE": 256,
        "CL_DEVICE_PREFERRED_WORK_GROUP_SIZE_AMD": 256,
        "CL_DEVICE_MAX_WORK_GROUP_SIZE_AMD": 1024,
        "CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE": arch.wavefront,
        "CL_DEVICE_WAVEFRONT_WIDTH_AMD": arch.wavefront,
        **{f"CL_DEVICE_{kind}_VECTOR_WIDTH_{of}": width
           for of, width in (("CHAR", 4), ("SHORT", 2), ("INT", 1), ("LONG", 1), ("HALF", 1),
                             ("FLOAT", 1), ("DOUBLE", 1))
           for kind in ("PREFERRED", "NATIVE")},
        "CL_DEVICE_HALF_FP_CONFIG": CL_FP,
        "CL_DEVICE_SINGLE_FP_CONFIG": CL_FP + " | CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT",
        "CL_DEVICE_DOUBLE_FP_CONFIG": CL_FP,
        "CL_DEVICE_ADDRESS_BITS": 64,
        "CL_DEVICE_ENDIAN_LITTLE": "CL_TRUE",
        "CL_DEVICE_GLOBAL_MEM_SIZE": memory,
        "CL_DEVICE_GLOBAL_FREE_MEMORY_AMD": f"{card.free_mib * 1024} {card.free_mib * 1024}",
        "CL_DEVICE_GLOBAL_MEM_CHANNELS_AMD": 8,
        "CL_DEVICE_GLOBAL_MEM_CHANNEL_BANKS_AMD": 4,
        "CL_DEVICE_GLOBAL_MEM_CHANNEL_BANK_WIDTH_AMD": 256,
        "CL_DEVICE_ERROR_CORRECTION_SUPPORT": "CL_FALSE",
        "CL_DEVICE_MAX_MEM_ALLOC_SIZE": largest,
        "CL_DEVICE_HOST_UNIFIED_MEMORY": "CL_TRUE" if card.integrated else "CL_FALSE",
        "CL_DEVICE_SVM_CAPABILITIES": ("CL_DEVICE_SVM_COARSE_GRAIN_BUFFER | "
                                       "CL_DEVICE_SVM_FINE_GRAIN_BUFFER"),
        "CL_DEVICE_MIN_DATA_TYPE_ALIGN_SIZE": 128,
        "CL_DEVICE_MEM_BASE_ADDR_ALIGN": 1024,
        "CL_DEVICE_PREFERRED_PLATFORM_ATOMIC_ALIGNMENT": 0,
        "CL_DEVICE_PREFERRED_GLOBAL_ATOMIC_ALIGNMENT": 0,
        "CL_DEVICE_PREFERRED_LOCAL_ATOMIC_ALIGNMENT": 0,
        "CL_DEVICE_MAX_GLOBAL_VARIABLE_SIZE": largest,
        "CL_DEVICE_GLOBAL_VARIABLE_PREFERRED_TOTAL_SIZE": memory,
        "CL_DEVICE_GLOBAL_MEM_CACHE_TYPE": "CL_READ_WRITE_CACHE",
        "CL_DEVICE_GLOBAL_MEM_CACHE_SIZE": 16384,
        "CL_DEVICE_GLOBAL_MEM_CACHELINE_SIZE": 64,
        "CL_DEVICE_IMAGE_SUPPORT": "CL_TRUE",
        "CL_DEVICE_MAX_SAMPLERS": 16,
        "CL_DEVICE_IMAGE_MAX_BUFFER_SIZE": 134217728,
        "CL_DEVICE_IMAGE_MAX_ARRAY_SIZE": 8192,
        "CL_DEVICE_IMAGE_BASE_ADDRESS_ALIGNMENT": 256,
        "CL_DEVICE_IMAGE_PITCH_ALIGNMENT": 256,
        "CL_DEVICE_IMAGE2D_MAX_HEIGHT": 16384,
        "CL_DEVICE_IMAGE2D_MAX_WIDTH": 16384,
        "CL_DEVICE_IMAGE3D_MAX_HEIGHT": 16384,
        "CL_DEVICE_IMAGE3D_MAX_WIDTH": 16384,
        "CL_DEVICE_IMAGE3D_MAX_DEPTH": 8192,
        "CL_DEVICE_MAX_READ_IMAGE_ARGS": 128,
        "CL_DEVICE_MAX_WRITE_IMAGE_ARGS": 8,
        "CL_DEVICE_MAX_READ_WRITE_IMAGE_ARGS": 64,
        "CL_DEVICE_MAX_PIPE_ARGS": 16,
        "CL_DEVICE_PIPE_MAX_ACTIVE_RESERVATIONS": 16,
        "CL_DEVICE_PIPE_MAX_PACKET_SIZE": largest & 0xFFFFFFFF,  # a 32-bit field
        "CL_DEVICE_LOCAL_MEM_TYPE": "CL_LOCAL",
        "CL_DEVICE_LOCAL_MEM_SIZE": 65536,
        "CL_DEVICE_LOCAL_MEM_SIZE_PER_COMPUTE_UNIT_AMD": 65536,
        "CL_DEVICE_LOCAL_MEM_BANKS_AMD": 32,
        "CL_DEVICE_MAX_CONSTANT_ARGS": 8,
        "CL_DEVICE_MAX_CONSTANT_BUFFER_SIZE": largest,
        "CL_DEVICE_PREFERRED_CONSTANT_BUFFER_SIZE_AMD": 16384,
        "CL_DEVICE_MAX_PARAMETER_SIZE": 1024,
        "CL_DEVICE_QUEUE_ON_HOST_PROPERTIES": "CL_QUEUE_PROFILING_ENABLE",
        "CL_DEVICE_QUEUE_ON_DEVICE_PROPERTIES": ("CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE | "
                                                 "CL_QUEUE_PROFILING_ENABLE"),
        "CL_DEVICE_QUEUE_ON_DEVICE_PREFERRED_SIZE": 262144,
        "CL_DEVICE_QUEUE_ON_DEVICE_MAX_SIZE": 8388608,
        "CL_DEVICE_MAX_ON_DEVICE_QUEUES": 1,
        "CL_DEVICE_MAX_ON_DEVICE_EVENTS": 1024,
        "CL_DEVICE_PREFERRED_INTEROP_USER_SYNC": "CL_TRUE",
        "CL_DEVICE_NUM_P2P_DEVICES_AMD": 0,
        "CL_DEVICE_PROFILING_TIMER_RESOLUTION": 1,
        "CL_DEVICE_PROFILING_TIMER_OFFSET_AMD": 0,
        "CL_DEVICE_EXECUTION_CAPABILITIES": "CL_EXEC_KERNEL",
        "CL_DEVICE_THREAD_TRACE_SUPPORTED_AMD": "CL_FALSE",
        "CL_DEVICE_AVAILABLE_ASYNC_QUEUES_AMD": 8,
        "CL_DEVICE_MAX_REAL_TIME_COMPUTE_QUEUES_AMD": 8,
        "CL_DEVICE_MAX_REAL_TIME_COMPUTE_UNITS_AMD": arch.compute_units,
        "CL_DEVICE_PRINTF_BUFFER_SIZE": 4194304,
        "CL_DEVICE_BUILT_IN_KERNELS": "",
        "CL_DEVICE_EXTENSIONS": CL_EXTENSIONS,
    }
    return "".join(f"{f'[AMD/{number}]':<12}{key:<46}  {value}\n" for key, value in values.items())


def clinfo_raw(cards: Sequence[Card]) -> str:
    """ROCm's OpenCL platform with its GPU devices (the cards ROCm lists), then the loader."""
    gpus = [c for c in listed(cards, "opencl") if c is not None]
    return (CL_PLATFORM + f"{'[AMD/*]':<10}{'#DEVICES':<48}  {len(gpus)}\n"
            + "".join(_cl_device(n, c) + "\n" for n, c in enumerate(gpus)) + CL_ICD_LOADER)


LISTINGS = {  # tool -> (the arguments it is run with, what it prints)
    "rocminfo": ((), rocminfo),
    "vulkaninfo": (("--summary",), vulkaninfo_summary),
    "clinfo": (("--raw",), clinfo_raw),
}
