"""The engine's own speed as its reference, and the rule that judges a drop (pure).

Nobody knows a good ``min_tokens_per_second`` for their card in advance, and since Ollama
0.30 ``size_vram`` no longer proves where a model runs (it is derived from log lines, and full
offload is assumed when they do not parse). The engine's own speed is the witness left: each
engine learns its tokens/s per tier from its healthy canaries, and judges a drop against that.

The rule (docs/decisions.md, "The engine's own speed"):

- **Learning.** A canary's rate counts toward its tier's reference when the canary passed and
  nothing else ran on the engine meanwhile (a busy engine shares its compute: its rate says
  nothing). The reference is the median of the last ``WINDOW`` such rates, once there are
  ``LEARN`` of them. A rate that is low (below) is never learned.
- **Low.** A canary whose rate is below ``SLOW_RATIO`` × the reference is low. Busy canaries
  are neither low nor learned.
- **Verdict.** ``LOW_RUN`` low canaries in a row (a normal one ends the run, so one slow
  outlier never decides) are ``slow``; on a GPU tier, when their median is below
  ``CPU_RATIO`` × the reference, or within ``CPU_MARGIN`` × this engine's own learned CPU
  speed, the speed looks like the CPU's: ``cpu`` (the engine computes on the CPU whatever it
  reports).
- **A new normal.** A slow run restarts the engine on its tier; when the next run of low
  canaries is within ``STABLE`` of the one the restart was for, the restart changed nothing:
  that rate is the engine's now (a new driver, a larger context) and learning starts from it
  (``adopted``). A rate like the CPU's on a GPU tier is never adopted.
- **Reset.** Everything learned belongs to one model and one engine configuration (``key``)
  and to what the engine says it serves (``identify``: the model's digest, the engine's
  version): another model, other flags, a new pull of the model or an upgraded engine start
  learning afresh.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

LEARN = 5          # healthy, unshared canary rates before a tier has a reference
WINDOW = 20        # the reference: the median of the last WINDOW of them
SLOW_RATIO = 0.5   # a canary below half the reference is low
CPU_RATIO = 0.25   # on a GPU tier, a low run below a quarter of the reference looks like the CPU
CPU_MARGIN = 1.5   # ... or one within 1.5x this engine's own learned CPU speed
LOW_RUN = 3        # low canaries in a row that make a verdict
STABLE = 0.25      # a low run within this share of the one a restart was for: unchanged
SHOWN = 5          # the last rates kept for status
LOADS = 5          # the last load times kept per tier (the load's own reference)
LOAD_FACTOR = 3.0  # a load may take this many times its learned time ...
LOAD_FLOOR = 30.0  # ... but never less than this (s), nor more than ``load_timeout``


class Kind(StrEnum):
    LEARNING = "learning"  # no reference yet on this tier
    OK = "ok"              # at or near the reference
    BUSY = "busy"          # shared with other requests: not judged
    LOW = "low"            # below, not yet LOW_RUN in a row
    SLOW = "slow"          # LOW_RUN in a row below SLOW_RATIO x the reference
    ADOPTED = "adopted"    # ... the same after a restart for it: the engine's speed now
    CPU = "cpu"            # ... and like the CPU's speed, on a GPU tier


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    rate: float
    reference: float | None
    detail: str = ""


def _floats(value: Any, limit: int) -> list[float]:
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool)
            and v > 0 and v < float("inf")][-limit:]


class SpeedBook:
    """What an engine learned of its speed, per tier, kept in its memory (``state.json``) as
    plain data: ``{"key": …, "tiers": {"rocm": {"samples": […], "low": […], "last": […]}}}``."""

    def __init__(self, data: dict[str, Any], key: str) -> None:
        self.data = data
        tiers = data.get("tiers")
        if data.get("key") != key or not isinstance(tiers, dict):
            data.clear()
            data.update({"key": key, "tiers": {}, "identity": ""})
            return
        for tier, raw in list(tiers.items()):  # what state.json held, made sound
            raw = raw if isinstance(raw, dict) else {}
            tiers[tier] = {"samples": _floats(raw.get("samples"), WINDOW),
                           "low": _floats(raw.get("low"), LOW_RUN),
                           "restarted_low": _floats(raw.get("restarted_low"), 1),
                           "last": _floats(raw.get("last"), SHOWN),
                           "loads": _floats(raw.get("loads"), LOADS)}

    def identify(self, identity: str) -> bool:
        """What the engine serves now (the model's digest, the engine's version): when it
        differs from what the speeds were learned with, learning starts afresh. True when it
        did. A first identity (a state from an older build) keeps what was learned."""
        known = self.data.get("identity")
        self.data["identity"] = identity
        if isinstance(known, str) and known and known != identity:
            self.data["tiers"] = {}
            return True
        return False

    def _tier(self, tier: str) -> dict[str, list[float]]:
        entry: dict[str, list[float]] = self.data["tiers"].setdefault(
            tier, {"samples": [], "low": [], "last": [], "loads": []})
        entry.setdefault("loads", [])
        entry.setdefault("restarted_low", [])
        return entry

    def learn_load(self, tier: str, seconds: float) -> None:
        """A load that worked (the first generation after a start): the tier's load time."""
        if 0 < seconds < float("inf"):
            entry = self._tier(tier)
            entry["loads"] = [*entry["loads"], seconds][-LOADS:]

    def load_deadline(self, tier: str | None, ceiling: float) -> float:
        """How long a load on ``tier`` may take: ``LOAD_FACTOR`` × the median of the loads
        this engine did there, within [``LOAD_FLOOR``, ``ceiling``] (``load_timeout``);
        ``ceiling`` until one load was seen."""
        loads = self._tier(tier)["loads"] if tier else []
        if not loads:
            return ceiling
        return min(ceiling, max(min(LOAD_FLOOR, ceiling), LOAD_FACTOR * statistics.median(loads)))

    def reference(self, tier: str) -> float | None:
        samples = self._tier(tier)["samples"]
        return statistics.median(samples) if len(samples) >= LEARN else None

    def summary(self, tier: str | None) -> dict[str, Any] | None:
        """For status: the tier's reference (or how far learning got) and its last rates."""
        if tier is None:
            return None
        entry = self._tier(tier)
        reference = self.reference(tier)
        return {"tier": tier, "reference": round(reference, 2) if reference else None,
                "learned": min(len(entry["samples"]), LEARN), "of": LEARN,
                "last": [round(r, 2) for r in entry["last"]], "low_in_a_row": len(entry["low"]),
                "loads": [round(r, 2) for r in entry["loads"]]}

    def judge(self, tier: str, rate: float, *, busy: bool, gpu: bool) -> Verdict:
        """One passed canary's rate on ``tier``: learned, or judged against the reference."""
        entry = self._tier(tier)
        entry["last"] = [*entry["last"], rate][-SHOWN:]
        reference = self.reference(tier)
        if busy:
            return Verdict(Kind.BUSY, rate, reference, "shared with other requests")
        if reference is None or rate >= reference * SLOW_RATIO:
            entry["low"] = []
            entry["samples"] = [*entry["samples"], rate][-WINDOW:]
            if reference is None:
                return Verdict(Kind.LEARNING, rate, None, f"learning {tier}'s speed"
                               f" ({min(len(entry['samples']), LEARN)}/{LEARN})")
            return Verdict(Kind.OK, rate, reference)
        entry["low"] = [*entry["low"], rate][-LOW_RUN:]
        if len(entry["low"]) < LOW_RUN:
            return Verdict(Kind.LOW, rate, reference, f"{rate:.1f} tokens/s, below half of"
                           f" {reference:.1f} ({len(entry['low'])} of {LOW_RUN} in a row)")
        low = statistics.median(entry["low"])
        said = (f"{low:.1f} tokens/s in {LOW_RUN} checks in a row, against the {reference:.1f}"
                f" this engine learned on {tier}")
        cpu = self.reference("cpu") if tier != "cpu" else None
        if gpu and (low < reference * CPU_RATIO or (cpu is not None and low <= cpu * CPU_MARGIN)):
            like = f"its own {cpu:.1f} on cpu" if cpu is not None else \
                f"under {CPU_RATIO:.0%} of its {tier} speed"
            return Verdict(Kind.CPU, rate, reference, f"{said}: like the CPU ({like})")
        before = entry.get("restarted_low") or []
        if before and abs(low - before[0]) <= STABLE * before[0]:
            # a restart did not change it: the engine's speed now (a new driver, a bigger
            # context), not a fault — learned afresh from these rates
            entry["samples"], entry["low"], entry["restarted_low"] = list(entry["low"]), [], []
            return Verdict(Kind.ADOPTED, rate, reference, f"{said}; a restart did not change"
                           f" it ({before[0]:.1f} before): adopted as {tier}'s speed")
        return Verdict(Kind.SLOW, rate, reference, said)

    def restarted(self, tier: str) -> None:
        """The engine restarts on ``tier`` because it was slow: remember how slow, and start
        the run of low canaries afresh (``judge`` adopts the rate if the restart left it)."""
        entry = self._tier(tier)
        if entry["low"]:
            entry["restarted_low"] = [statistics.median(entry["low"])]
            entry["low"] = []
