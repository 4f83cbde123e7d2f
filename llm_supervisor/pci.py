"""PCI addresses: the one name of a card every layer shares (the kernel's amdgpu lines,
rocminfo's ``BDFID``, RADV's ``deviceUUID``, OpenCL's topology, sysfs, Ollama's ``pci_id=``,
llama.cpp's ``using device … (0000:43:00.0)``), written one way: ``0000:43:00.0``, lower
case. Standard library only (the simulated engine uses it too).
"""

from __future__ import annotations

import re

_PCI = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
WRITTEN = r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"  # as the kernel prints one
IN_TEXT = re.compile(rf"\b({WRITTEN})\b")


def address(text: str) -> str | None:
    """``0000:43:00.0`` for ``0000:43:00.0``, ``43:00.0`` or the same in capitals; None for
    anything else (a device number past 0x1f included)."""
    match = _PCI.match(text.strip())
    if not match:
        return None
    domain, bus, device, function = match.groups()
    if int(device, 16) > 0x1F:
        return None
    return f"{(domain or '0000').lower()}:{bus.lower()}:{device.lower()}.{function}"


def in_line(line: str) -> str | None:
    """The first PCI address in a line (``amdgpu 0000:43:00.0: GPU reset begin!``)."""
    match = IN_TEXT.search(line)
    return address(match.group(1)) if match else None
