"""Host probes: does this host have each tier (rocm, vulkan, opencl, cpu), and why we think so.

Each probe runs one tool (rocminfo, ``vulkaninfo --summary``, ``clinfo --raw``) through the shared
runner, with a hard timeout, and decides from the tool's *output* -- not its exit code: rocminfo may
print "ROCk module is NOT loaded" and still exit 0, and software devices (llvmpipe, PoCL) list
themselves like any other. A probe never raises for a tool problem (missing, crashed, hung); it
reports the tier absent, says why in one line, and keeps the raw output as evidence.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llm_supervisor.errors import CommandError
from llm_supervisor.host.cards import SEEN, Seen
from llm_supervisor.host.process import Completed, run
from llm_supervisor.tiers import TIERS
from llm_supervisor.timefmt import utc

__all__ = ["TIERS", "DEFAULT_COMMANDS", "ProbeResult", "probe", "probe_all",
           "parse_rocminfo", "parse_vulkan_summary", "parse_clinfo"]

# clinfo --raw rather than plain clinfo: one "[PLATFORM/n] CL_DEVICE_TYPE CL_DEVICE_TYPE_GPU" line
# per device, named by the OpenCL constant, and no "NULL platform behavior" section listing the same
# devices again. parse_clinfo still reads the human format, for overrides and pasted output.
DEFAULT_COMMANDS: dict[str, tuple[str, ...]] = {
    "rocm": ("rocminfo",),
    "vulkan": ("vulkaninfo", "--summary"),
    "opencl": ("clinfo", "--raw"),
}

EVIDENCE_LIMIT = 16 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found, with what it ran and what the tool said."""

    tier: str
    present: bool
    reason: str  # one human line
    command: tuple[str, ...]  # () when nothing ran
    returncode: int | None  # None: nothing ran, or killed after the timeout
    evidence: str  # stdout (+ stderr), ANSI-stripped, capped at EVIDENCE_LIMIT
    duration: float
    checked_at: str  # ISO-8601 UTC, e.g. "2026-11-22T16:00:00Z"
    cards: tuple[Seen, ...] = ()  # the cards it lists by PCI address, with the tier's numbers

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["command"] = list(self.command)
        return data


# ---------------------------------------------------------------- parsers (pure)

def parse_rocminfo(text: str) -> list[dict[str, str]]:
    """Agents from rocminfo: ``{"agent", "name", "marketing_name", "vendor_name", "device_type"}``.

    Only the first ``Name:`` of an agent is its own; the ones under "ISA Info" come later.
    """
    fields = {"Name": "name", "Marketing Name": "marketing_name",
              "Vendor Name": "vendor_name", "Device Type": "device_type"}
    agents: list[dict[str, str]] = []
    for line in _ANSI.sub("", text).splitlines():
        if m := re.match(r"^\s*Agent (\d+)\s*$", line):
            agents.append({"agent": m.group(1)})
        elif (agents and (m := re.match(r"^\s*([A-Za-z ]+?):\s*(.*?)\s*$", line))
              and m.group(1) in fields):
            agents[-1].setdefault(fields[m.group(1)], m.group(2))
    return agents


def parse_vulkan_summary(text: str) -> list[dict[str, str]]:
    """Devices from ``vulkaninfo --summary``: ``{"index", "deviceName", "deviceType", "vendorID",
    "driverID"}`` (a key the driver did not print is absent)."""
    keys = ("deviceName", "deviceType", "vendorID", "driverID")
    devices: list[dict[str, str]] = []
    in_devices = False
    for line in _ANSI.sub("", text).splitlines():
        if line.strip() == "Devices:":
            in_devices = True
        elif not in_devices:
            continue
        elif m := re.match(r"^GPU(\d+):\s*$", line):
            devices.append({"index": m.group(1)})
        elif (devices and (m := re.match(r"^\s+(\w+)\s*=\s*(.*?)\s*$", line))
              and m.group(1) in keys):
            devices[-1].setdefault(m.group(1), m.group(2))
    return devices


def parse_clinfo(text: str) -> list[dict[str, str]]:
    """Devices from clinfo, ``--raw`` or human-readable: ``{"platform", "name", "type"}``, where
    type is e.g. "GPU", "CPU" or "CPU, DEFAULT"."""
    devices: list[dict[str, str]] = []
    platform = ""
    for line in _ANSI.sub("", text).splitlines():
        if raw := re.match(r"^\[[^\]]*\]\s+(CL_\w+)\s+(.*?)\s*$", line):
            key, value = raw.groups()
            if key == "CL_PLATFORM_NAME":
                platform = value
            elif key == "CL_DEVICE_NAME":
                devices.append({"platform": platform, "name": value})
            elif key == "CL_DEVICE_TYPE" and devices:
                devices[-1]["type"] = _cl_type(value)
            continue
        if line.startswith("NULL platform behavior"):
            break  # clinfo lists the default devices again below this; not devices of their own
        if human := re.match(r"^ {0,2}(Platform Name|Device Name|Device Type):?\s+(.*?)\s*$", line):
            key, value = human.groups()
            if key == "Platform Name":
                platform = value
            elif key == "Device Name":
                devices.append({"platform": platform, "name": value})
            elif devices:
                devices[-1]["type"] = _cl_type(value)
    return devices


def _cl_type(value: str) -> str:
    parts = [p.strip().removeprefix("CL_DEVICE_TYPE_").upper() for p in re.split(r"[,|]", value)]
    return ", ".join(p for p in parts if p)


# ---------------------------------------------------------------- decisions on parsed output

def _judge_rocm(text: str) -> tuple[bool, str]:
    agents = parse_rocminfo(text)
    gpus = [a for a in agents if a.get("device_type", "").upper() == "GPU"]
    if gpus:
        return True, "rocminfo lists GPU agent " + "; ".join(
            f"{a.get('name', '?')} ({a.get('marketing_name', '?')})" for a in gpus)
    if "ROCk module is NOT loaded" in _ANSI.sub("", text):
        return False, "rocminfo: ROCk module is NOT loaded, possibly no GPU devices"
    if agents:
        return False, "rocminfo lists no GPU agent, only " + ", ".join(
            f"{a.get('name', '?')} ({a.get('device_type', '?')})" for a in agents)
    return False, "rocminfo lists no agents"


def _judge_vulkan(text: str) -> tuple[bool, str]:
    devices = parse_vulkan_summary(text)
    real = [d for d in devices if d.get("deviceType", "") not in ("", "PHYSICAL_DEVICE_TYPE_CPU")]
    if real:
        return True, "vulkaninfo lists " + "; ".join(
            f"{d.get('deviceName', '?')} ({d['deviceType']}, vendorID {d.get('vendorID', '?')}, "
            f"{d.get('driverID', '?')})" for d in real)
    if devices:
        return False, "only software devices: " + "; ".join(
            f"{d.get('deviceName', '?')} ({d.get('deviceType', '?')})" for d in devices)
    return False, "vulkaninfo lists no devices"


def _judge_opencl(text: str) -> tuple[bool, str]:
    devices = parse_clinfo(text)
    gpus = [d for d in devices if "GPU" in d.get("type", "").split(", ")]
    if gpus:
        return True, "clinfo lists GPU device " + "; ".join(
            f"{d['name']} ({d['platform']})" for d in gpus)
    if devices:
        return False, "clinfo: no GPU device (" + "; ".join(
            f"{d['platform']}: {d['name']} is {d.get('type') or 'of unknown type'}"
            for d in devices) + ")"
    return False, "clinfo lists no OpenCL devices"


_JUDGES = {"rocm": _judge_rocm, "vulkan": _judge_vulkan, "opencl": _judge_opencl}


# ---------------------------------------------------------------- probes

async def probe(tier: str, *, timeout: float = 10.0, kfd: str = "/dev/kfd",
                commands: Mapping[str, Sequence[str]] | None = None) -> ProbeResult:
    """Probe one tier. Raises ValueError for an unknown tier, never for a tool problem."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} (known: {', '.join(TIERS)})")
    if tier == "cpu":
        return _result(tier, True, "the CPU tier is always available")
    argv = tuple((commands or {}).get(tier) or DEFAULT_COMMANDS[tier])
    if tier == "rocm" and not os.path.exists(kfd):  # noqa: ASYNC240 (one stat)
        # Without the KFD device node ROCm cannot reach a GPU, whatever rocminfo would say.
        return _result(tier, False, f"{kfd} is missing (amdgpu's KFD is not loaded, or no AMD GPU)",
                       evidence=f"{kfd}: no such file or directory")
    tool = os.path.basename(argv[0])
    try:
        done = await run(argv, timeout=timeout)
    except CommandError as exc:
        missing = isinstance(exc.__cause__, FileNotFoundError)
        reason = f"{tool} is not installed" if missing else f"{tool} cannot be run: {exc}"
        return _result(tier, False, reason, command=argv, evidence=str(exc))
    evidence = _evidence(done)
    if done.timed_out:
        return _result(tier, False, f"{tool} timed out after {timeout:g}s", done, evidence)
    # Judge on all of the output: the capped evidence may have lost agents from the middle.
    present, reason = _JUDGES[tier](done.stdout + "\n" + done.stderr)
    if done.returncode != 0:
        # A tool that failed is no ground to run an engine on, whatever it printed first.
        verdict = f"{tool} {_exit_text(done.returncode)}"
        reason = f"{verdict}, although it listed: {reason}" if present else f"{reason} ({verdict})"
        present = False
    cards = tuple(SEEN[tier](done.stdout)) if present else ()
    return _result(tier, present, reason, done, evidence, cards=cards)


async def probe_all(tiers: Iterable[str] = TIERS, *, timeout: float = 10.0,
                    kfd: str = "/dev/kfd",
                    commands: Mapping[str, Sequence[str]] | None = None) -> dict[str, ProbeResult]:
    """Probe the tiers concurrently; the result keeps their order."""
    names = list(tiers)
    results = await asyncio.gather(
        *(probe(t, timeout=timeout, kfd=kfd, commands=commands) for t in names))
    return dict(zip(names, results, strict=True))


def _result(tier: str, present: bool, reason: str, done: Completed | None = None,
            evidence: str = "", *, command: tuple[str, ...] = (),
            cards: tuple[Seen, ...] = ()) -> ProbeResult:
    return ProbeResult(
        tier=tier, present=present, reason=reason,
        command=done.argv if done else command,
        returncode=done.returncode if done else None,
        evidence=evidence,
        duration=round(done.duration, 3) if done else 0.0,
        checked_at=utc(),
        cards=cards,
    )


def _evidence(done: Completed) -> str:
    text = done.stdout
    if done.stderr.strip():
        text += ("" if not text or text.endswith("\n") else "\n") + "[stderr]\n" + done.stderr
    text = _ANSI.sub("", text)
    if len(text) > EVIDENCE_LIMIT:
        head, tail = EVIDENCE_LIMIT * 3 // 4, EVIDENCE_LIMIT // 4
        cut = len(text) - head - tail
        text = f"{text[:head]}\n[... {cut} characters cut ...]\n{text[-tail:]}"
    return text


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
