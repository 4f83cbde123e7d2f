"""The simulated host's cards, as data: which ones each GPU library lists, in its own order,
which one the simulated Ollama computes on, and the kernel's amdgpu lines about a card.

``SIMENGINE_CARDS`` picks the host: ``one`` (the default: one 16 GiB MI50 at 0000:03:00.0, the
host the simulator always had) or ``four`` (tests/data/probes/*-four-cards.txt are its tools'
outputs): an RX 580 this ROCm does not list, a Raphael iGPU and two 32 GiB MI50s.

Each library numbers the cards its own way, as the real stacks do. ROCm lists its GPU agents
(ordered by address here, as rocminfo lists them on the four-card host) and ROCm's OpenCL the
same devices in the same order; the Vulkan loader puts discrete GPUs first, then integrated
ones, each by address, then CPU devices such as llvmpipe. The selection variables index those
lists: ``ROCR_VISIBLE_DEVICES`` (indices or ROCm's ``GPU-…`` ids), then
``HIP_VISIBLE_DEVICES`` among what ROCR left, ``GGML_VK_VISIBLE_DEVICES`` for Vulkan. An
entry naming no device adds none, so ``-1`` hides them all.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    pci: str
    name: str  # ROCm's (rocminfo's Marketing Name, HIP's device name)
    radv: str  # RADV's deviceName
    gfx: str
    device_id: int  # the PCI device id (rocminfo's Chip ID, Vulkan's deviceID)
    vram_mib: int
    free_mib: int  # what llama.cpp finds free on it
    integrated: bool = False
    uuid: str = ""  # ROCm's unique id; none for an iGPU (rocminfo: GPU-XX)
    rocm: bool = True  # this ROCm lists it

    @property
    def radv_uuid(self) -> str:
        """RADV's deviceUUID: the address as four little-endian 32-bit words."""
        domain, bus, device, function = (int(p, 16) for p in self.pci.replace(".", ":")
                                         .split(":"))
        words = b"".join(n.to_bytes(4, "little") for n in (domain, bus, device, function))
        return str(uuid.UUID(bytes=words))

    @property
    def bdfid(self) -> int:
        """rocminfo's BDFID: bus, device and function in one number."""
        _, bus, rest = self.pci.split(":")
        device, function = rest.split(".")
        return int(bus, 16) << 8 | int(device, 16) << 3 | int(function)


MI50 = (  # name, RADV's name, gfx target, device id
    "AMD Instinct MI50/MI60", "AMD Instinct MI50/MI60 (RADV VEGA20)", "gfx906", 0x66A1)
HOSTS: dict[str, tuple[Card, ...]] = {
    "one": (Card("0000:03:00.0", "AMD Instinct MI50", "AMD Instinct MI50 (RADV VEGA20)", "gfx906",
                 0x66A1, 16368, 16304, uuid="GPU-c88e588172fd62d5"),),
    "four": (
        Card("0000:03:00.0", "Radeon RX 580 Series", "AMD Radeon RX 580 Series (RADV POLARIS10)",
             "gfx803", 0x67DF, 8192, 7900, rocm=False),  # ROCm dropped gfx8
        Card("0000:0c:00.0", "AMD Radeon Graphics", "AMD Radeon Graphics (RADV RAPHAEL_MENDOCINO)",
             "gfx1036", 0x164E, 512, 497, integrated=True),
        Card("0000:43:00.0", *MI50, 32752, 32732, uuid="GPU-12b008e17337ecd9"),
        Card("0000:83:00.0", *MI50, 32752, 32732, uuid="GPU-022849817348c2f7"),
    ),
}
SELECTORS = {"rocm": ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"),
             "vulkan": ("GGML_VK_VISIBLE_DEVICES",)}  # the simulated OpenCL takes none


def host_cards(env: Mapping[str, str]) -> tuple[Card, ...]:
    """The simulated host's cards (``SIMENGINE_CARDS``); ValueError for an unknown host."""
    name = env.get("SIMENGINE_CARDS", "").strip() or "one"
    if name not in HOSTS:
        raise ValueError(f"SIMENGINE_CARDS={name!r}: expected one of {', '.join(HOSTS)}")
    return HOSTS[name]


def listed(cards: Sequence[Card], library: str) -> list[Card | None]:
    """The devices ``library`` enumerates, in its order; None is Vulkan's CPU device
    (llvmpipe), which takes a number but is no card. ROCm's list is OpenCL's too."""
    if library == "vulkan":
        return [*sorted(cards, key=lambda c: (c.integrated, c.pci)), None]
    return [*sorted((c for c in cards if c.rocm), key=lambda c: c.pci)]


def _select(devices: list[Card | None], value: str) -> list[Card | None]:
    if not value.strip():
        return devices
    chosen: list[Card | None] = []
    for entry in (e.strip() for e in value.split(",")):
        if entry.isdigit() and int(entry) < len(devices):
            chosen.append(devices[int(entry)])
        elif entry.startswith("GPU-"):
            chosen += [c for c in devices if c is not None and c.uuid == entry]
    return chosen


def card_for(cards: Sequence[Card], library: str, env: Mapping[str, str]
             ) -> tuple[Card, int] | None:
    """The card ``library`` computes on, and its number among the devices the library sees
    (ROCm0, Vulkan1…): the first card it lists that the selection variables leave; None when
    they leave none."""
    visible = listed(cards, library)
    for name in SELECTORS.get(library, ()):
        visible = _select(visible, env.get(name, ""))
    return next(((c, n) for n, c in enumerate(visible) if c is not None), None)


def amdgpu_lines(address: str, ring: str = "gfx", signaled: int = 1705630,
                 emitted: int = 1705633, process: str = "ollama", pid: int = 2817
                 ) -> tuple[str, ...]:
    """What the kernel logs when a job on the card at ``address`` times out and the reset
    fails, as amdgpu's ``dev_err``/``dev_info`` print it (drivers/gpu/drm/amd/amdgpu:
    amdgpu_job.c ``amdgpu_job_timedout``, amdgpu_device.c ``amdgpu_device_gpu_recover``; the
    device's name, then amdgpu.h's ``dev_fmt`` prefix ``amdgpu: ``). Kernels before 6.12
    wrote the timeout and the failure with ``DRM_ERROR``, without the address:
    ``[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx timeout, …``. A gfx9 card's
    graphics ring is ``gfx``; gfx10 and later name it ``gfx_0.0.0``."""
    return tuple(f"amdgpu {address}: amdgpu: {line}" for line in (
        f"ring {ring} timeout, signaled seq={signaled}, emitted seq={emitted}",
        f"Process information: process {process} pid {pid} thread {process} pid {pid}",
        "GPU reset begin!",
        "GPU Recovery Failed: -22",
    ))
