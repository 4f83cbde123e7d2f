"""The log classifier: engine and kernel journal lines -> findings with the line as evidence.

Built-in patterns come from what Ollama, ROCm, rocBLAS, vLLM and amdgpu really print
(FIELD-NOTES); ``[logs]`` in the config adds more. Classification is pure; following the
journal (``journalctl -f -o json``, resumed from a persisted cursor) is done by ``follow``.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from supervisor.config import GPU_TIERS, LogsSection
from supervisor.health import Observation
from supervisor.states import CHECK, FATAL_RESET, FAULT, RESET
from supervisor.systemd import Systemd, journal_message

log = structlog.get_logger("llm-supervisor")

# category -> (severity, patterns). Engine lines only matter on a GPU tier.
ENGINE_PATTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gpu_fault": (FAULT, (
        r"\bHIP error\b", r"\bhipError\w+", r"\bROCm error\b", r"\brocBLAS error\b",
        r"\bGPU Hang\b", r"HW Exception by GPU", r"\bhipErrorIllegalAddress\b",
        r"vk::DeviceLostError|ErrorDeviceLost", r"\bCUDA error\b",
    )),
    "discovery": (FAULT, (
        r"failure during (?:llama-server )?GPU discovery",
        r"no compatible GPUs were discovered", r"amdgpu is not supported",
        r"dropping ROCm device",
    )),
    "placement": (FAULT, (
        r'msg="inference compute".*\blibrary=cpu\b',
    )),
    "oom": (CHECK, (
        r"\bout of memory\b", r"hipErrorOutOfMemory", r"\bOutOfMemoryError\b",
        r"failed to allocate .* buffer",
    )),
}
KERNEL_PATTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fatal_reset": (FATAL_RESET, (r"GPU Recovery Failed", r"VRAM is lost")),
    "reset": (RESET, (r"\bring \S+ timeout\b", r"GPU reset begin!")),
}
DESCRIPTIONS = {
    "gpu_fault": "GPU fault in the engine's log", "discovery": "GPU discovery failed",
    "placement": "the engine runs on the CPU (its log says library=cpu)",
    "oom": "out of memory", "fatal_reset": "a GPU reset failed: reboot required",
    "reset": "the kernel reset the GPU",
}


@dataclass(frozen=True)
class Rule:
    category: str
    severity: str
    pattern: re.Pattern[str]


def compile_rules(table: dict[str, tuple[str, tuple[str, ...]]],
                  extra: dict[str, Iterable[str]] | None = None) -> list[Rule]:
    rules = []
    for category, (severity, patterns) in table.items():
        for pattern in (*patterns, *((extra or {}).get(category) or ())):
            rules.append(Rule(category, severity, re.compile(pattern)))
    # the most serious category first, so one line gives one finding
    order = {FATAL_RESET: 0, RESET: 1, FAULT: 2, CHECK: 3}
    return sorted(rules, key=lambda r: order[r.severity])


@functools.lru_cache(maxsize=8)
def rules_for(logs: LogsSection) -> tuple[list[Rule], list[Rule]]:
    """(engine rules, kernel rules) for a ``[logs]`` section: compiled once per config."""
    return (compile_rules(ENGINE_PATTERNS, logs.extra()),
            compile_rules(KERNEL_PATTERNS, logs.extra()))


def classify(rules: list[Rule], line: str, *, tier: str | None, kernel: bool = False
             ) -> Observation | None:
    """What one log line means for an engine on ``tier``, or None."""
    for rule in rules:
        if not rule.pattern.search(line):
            continue
        if not kernel and tier not in GPU_TIERS and rule.category != "oom":
            return None  # GPU trouble in the log of an engine that is not on a GPU
        if kernel and rule.severity == RESET and tier not in GPU_TIERS:
            return None
        return Observation(False, "log", f"{DESCRIPTIONS[rule.category]}: {line.strip()[:200]}",
                           severity=rule.severity, evidence=line.strip()[:2000])
    return None


Sink = Callable[[str, str, int], Awaitable[None] | None]  # (message, cursor, realtime_us)


async def follow(systemd: Systemd, matches: list[str], cursor: str | None, sink: Sink,
                 *, what: str) -> None:
    """Feed every new journal entry matching ``matches`` to ``sink``, forever.

    Starts after ``cursor`` (or at the end of the journal), and restarts journalctl if it
    exits, resuming from the last cursor seen.
    """
    while True:
        try:
            async for entry in systemd.follow(*matches, cursor=cursor):
                cursor = str(entry.get("__CURSOR", cursor or "")) or cursor
                try:
                    realtime = int(str(entry.get("__REALTIME_TIMESTAMP", "0")))
                except ValueError:
                    realtime = 0
                result = sink(journal_message(entry), cursor or "", realtime)
                if asyncio.iscoroutine(result):
                    await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("journal follower failed; restarting", source=what, error=repr(exc))
        await asyncio.sleep(1)
