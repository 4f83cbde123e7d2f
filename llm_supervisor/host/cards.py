"""Cards: the host's GPUs by PCI address, and the number each tier gives each of them.

The PCI address (``0000:43:00.0``) is the one name every layer shares: the kernel prefixes
amdgpu's lines with it, rocminfo lists a ``BDFID`` per agent, RADV's Vulkan ``deviceUUID`` is
the address itself (Mesa's ``ac_compute_device_uuid``: domain, bus, device, function as four
little-endian 32-bit words), OpenCL reports it as ``CL_DEVICE_TOPOLOGY_AMD`` or
``CL_DEVICE_PCI_BUS_INFO_KHR``, sysfs names each DRM card's device by it. ROCm, Vulkan and
OpenCL number the same cards differently (ROCm lists GPU agents in its topology's order, the
Vulkan loader puts discrete GPUs first, a card ROCm dropped is not in its list at all), so an
engine names its cards by address (``gpus``) and each tier's selection variable is derived
from that tier's own listing (docs/contract.md §4).

Everything here is pure but ``sysfs_vram``: the parsers read the probe tools' output, the
inventory and the placement are functions of what they found.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llm_supervisor.pci import address as pci_address

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def from_bdfid(bdfid: int, domain: int = 0) -> str:
    """rocminfo's ``BDFID``: bus in bits 15..8, device in 7..3, function in 2..0."""
    return f"{domain:04x}:{(bdfid >> 8) & 0xFF:02x}:{(bdfid >> 3) & 0x1F:02x}.{bdfid & 0x7}"


def from_radv_uuid(text: str) -> str | None:
    """RADV's ``deviceUUID``: the PCI address as four little-endian 32-bit words."""
    try:
        raw = uuid.UUID(text.strip()).bytes
    except ValueError:
        return None
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4)]
    domain, bus, device, function = words
    if domain > 0xFFFF or bus > 0xFF or device > 0x1F or function > 7:
        return None
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function}"


@dataclass(frozen=True)
class Seen:
    """One card as one tier's tool lists it: its address and the tier's number for it."""

    pci: str
    index: int          # the tier's own number (ROCR_VISIBLE_DEVICES, GGML_VK_VISIBLE_DEVICES…)
    name: str = ""
    gfx: str = ""
    uuid: str = ""      # ROCm's GPU-… id, when the card has one (ROCR_VISIBLE_DEVICES takes it)

    def selector(self) -> str:
        """What the tier's selection variable takes for this card: ROCm's unique id when
        there is one (stable whatever else is plugged in), else the tier's number."""
        return self.uuid or str(self.index)


def _blocks(text: str, start: re.Pattern[str]) -> list[dict[str, str]]:
    """``Key: value`` / ``key = value`` lines grouped under each line matching ``start``;
    the first value of a key in a block is its own (rocminfo repeats ``Name:`` under ISA)."""
    blocks: list[dict[str, str]] = []
    for line in _ANSI.sub("", text).splitlines():
        if m := start.match(line):
            blocks.append({"#": m.group(1)})
        elif blocks and (m := re.match(r"^\s+([A-Za-z][\w ()]*?)\s*[:=]\s*(.*?)\s*$", line)):
            blocks[-1].setdefault(m.group(1), m.group(2))
    return blocks


def rocm_seen(text: str) -> list[Seen]:
    """rocminfo's GPU agents, numbered in their order (ROCm's device numbers)."""
    gpus = [a for a in _blocks(text, re.compile(r"^\s*Agent (\d+)\s*$"))
            if a.get("Device Type", "").upper() == "GPU"]
    seen = []
    for index, agent in enumerate(gpus):
        bdfid, domain = agent.get("BDFID", ""), agent.get("Domain", "0")
        if not bdfid.isdigit():
            continue
        unique = agent.get("Uuid", "")
        seen.append(Seen(from_bdfid(int(bdfid), int(domain) if domain.isdigit() else 0), index,
                         agent.get("Marketing Name", ""), agent.get("Name", ""),
                         unique if re.fullmatch(r"GPU-[0-9a-fA-F]{8,}", unique) else ""))
    return seen


def vulkan_seen(text: str) -> list[Seen]:
    """``vulkaninfo --summary``'s devices, numbered as Vulkan enumerates them (what
    ``GGML_VK_VISIBLE_DEVICES`` counts): those whose ``deviceUUID`` carries the address
    (RADV). A device of another driver keeps its number but cannot be told by address."""
    seen = []
    after = text.split("Devices:", 1)[1] if "Devices:" in text else ""
    for device in _blocks(after, re.compile(r"^GPU(\d+):\s*$")):
        if device.get("driverID") != "DRIVER_ID_MESA_RADV":
            continue
        pci = from_radv_uuid(device.get("deviceUUID", ""))
        if pci is not None:
            seen.append(Seen(pci, int(device["#"]), device.get("deviceName", "")))
    return seen


_CL_TOPOLOGY = re.compile(r"(?:CL_DEVICE_TOPOLOGY_AMD|CL_DEVICE_PCI_BUS_INFO_KHR|"
                          r"Device Topology \(AMD\)|PCI bus info \(KHR\))\s+PCI-E,\s*(\S+)")
# clinfo widens the AMD topology's signed 8-bit bus to 32 bits: a card at 83:00.0 reads
# "PCI-E, 0000:ffffff83:00.0"
_CL_WIDENED_BUS = re.compile(r"(?<=:)ffffff(?=[89a-f][0-9a-f]:)", re.IGNORECASE)


ROCM_OPENCL = "AMD Accelerated Parallel Processing"  # the platform GPU_DEVICE_ORDINAL counts


def opencl_seen(text: str) -> list[Seen]:
    """ROCm's OpenCL GPU devices, numbered within its platform (``GPU_DEVICE_ORDINAL``
    counts them), by the address AMD's topology or the KHR bus info gives; another
    platform's devices (rusticl, PoCL) are not what that variable numbers."""
    seen: list[Seen] = []
    platform, name, kind, count = "", "", "", 0
    for line in _ANSI.sub("", text).splitlines():
        raw = re.match(r"^\[[^\]]*\]\s+(CL_\w+)\s+(.*?)\s*$", line)
        human = re.match(r"^ {0,2}(Platform Name|Device Name|Device Type):?\s+(.*?)\s*$", line)
        key, value = raw.groups() if raw else human.groups() if human else ("", "")
        if key in ("CL_PLATFORM_NAME", "Platform Name"):
            platform, count = value, 0
        elif key in ("CL_DEVICE_NAME", "Device Name"):
            name, kind = value, ""
        elif key in ("CL_DEVICE_TYPE", "Device Type"):
            kind = value.upper()
            if "GPU" in kind:
                count += 1
        elif (m := _CL_TOPOLOGY.search(line)) and "GPU" in kind and platform == ROCM_OPENCL:
            pci = pci_address(_CL_WIDENED_BUS.sub("", m.group(1)))
            if pci is not None and all(s.pci != pci for s in seen):
                seen.append(Seen(pci, count - 1, f"{name} ({platform})"))
        if line.startswith("NULL platform behavior"):
            break
    return seen


SEEN = {"rocm": rocm_seen, "vulkan": vulkan_seen, "opencl": opencl_seen}


def sysfs_vram(drm: Path = Path("/sys/class/drm")) -> dict[str, int]:
    """Each amdgpu card's VRAM in bytes, by PCI address (its device's directory name)."""
    found: dict[str, int] = {}
    for total in sorted(drm.glob("card*/device/mem_info_vram_total")):
        try:
            pci = pci_address(total.parent.resolve().name)
            vram = int(total.read_text().strip())
        except (OSError, ValueError):
            continue
        if pci is not None:
            found.setdefault(pci, vram)
    return found


@dataclass(frozen=True)
class Card:
    """One card of the host, with what every tier's tool says of it."""

    pci: str
    number: int                      # its place among the host's cards, by address
    vram: int | None = None          # bytes (sysfs)
    seen: Mapping[str, Seen] = field(default_factory=dict)  # tier -> how it lists the card

    @property
    def name(self) -> str:
        return next((s.name for s in self.seen.values() if s.name), "")

    @property
    def gfx(self) -> str:
        return next((s.gfx for s in self.seen.values() if s.gfx), "")

    def to_dict(self) -> dict[str, Any]:
        return {"pci": self.pci, "number": self.number, "name": self.name, "gfx": self.gfx,
                "vram": self.vram,  # and each tier's number for it (None: not listed)
                **{tier: self.seen[tier].index if tier in self.seen else None for tier in SEEN}}


class Listing(Protocol):
    """What a probe found of a tier's cards (``host.probes.ProbeResult`` fits)."""

    @property
    def cards(self) -> tuple[Seen, ...]: ...


def of_host(probes: Mapping[str, Listing], drm: Path = Path("/sys/class/drm")
            ) -> tuple[Card, ...]:
    """The host's cards from its probes and sysfs (the daemon's, ``render``'s, the same)."""
    return inventory({tier: probe.cards for tier, probe in probes.items()}, sysfs_vram(drm))


def inventory(seen: Mapping[str, Sequence[Seen]], vram: Mapping[str, int]) -> tuple[Card, ...]:
    """Every card any tier lists or sysfs has, ordered by address and numbered in that
    order (the number ``gpus`` may name instead of an address)."""
    addresses = sorted({*vram, *(s.pci for listed in seen.values() for s in listed)})
    return tuple(Card(pci, number, vram.get(pci),
                      {tier: s for tier, listed in seen.items() for s in listed if s.pci == pci})
                 for number, pci in enumerate(addresses))


@dataclass(frozen=True)
class Placement:
    """An engine's cards: its ``gpus`` resolved against the host's cards."""

    cards: tuple[Card, ...]
    unresolved: tuple[str, ...] = ()  # what it named that this host does not have, and why

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(c.pci for c in self.cards)

    def on(self, tier: str) -> tuple[tuple[Seen, ...], str]:
        """How ``tier`` numbers the engine's cards, or why it cannot take them all."""
        if self.unresolved:
            return (), "; ".join(self.unresolved)
        missing = [c.pci for c in self.cards if tier not in c.seen]
        if missing:
            return (), f"{tier} does not list card {', '.join(missing)}" + _listing_tool(tier)
        return tuple(c.seen[tier] for c in self.cards), ""

    def listed(self) -> dict[str, tuple[Seen, ...]]:
        """tier -> its numbers for the engine's cards, for each tier that lists them all."""
        tiers = {t for c in self.cards for t in c.seen}
        return {t: seen for t in sorted(tiers) if (seen := self.on(t)[0])}

    def to_dict(self) -> dict[str, Any]:
        return {"cards": [c.to_dict() for c in self.cards], "unresolved": list(self.unresolved)}


def _listing_tool(tier: str) -> str:
    tool = {"rocm": "rocminfo", "vulkan": "vulkaninfo (RADV)", "opencl": "clinfo"}.get(tier)
    return f" ({tool} does not list it)" if tool else ""


def place(gpus: Iterable[str], cards: Sequence[Card]) -> Placement:
    """``gpus`` (addresses, or numbers among the host's cards by address) on ``cards``."""
    found: list[Card] = []
    unresolved: list[str] = []
    for wanted in gpus:
        if wanted.isdigit():
            number = int(wanted)
            card = cards[number] if number < len(cards) else None
            if card is None:
                unresolved.append(f"card {number} is not on this host (it has"
                                  f" {len(cards)} card{'' if len(cards) == 1 else 's'})")
        else:
            card = next((c for c in cards if c.pci == wanted), None)
            if card is None:
                unresolved.append(f"card {wanted} is not on this host")
        if card is not None and card not in found:
            found.append(card)
    return Placement(tuple(found), tuple(unresolved))


def summary(found: Sequence[Card]) -> str:
    """One line for the journal: each card, its name and each tier's number for it."""
    if not found:
        return "no card is listed"
    return "; ".join(
        f"card {c.number} {c.pci} {c.name or '?'}"
        + (f" ({', '.join(f'{t} {s.index}' for t, s in c.seen.items())})" if c.seen else
           " (no tier lists it)") for c in found)
