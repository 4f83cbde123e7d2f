"""What the engine's own log said since this run of it began, kept for its next check.

One rule says which lines belong to this run (``this_run``: logged at or after the start of
the unit's main process, on the monotonic clock — neither a clock step nor a daemon restart
loses a line, and the previous run's last words never count). Each line is routed once
(``line``): a finished request (progress for a waiting canary), a runner's start (its port;
which model its lines are about: ``checks.runners``), another model's placement (shown,
never judged), the engine's own offload and devices, and the log classifier's findings.

Intake writes nothing of the engine's: the engine takes what it holds at its check
(``take``) and decides. Only two things reach out at once: a finding wakes the engine's loop,
and a finished request reaches the canary that waits on it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from llm_supervisor import names
from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks import classify, diagnosis, progress
from llm_supervisor.checks.classify import Device, Rule
from llm_supervisor.checks.observations import DEVICES_SETTLE
from llm_supervisor.checks.runners import Runner, RunnerLog
from llm_supervisor.config import EngineConfig
from llm_supervisor.host import ports
from llm_supervisor.tiers import A_GPU_TIER, GPU_TIERS

# the lines that meant something (a runner, a device, an offload, a finding on some tier),
# the last ones, kept with their stamps: a start is seen at a check, after the new process's
# first lines were routed
KEPT = 2000
# journald stamps a line when it reads it: the replaced process's last words, read late, may
# be stamped after the new process began; by its PID, a line is known as theirs this long
# after the run began
LATE = 30.0


def start_fact(observation: Observation) -> bool:
    """A blocking cause read in the engine's log (a port, a permission, a flag): a start-up
    fact, acting only with a failed start (a line that merely mentions it, such as a user's
    prompt echoed by the engine, never blocks)."""
    cause = observation.cause
    return observation.source == "log" and cause is not None and cause.blocking


@dataclasses.dataclass
class Taken:
    """What a check takes from the intake: findings to judge now, and the offloads seen."""

    findings: list[Observation]
    offloads: list[tuple[int, int]]


class Intake:
    def __init__(self, clock: Callable[[], float], wake: asyncio.Event,
                 completed: Callable[[], None], tier: Callable[[], str | None]) -> None:
        self.clock, self.wake, self.completed_sink = clock, wake, completed
        self.tier = tier  # the engine's tier now: a line routed again is judged on it
        self.run_started = float("-inf")  # when this run of the engine began (monotonic)
        self.inbox: list[Observation] = []        # findings, handled at the next check
        self.cards: list[Observation] = []        # the kernel's, of the engine's card(s)
        self.start_facts: list[Observation] = []  # blocking causes in the log, this start
        self.devices: list[Device] = []           # what the engine reported it computes on
        self.devices_at = float("-inf")
        self.runners = RunnerLog()                # which model a runner's line is about
        self.others: dict[str, dict[str, Any]] = {}  # other models' runners, for status
        self.offloads: list[tuple[int, int]] = []  # its own model's offload lines, unseen
        self.runner_port: int | None = None       # its own model's runner (Ollama)
        # a start of ours whose process no check has seen yet: what the log says meanwhile
        # may be the replaced process's last words, so nothing is taken until the run's
        # start is known (``began`` again)
        self.asked = False
        self.replaced: frozenset[int] = frozenset()  # the processes a start of ours replaces
        self.replaced_until = float("-inf")         # ... whose lines are known until then
        # (logged at, how it was routed): what ``began`` routes again if the new run had
        # logged it already (an unstamped line: when it came)
        self.routed: collections.deque[tuple[float, Callable[[], None]]] = \
            collections.deque(maxlen=KEPT)
        self.newest = float("-inf")  # the newest line's stamp
        self.judged = float("-inf")  # lines up to this stamp were taken by a check
        self.again = False  # routing again (``began``): a finding taken already is not new

    def own(self, cfg: EngineConfig) -> None:
        """Whose lines are its own: an Ollama's own model's blob, as its manifest names it
        (read again at each runner start: a model pulled after the start is found)."""
        if cfg.kind == "ollama" and cfg.model:
            self.runners.own_blob = functools.partial(names.ollama_blob, cfg.model,
                                                      cfg.environment, cfg.user)
        else:
            self.runners.own_blob = None

    # ------------------------------------------------------------------ this run

    def began(self, at: float, *, asked: bool = False,
              replaced: frozenset[int] | None = None) -> None:
        """A start: a clean slate, and lines count from ``at``. What was routed already but
        logged at or after ``at`` is the new run's own (a start is seen at a check, after the
        new process's first lines — the devices it found or dropped): routed again, on the
        clean slate. ``asked``: a start of ours, asked for ``at``; its process starts later,
        and the run begins with it (``began`` again, once a check has seen it); what the
        processes it ``replaced`` write is theirs, whatever its stamp (given when it is not
        asked: no start was made, and they are the run)."""
        # (asked now: what came so far is all the replaced process's)
        again = [] if asked else [route for logged, route in self.routed if logged >= at]
        cards, self.cards = self.cards, []  # the card's, whichever process: taken as they come
        self.forget()
        self.cards = cards
        self.routed.clear()
        if replaced is not None:  # (a start asked during the hold replaces those too)
            self.replaced = replaced | self.replaced if asked and self.asked else replaced
            self.replaced_until = float("inf") if asked else float("-inf")
        elif self.asked:  # the hold ends: their words read late are known a while yet
            self.replaced_until = self.clock() + LATE
        self.run_started, self.asked = at, asked
        self.again = True
        try:
            for route in again:
                route()
        finally:
            self.again = False

    def started(self, at: float) -> None:
        """systemd's word on when this run began (adopted, or restarted by systemd). The
        first word (a daemon that started while the engine ran) begins the run: the lines
        read since the journal's cursor include the last words of a run before."""
        if self.run_started == float("-inf") and at:
            self.began(at)
        elif at > self.run_started:
            self.run_started = at

    def keep(self, at: float, route: Callable[[], None]) -> None:
        """A line (or a device) that meant something: kept, by its stamp, for ``began``."""
        self.routed.append((at, route))

    def this_run(self, at: float | None) -> bool:
        """Was a line (logged ``at``, monotonic seconds: ``journal.logged_at``) written by
        this run of the engine? None (unstamped) counts as this run."""
        return at is None or at >= self.run_started

    def forget(self) -> None:
        """What this run's lines said, forgotten (the lines themselves are kept, by their
        stamps, for ``began``)."""
        self.inbox.clear()
        self.cards.clear()
        self.start_facts.clear()
        self.devices = []
        self.devices_at = float("-inf")
        self.runners.forget()
        self.others.clear()
        self.offloads.clear()
        self.runner_port = None

    # ------------------------------------------------------------------ lines

    def line(self, message: str, at: float | None, rules: list[Rule], tier: str | None,
             cfg: EngineConfig, pid: int | None = None) -> None:
        """One line of the engine's journal (written by ``pid``), routed once."""
        at = self.clock() if at is None else at  # unstamped: logged as it came
        if not self.this_run(at) or self.theirs(pid):
            return  # the last words of a run before this one
        if progress.completed_request(message):
            self.completed_sink()  # progress for a canary waiting now: never routed again
            return
        self.newest = max(self.newest, at)
        before = self.runners.current
        runner, own = self.runners.line(message)  # which model the line is about
        layers = classify.parse_offload(message)
        device = classify.parse_device(message)
        # what it says on a GPU tier (all it can say: on the CPU only some of it counts)
        anywhere = classify.classify(rules, message, tier=A_GPU_TIER) if device is None \
            else None
        if runner is not before or layers is not None or device is not None or \
                anywhere is not None:
            self.keep(at, functools.partial(self.line_again, message, at, rules, cfg))
        if runner is not None and not own:
            # another model's placement: shown, never judged (a GPU error is the GPU's,
            # whichever runner printed it: classified below)
            if layers is not None or device is not None:
                self.other_model(runner, layers, device)
                return
        elif runner is not None and runner.port is not None:
            self.runner_port = runner.port
        if layers is not None and own:
            self.offloads.append(layers)
        if device is not None:
            self.computes_on(device, at)
            return
        found = anywhere if anywhere is None or tier in GPU_TIERS else \
            classify.classify(rules, message, tier=tier)
        if found is not None and found.cause == Cause.PORT_IN_USE:  # who holds it?
            held = diagnosis.port_finding(cfg, ports.holder(cfg.listen), message)
            found = Observation(False, "log", held) if held else found
        if found is not None and (not self.again or at > self.judged or start_fact(found)):
            self.found(found)  # (routed again: judged once; a start-up fact is kept)

    def theirs(self, pid: int | None) -> bool:
        """Written by a process a start of ours replaced (its last words, read late)."""
        return pid is not None and pid in self.replaced and self.clock() < self.replaced_until

    def line_again(self, message: str, at: float, rules: list[Rule], cfg: EngineConfig
                   ) -> None:
        """A line routed again when a run begins, on the tier the engine is on now (it came
        while a switch was under way, when the tier was still the one before)."""
        self.line(message, at, rules, self.tier(), cfg)

    def finding(self, observation: Observation, at: float | None = None) -> None:
        """The kernel said something of the engine's card: its loop handles it at once."""
        if self.this_run(at):
            self.cards.append(observation)  # the card's, whichever process: never held
            self.wake.set()

    def found(self, observation: Observation) -> None:
        self.inbox.append(observation)
        self.wake.set()

    def device(self, device: Device, at: float | None = None) -> None:
        """The engine reported a device it computes on, or one it dropped."""
        at = self.clock() if at is None else at
        if not self.this_run(at):
            return
        self.keep(at, functools.partial(self.device, device, at))
        self.computes_on(device, at)

    def computes_on(self, device: Device, at: float) -> None:
        if device.supersedes:  # llama-server: "offloaded 0/N layers to GPU"
            self.devices = [dataclasses.replace(d, used=False, reason="no layer offloaded to"
                                                " it") if d.used else d for d in self.devices]
        self.devices.append(device)
        self.devices_at = at

    def other_model(self, runner: Runner, layers: tuple[int, int] | None,
                    device: Device | None) -> None:
        """A line of another model's runner: where that model runs, for status."""
        shown = self.others.setdefault(runner.blob, {
            "blob": runner.blob[:19], "embedding": runner.embedding, "offload": None,
            "backend": None})
        if layers is not None:
            shown["offload"] = f"{layers[0]}/{layers[1]}"
        if device is not None and device.used:
            shown["backend"] = device.label()

    # ------------------------------------------------------------------ the check takes

    def backend(self) -> str | None:
        """The devices the engine says it computes on, as status shows them."""
        used = [d for d in self.devices if d.used]
        return ", ".join(dict.fromkeys(d.label() for d in used)) if used else None

    def settled(self) -> bool:
        """No device line for ``DEVICES_SETTLE``: what it reported is the whole list."""
        return self.clock() - self.devices_at >= DEVICES_SETTLE

    def take(self) -> Taken:
        """The findings to judge at this check (a blocking cause in the log is kept as a
        start-up fact instead), and the offload lines seen since the last check."""
        taken, self.cards = self.cards, []
        offloads: list[tuple[int, int]] = []
        if not self.asked:  # (held: whose lines they are is known once the run's start is)
            taken += self.inbox
            self.inbox.clear()
            offloads, self.offloads = self.offloads, []
            self.judged = self.newest
        self.start_facts.extend(o for o in taken if start_fact(o))
        return Taken([o for o in taken if not start_fact(o)], offloads)
