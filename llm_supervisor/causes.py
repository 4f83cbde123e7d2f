"""Causes: why an engine is not serving, or why the supervisor acted. One closed set, as data.

Every observation and every decision carries a ``Cause``; reasons in status, events, the
journal, metrics labels and ``STATUS=`` are rendered from it (and its detail), never parsed
back out of text. What a cause makes the engine do is a property of the cause:

- ``DEMOTE``: a lower tier can fix it (a GPU fault, a silent CPU fallback): go down at once;
- ``COUNT``: one failed check; ``failures`` in a row restart the tier, then demote it;
- ``RESTART``: the kernel reset the GPU: restart on the same tier;
- ``REBOOT``: the reset failed: reboot required, every GPU tier skipped until the next boot;
- ``BLOCK``: no tier change can fix it (the model is missing, the port is taken, the program or
  a user is missing, a wrong key or flag): the engine is ``blocked`` until the cause goes away;
- ``STAND_DOWN``: not a fault either: someone outside the daemon stopped the engine
  (``systemctl stop``, a clean exit): ``stopped``, never restarted or counted, until started;
- ``NONE``: not a fault; the reason for an action (the operator, a reload, a promotion...).
No dependencies, so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    DEMOTE = "demote"
    COUNT = "count"
    RESTART = "restart"
    REBOOT = "reboot"
    BLOCK = "block"
    STAND_DOWN = "stand_down"
    NONE = "none"


class Cause(StrEnum):
    # faults on the tier: a lower tier can help
    GPU_FAULT = "gpu_fault"
    HANG = "hang"
    STALL = "stall"
    SLOW = "slow"
    DEGENERATE = "degenerate"
    PLACEMENT = "placement"
    BACKEND_MISMATCH = "backend_mismatch"
    DISCOVERY = "discovery"
    CRASH = "crash"
    UNRESPONSIVE = "unresponsive"
    GENERATION = "generation"
    OOM = "oom"
    RESET = "reset"
    FATAL_RESET = "fatal_reset"
    # faults no tier change can fix
    MODEL_MISSING = "model_missing"
    PORT_IN_USE = "port_in_use"
    EXEC_MISSING = "exec_missing"
    PERMISSION = "permission"
    AUTH = "auth"
    CONFIG = "config"
    # the operator's hand, outside the daemon: no fault
    STOPPED = "stopped"
    # why the supervisor acted when nothing was wrong
    START = "start"
    OPERATOR = "operator"
    RELOAD = "reload"
    PROMOTION = "promotion"
    PROMOTION_FAILED = "promotion_failed"
    RETRY = "retry"
    RECOVERED = "recovered"

    @property
    def action(self) -> Action:
        return _ACTIONS[self]

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @property
    def blocking(self) -> bool:
        return self.action == Action.BLOCK


_ACTIONS: dict[Cause, Action] = {
    Cause.GPU_FAULT: Action.DEMOTE, Cause.PLACEMENT: Action.DEMOTE,
    Cause.BACKEND_MISMATCH: Action.DEMOTE, Cause.DISCOVERY: Action.DEMOTE,
    Cause.HANG: Action.COUNT, Cause.STALL: Action.COUNT, Cause.SLOW: Action.COUNT,
    Cause.DEGENERATE: Action.COUNT,
    Cause.CRASH: Action.COUNT,
    Cause.UNRESPONSIVE: Action.COUNT, Cause.GENERATION: Action.COUNT, Cause.OOM: Action.COUNT,
    Cause.RESET: Action.RESTART, Cause.FATAL_RESET: Action.REBOOT,
    Cause.MODEL_MISSING: Action.BLOCK, Cause.PORT_IN_USE: Action.BLOCK,
    Cause.EXEC_MISSING: Action.BLOCK, Cause.PERMISSION: Action.BLOCK, Cause.AUTH: Action.BLOCK,
    Cause.CONFIG: Action.BLOCK,
    Cause.STOPPED: Action.STAND_DOWN,
    Cause.START: Action.NONE, Cause.OPERATOR: Action.NONE, Cause.RELOAD: Action.NONE,
    Cause.PROMOTION: Action.NONE, Cause.PROMOTION_FAILED: Action.NONE, Cause.RETRY: Action.NONE,
    Cause.RECOVERED: Action.NONE,
}
_DESCRIPTIONS: dict[Cause, str] = {
    Cause.GPU_FAULT: "GPU fault", Cause.HANG: "generation hung",
    Cause.STALL: "generation stalled", Cause.SLOW: "too slow",
    Cause.DEGENERATE: "garbage output",
    Cause.PLACEMENT: "running on the CPU", Cause.BACKEND_MISMATCH: "wrong backend",
    Cause.DISCOVERY: "GPU discovery failed", Cause.CRASH: "crashed",
    Cause.UNRESPONSIVE: "not answering", Cause.GENERATION: "generation failed",
    Cause.OOM: "out of memory",
    Cause.RESET: "the kernel reset the GPU", Cause.FATAL_RESET: "a GPU reset failed",
    Cause.MODEL_MISSING: "model missing", Cause.PORT_IN_USE: "port in use",
    Cause.EXEC_MISSING: "program missing", Cause.PERMISSION: "permission denied",
    Cause.AUTH: "authentication failed", Cause.CONFIG: "bad engine configuration",
    Cause.STOPPED: "stopped outside the daemon",
    Cause.START: "started", Cause.OPERATOR: "operator", Cause.RELOAD: "config reloaded",
    Cause.PROMOTION: "promotion", Cause.PROMOTION_FAILED: "promotion failed",
    Cause.RETRY: "retry", Cause.RECOVERED: "recovered",
}
assert set(_ACTIONS) == set(Cause) == set(_DESCRIPTIONS)

# the most serious first, when one check sees several
_PRECEDENCE = (Action.STAND_DOWN, Action.REBOOT, Action.BLOCK, Action.RESTART, Action.DEMOTE,
               Action.COUNT, Action.NONE)


def precedence(cause: Cause) -> int:
    return _PRECEDENCE.index(cause.action)


@dataclass(frozen=True)
class Finding:
    """A cause with its specifics: ``detail`` is a short phrase for people, ``fix`` one line
    telling the operator what to do, ``evidence`` the raw material (a log line, a document)."""

    cause: Cause
    detail: str = ""
    fix: str = ""
    evidence: Any = None
    facts: dict[str, Any] = field(default_factory=dict)  # typed extras (holder pid, tier...)

    def text(self) -> str:
        """``"<description>: <detail>"``: how a finding reads in status and the journal."""
        return f"{self.cause.description}: {self.detail}" if self.detail else \
            self.cause.description

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cause": self.cause.value, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        if self.facts:
            out.update(self.facts)
        return out


@dataclass(frozen=True)
class Observation:
    """One signal about an engine: ok, or the finding that says what is wrong."""

    ok: bool
    source: str                    # liveness | unit | canary | placement | log | backend
    finding: Finding | None = None
    latency_ms: float | None = None
    tokens_per_second: float | None = None

    @classmethod
    def bad(cls, source: str, cause: Cause, detail: str = "", **kw: Any) -> Observation:
        fields = {k: kw.pop(k) for k in ("latency_ms", "tokens_per_second") if k in kw}
        return cls(False, source, Finding(cause, detail, **kw), **fields)

    @property
    def cause(self) -> Cause | None:
        return self.finding.cause if self.finding else None

    @property
    def reason(self) -> str:
        return self.finding.text() if self.finding else ""
