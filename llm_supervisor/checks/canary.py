"""The one generation check of an engine (the canary): "does generation work?", asked the
same way in every phase.

It runs in the background, so a hung GPU cannot stall checks, and it is never cut off at its
deadline: it may be queued behind users. The first one after a (re)start loads the model and
has ``load_timeout``; later ones have ``canary_timeout``. While it runs, every check reads the
engine's progress and judges the wait (``checks.progress.judge``): overdue while the engine
works is **busy** (no failure); overdue with nothing moving is a ``hang`` (or a ``stall`` with
requests in flight), and that verdict stands as a failed check on every tick until a
generation succeeds — during the model's load as later; a clean liveness answer never clears
it. A canary that fails quickly (an HTTP error) counts once and the next check asks again;
garbage text (``checks.output``) and a slow one (``min_tokens_per_second``, or far below the
engine's own speed: ``checks.speed``) stand until one succeeds.

The canary never calls its engine: a check asks ``harvest()`` for a canary that ended
(``Ended``: its result, its phase, whether anything else ran on the engine meanwhile), judges
what is the engine's to judge (its speed, its timings), and hands that to ``step`` with what
the canary reads of the engine now (``Look``); ``step`` answers with this check's
observations and what the engine should know (``Step``: a canary launched, the model's facts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks import health, model, progress
from llm_supervisor.checks.model import Kind as ModelKind
from llm_supervisor.checks.model import ModelFacts
from llm_supervisor.config import EngineConfig, HealthSection
from llm_supervisor.host import process

# verdicts that stand until a canary succeeds: they took the whole deadline (or a run of
# canaries) to learn; garbage means the engine is broken until it answers text again; and a
# generation that fails fast (an HTTP error, no token, an empty answer) fails again at the
# next try — standing, it is a failed check on every tick, never alternating with clean ones
STANDING = frozenset({Cause.HANG, Cause.STALL, Cause.SLOW, Cause.DEGENERATE,
                      Cause.GENERATION})


@dataclass(frozen=True)
class Look:
    """What the canary reads of its engine at a check, as plain data."""

    alive: bool                # liveness answered
    scheduled: bool            # a canary is due by ``canary_every``
    runner_port: int | None    # where the model's runner answers /slots (Ollama >= 0.30)
    placement: bool            # Ollama on a GPU tier: where the model runs is checked
    load_deadline: float       # a load's deadline, learned from the engine's own loads
    pid: int = 0               # the engine's main process: a load's memory grows


@dataclass(frozen=True)
class Ended:
    """A canary that finished: its result, the phase it ran in, and whether other requests
    shared the engine meanwhile (its rate is not its own then)."""

    result: Observation
    phase: str
    shared: bool


@dataclass
class Step:
    """A check's part of the canary: its observations, the phase of a canary launched now,
    the model's facts when they were read (or corrected)."""

    found: list[Observation] = field(default_factory=list)
    launched: str | None = None
    learned: ModelFacts | None = None


class Canary:
    def __init__(self, http: httpx.AsyncClient, wake: asyncio.Event,
                 clock: Callable[[], float]) -> None:
        self.http = http
        self.wake = wake          # the engine's loop: woken when a canary ends with news
        self.clock = clock
        self.memory: Callable[[int], int | None] = process.tree_rss  # a load's progress
        self.shared = False       # the running canary shared the engine with other requests
        self.task: asyncio.Task[Observation] | None = None
        self.failure: Observation | None = None  # a verdict that stands
        self.passed = False       # a generation worked since this start
        self.retry = False        # the last canary failed fast: ask again now
        self.started = float("-inf")
        self.tokens_per_second: float | None = None
        self.watch: progress.Watch | None = None      # the running canary's view of progress
        self.verdict: progress.Verdict | None = None  # the running canary, judged
        self.facts: ModelFacts | None = None  # what the model can do, read at each start
        self.cold = False  # the running canary found its model unloaded: it pays a load
        self.completions = 0  # requests the engine's log says completed while it ran
        self.view: health.KernelView = health.kernel_view  # the engine's clients (kernel)

    @property
    def phase(self) -> str:
        """``load`` until a generation worked since this start (it loads the model), or when
        the engine had unloaded the model before this canary (users' traffic evicted it:
        it pays a load), then ``generate``: the two deadlines of the one generation check."""
        return "generate" if self.passed and not self.cold else "load"

    def deadline(self, h: HealthSection, load_deadline: float) -> float:
        return h.canary_timeout if self.phase == "generate" else load_deadline

    @property
    def busy(self) -> str | None:
        """``"busy: canary queued 41s; 312 tokens in the last 10s"`` while the engine works
        and the canary waits; the overdue canary's state otherwise; None when nothing waits."""
        verdict = self.verdict
        if verdict is None or verdict.kind == progress.Kind.PENDING:
            return None
        return f"{verdict.kind.value}: {verdict.detail}"

    def forget(self) -> None:
        """A (re)start begins with a clean slate: no stale verdict, a canary at once."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.failure = None
        self.passed = False
        self.started = float("-inf")
        self.watch = self.verdict = None
        self.facts = None  # another start may serve another model: ask again

    def completed(self) -> None:
        """The engine's log says a generation request finished: progress, while one waits —
        and the running canary shared the engine with it (its rate is not its own)."""
        if self.watch is not None:
            self.watch.completed(self.clock())
            # one line may be the canary's own (it can arrive before its answer is read);
            # a second is someone else's request, served beside it
            self.completions += 1
            self.shared = self.shared or self.completions >= 2

    def harvest(self) -> Ended | None:
        """A canary that finished since the last check, taken (None while one runs)."""
        task = self.task
        if task is None or not task.done():
            return None
        self.task = None
        self.watch = self.verdict = None
        return Ended(task.result(), self.phase, self.shared)

    async def step(self, cfg: EngineConfig, h: HealthSection, look: Look,
                   ended: Ended | None = None, judged: Observation | None = None) -> Step:
        """This check's part: a finished canary's result (``ended``, with the engine's
        ``judged`` verdict on its speed), a running one's verdict, a standing failure; and a
        new canary when one is due (``scheduled`` by ``canary_every``, or a failure, no
        generation yet, a retry)."""
        step = Step()
        if ended is not None:
            await self._take(cfg, h, look, ended, judged, step)
        elif self.task is not None:
            step.found.extend(await self._judge_wait(cfg, h, look))
        due = h.canary_every and (look.scheduled or self.failure is not None
                                  or not self.passed or self.retry)
        rested = self.clock() - self.started >= h.interval * 0.9
        if look.alive and due and (rested or self.retry) and self.task is None:
            await self._launch_due(cfg, h, look, step)
        if self.failure is not None:
            step.found.append(self.failure)
        return step

    async def _take(self, cfg: EngineConfig, h: HealthSection, look: Look, ended: Ended,
                    judged: Observation | None, step: Step) -> None:
        result = ended.result
        if result.ok:
            self.passed = True
            self.tokens_per_second = result.tokens_per_second
            self.failure = judged if judged is not None and judged.cause in STANDING else None
            if judged is not None and self.failure is None:
                step.found.append(judged)  # like the CPU's: demoted at once
            elif judged is None and look.placement and not ended.shared:
                # Ollama on a GPU tier: where is it? (a shared canary's answer may have
                # come from a model the users' traffic loaded: not judged)
                step.found.append(await health.placement(self.http, cfg, h.timeout))
        elif (refusal := _embedding_only(result)) and (
                self.facts is None or self.facts.kind != ModelKind.EMBEDDING):
            # the engine says its model only embeds: ask it that, at once, uncounted
            self.facts = step.learned = (self.facts or ModelFacts()).as_embedding(refusal)
            self.retry = True
        elif result.cause in STANDING:
            self.failure = result
        else:
            self.failure = None
            self.retry = True
            step.found.append(result)

    async def _launch_due(self, cfg: EngineConfig, h: HealthSection, look: Look,
                          step: Step) -> None:
        self.cold = self.passed and await health.loaded(self.http, cfg, h.timeout) is False
        if self.facts is None or self.cold:  # a start, or a model loaded anew (after
            step.learned = await self._read_facts(cfg, h) or step.learned  # `ollama pull`)
        baseline = await health.progress(self.http, cfg, look.runner_port, h.timeout,
                                         self.view)  # read before it is sent
        step.launched = self.launch(cfg, h)
        assert self.watch is not None
        self.watch.add(self.started, baseline)
        if self.phase == "load":
            self.watch.grew(self.started, self.memory(look.pid))
        self.shared = progress.working(baseline)

    async def _read_facts(self, cfg: EngineConfig, h: HealthSection) -> ModelFacts | None:
        """What the model can do (``checks.model``), once per start; unread (the engine did
        not answer: None) the canary generates, and asks again next time."""
        try:
            headers = health.auth_headers(cfg)
        except OSError:
            headers = {}
        facts = await model.read(self.http, cfg, h.timeout, headers)
        if facts is None:
            return None
        known = self.facts
        if not facts.source and known is not None and known.kind == ModelKind.EMBEDDING:
            facts = facts.as_embedding(known.source)  # the engine said so by refusing
        self.facts = facts
        return facts

    def launch(self, cfg: EngineConfig, h: HealthSection) -> str:
        """A canary sent now; its phase (the engine says it loads the model)."""
        self.retry = False
        self.shared = False
        self.completions = 0
        self.started = self.clock()
        self.watch = progress.Watch(self.started, self.phase)
        self.verdict = None
        self.task = asyncio.create_task(health.canary(self.http, cfg, h.timeout,
                                                      h.min_tokens_per_second,
                                                      facts=self.facts))
        self.task.add_done_callback(self._done)
        return self.phase

    async def _judge_wait(self, cfg: EngineConfig, h: HealthSection,
                          look: Look) -> list[Observation]:
        """A canary still running: busy, waiting, or (past its deadline, nothing moving) a
        hang or a stall that stands."""
        watch = self.watch
        if watch is None:
            return []
        watch.add(self.clock(), await health.progress(self.http, cfg, look.runner_port,
                                                      h.timeout, self.view))
        if watch.phase == "load":
            watch.grew(self.clock(), self.memory(look.pid))
        deadline = self.deadline(h, look.load_deadline)
        placement = look.placement and look.scheduled
        verdict = progress.judge(watch, self.clock(), deadline, h.stall_after, h.blind_timeout)
        self.verdict = verdict
        self.shared = self.shared or watch.others > 0  # others in flight meanwhile
        if verdict.kind == progress.Kind.BUSY:
            self.failure = None  # the engine works: the wait is the queue's
            self.shared = True
            if placement and self.passed:
                # it serves: where the model runs is known without a canary's answer
                return [await health.placement(self.http, cfg, h.timeout)]
        elif verdict.kind.failed:
            cause = Cause.HANG if verdict.kind == progress.Kind.HANG else Cause.STALL
            self.failure = Observation.bad(
                "canary", cause, verdict.detail, evidence={
                    "waited_s": round(self.clock() - watch.started, 1),
                    "deadline_s": deadline, "phase": watch.phase,
                    "progress_from": sorted(watch.sources)})
        return []

    def _done(self, task: asyncio.Task[Observation]) -> None:
        """Wake the loop when the canary ends with news: a failure, the first generation
        since a start (the model loaded), or the end of a standing failure. A routine
        success waits for the next tick."""
        if task.cancelled() or task.exception() is not None:
            return
        if not task.result().ok or not self.passed or self.failure is not None:
            self.wake.set()


def _embedding_only(result: Observation) -> str:
    """Why a refused canary says the model only embeds ("" when it does not)."""
    facts = result.finding.facts if result.finding is not None else {}
    return str(facts.get("embedding_only") or "")
