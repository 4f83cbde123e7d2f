"""Observations read from what systemd and the engine's own log say, as pure functions: a unit
that crashed or is down, and, on a GPU tier, a backend other than the tier's.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks.classify import Device
from llm_supervisor.systemd.systemctl import UnitStatus
from llm_supervisor.tiers import GPU_TIERS

# tier -> the library names an engine reports when it computes on that tier
TIER_LIBRARIES = {"rocm": {"rocm", "hip", "cuda"}, "vulkan": {"vulkan"},
                  "opencl": {"opencl"}, "cpu": {"cpu"}}
DEVICES_SETTLE = 1.0  # s without a new device line before the reported backend is judged
KINDS = {"ollama": "Ollama", "vllm": "vLLM"}


def unit_observations(unit: UnitStatus, restarts_seen: int | None, since_start: float,
                      grace: float) -> list[Observation]:
    """systemd restarted it (NRestarts rose), it is down, or still not running past the
    grace: a crash. Stopped cleanly (``Result=success``: ``systemctl stop``, an admin's
    ``kill``, its process ending with status 0) is no crash: the operator's hand
    (``stopped``). Nothing while it runs, while a stop is under way, or while it still
    activates — or its start job waits in systemd's queue — within the grace."""
    if restarts_seen is not None and unit.n_restarts > restarts_seen:
        return [Observation.bad(
            "unit", Cause.CRASH, f"systemd restarted it {unit.n_restarts - restarts_seen}"
            f" time(s) (exit status {unit.exec_main_status})", evidence=unit.raw)]
    if unit.job and unit.active_state == "inactive":
        # a start waiting its turn in systemd's queue (ours, just asked for; an operator's),
        # not a stop: nothing within the grace, a start that never comes past it
        return [] if since_start <= grace else [Observation.bad(
            "unit", Cause.CRASH, f"not running: its start (job {unit.job}) is still queued",
            evidence=unit.raw)]
    if unit.active_state == "inactive" and unit.result == "success":
        return [Observation.bad("unit", Cause.STOPPED, stopped_how(unit), evidence=unit.raw,
                                fix=f"`systemctl start {unit.name}` or `llm-supervisorctl"
                                " start ENGINE` to serve and supervise it again")]
    if unit.active_state == "deactivating" and unit.sub_state.startswith("stop"):
        return []  # a stop job under way: the next check sees how it ended
    down = (unit.active_state in ("failed", "inactive", "deactivating")
            or unit.sub_state in ("auto-restart", "dead", "failed"))
    stuck = not unit.running and since_start > grace
    if down or stuck:
        return [Observation.bad(
            "unit", Cause.CRASH, f"not running: {unit.active_state}/{unit.sub_state}"
            f" (exit status {unit.exec_main_status}, result {unit.result or '-'})",
            evidence=unit.raw)]
    return []


def stopped_how(unit: UnitStatus) -> str:
    """How a unit that stopped cleanly ended, as far as systemd says. Whether a stop job or
    the engine itself ended it, systemd does not tell (Ollama and llama-server exit 0 on
    SIGTERM), so neither does this."""
    if unit.raw.get("ExecMainCode") == "2":  # CLD_KILLED
        return (f"ended by signal {unit.exec_main_status}, which systemd counts as clean"
                " (systemctl stop, or an admin's kill)")
    return (f"exited with status {unit.exec_main_status} (systemctl stop, an admin's kill,"
            " or the engine ending by itself)")


def backend_observations(tier: str | None, devices: Sequence[Device], settled: bool,
                         backend: str, kind: str, cards: Sequence[str] | None = None
                         ) -> list[Observation]:
    """On a GPU tier, the backend the engine reports must be that tier's: all on the CPU is
    ``placement`` (on opencl, ``opencl_on_cpu`` makes it a ``backend_mismatch``), another GPU
    backend ``backend_mismatch`` (with the device it dropped); and it must be on its own
    ``cards`` (None: it names none), where the engine says the card's address."""
    used = [d for d in devices if d.used]
    if tier not in GPU_TIERS or not settled:
        return []
    wanted = TIER_LIBRARIES[tier]
    dropped = [d for d in devices if not d.used and d.library.lower() in wanted]
    if not used and not (tier == "opencl" and dropped):
        return []
    if any(d.library.lower() in wanted for d in used):
        # a device of this tier is in use (a dropped iGPU beside it is fine): on its cards?
        return other_cards(tier, used, cards)
    if tier == "opencl" and all(d.library.lower() == "cpu" for d in used):
        # llama.cpp's OpenCL dropped the GPU and computes on the CPU (``opencl_on_cpu``)
        why = dropped[0].reason if dropped else used[0].reason or "library=cpu"
        return [Observation.bad("backend", Cause.PLACEMENT, why,
                                evidence=[d.line for d in devices])]
    if all(d.library.lower() == "cpu" for d in used):
        said = used[0].reason or "library=cpu"
        return [Observation.bad("backend", Cause.PLACEMENT,
                                f"the engine reports {said} on the {tier} tier",
                                evidence=used[0].line)]
    detail = f"{tier} tier, but the engine computes on {backend}"
    if dropped:
        d = dropped[0]
        target = f" for {d.compute}" if d.compute else ""
        detail += (f": this {KINDS.get(kind, kind)} build dropped the {d.library} device"
                   f" ({d.reason or 'unsupported'}{target})")
    fix = (f"run a {tier}-capable build as [engine.tiers.{tier}].exec, or start the chain"
           f" below {tier}")
    return [Observation.bad("backend", Cause.BACKEND_MISMATCH, detail, fix=fix,
                            evidence=[d.line for d in devices],
                            facts={"tier": tier, "backend": backend})]


def other_cards(tier: str, used: Sequence[Device], cards: Sequence[str] | None
                ) -> list[Observation]:
    """A device in use on a card that is not one of the engine's own: a ``backend_mismatch``
    naming the card (its tier's variables did not hold it to its cards)."""
    if cards is None:
        return []
    strays = [d for d in used if d.pci and d.pci not in cards]
    if not strays:
        return []
    d = strays[0]
    return [Observation.bad(
        "backend", Cause.BACKEND_MISMATCH, f"{tier} tier, but the engine computes on card"
        f" {d.pci} ({d.label()}), not its own ({', '.join(cards)})",
        fix=f"check the {tier} tier's device variables (status, `llm-supervisorctl render`);"
            " a build that ignores them cannot be held to its cards",
        evidence=[x.line for x in used], facts={"tier": tier, "card": d.pci})]


def opencl_on_cpu(tier: str | None, found: list[Observation]) -> list[Observation]:
    """On the opencl tier, computing on the CPU — whichever witness says so (``size_vram``,
    the engine's log, its speed) — is the cpu tier under another name (llama.cpp's OpenCL
    takes no AMD GPU): a ``backend_mismatch``, so the tier is skipped for this engine with the
    reason, never reported as opencl. The one place this rule lives."""
    if tier != "opencl":
        return found
    return [Observation.bad(
        o.source, Cause.BACKEND_MISMATCH, f"opencl tier, but the engine computes on the CPU"
        f" ({o.finding.detail})", fix="give [engine.tiers.opencl] a build whose OpenCL takes"
        " this GPU, or leave opencl out of the chain", evidence=o.finding.evidence,
        facts={"tier": tier, "backend": "cpu"}, tokens_per_second=o.tokens_per_second)
        if o.finding is not None and o.cause == Cause.PLACEMENT else o for o in found]
