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
engine's own speed: ``checks.speed``) stand until one succeeds. A passed canary's rate goes
to ``speed``, the engine's judge of its own speed, with whether anything else ran on the
engine meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks import health, model, progress
from llm_supervisor.checks.model import Kind as ModelKind
from llm_supervisor.checks.model import ModelFacts
from llm_supervisor.config import EngineConfig, HealthSection

# (rate, shared) -> a finding about the engine's speed, or None: the engine's SpeedBook
SpeedJudge = Callable[[float, bool], Observation | None]

# verdicts that stand until a canary succeeds: they took the whole deadline (or a run of
# canaries) to learn; garbage means the engine is broken until it answers text again; and a
# generation that fails fast (an HTTP error, no token, an empty answer) fails again at the
# next try — standing, it is a failed check on every tick, never alternating with clean ones
STANDING = frozenset({Cause.HANG, Cause.STALL, Cause.SLOW, Cause.DEGENERATE,
                      Cause.GENERATION})


class Canary:
    def __init__(self, http: httpx.AsyncClient, wake: asyncio.Event,
                 clock: Callable[[], float], *,
                 ended: Callable[[Observation, str], None],
                 launched: Callable[[str], None],
                 speed: SpeedJudge = lambda rate, shared: None,
                 learned: Callable[[ModelFacts], None] = lambda facts: None,
                 load_deadline: Callable[[HealthSection], float] = lambda h: h.load_deadline,
                 memory: Callable[[], int | None] = lambda: None) -> None:
        self.http = http
        self.wake = wake          # the engine's loop: woken when a canary ends with news
        self.clock = clock
        self.ended = ended        # (result, phase): the engine records the load, the timing
        self.launched = launched  # (phase): the engine says it is loading the model
        self.speed = speed        # a passed canary's rate, judged against the engine's own
        self.learned = learned    # the model's facts were read (or corrected)
        self.load_deadline = load_deadline  # learned from the engine's own loads
        self.memory = memory      # the engine's resident memory: a load's progress
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

    def deadline(self, h: HealthSection) -> float:
        return h.canary_timeout if self.phase == "generate" else self.load_deadline(h)

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

    async def step(self, cfg: EngineConfig, h: HealthSection, *, alive: bool, scheduled: bool,
                   runner_port: int | None, placement: bool) -> list[Observation]:
        """This check's observations: a finished canary's result, a running one's verdict,
        a standing failure; and a new canary when one is due (``scheduled`` by
        ``canary_every``, or a failure, no generation yet, a retry)."""
        found: list[Observation] = []
        task = self.task
        if task is not None and task.done():
            self.task = None
            self.watch = self.verdict = None
            phase = self.phase
            result = task.result()
            self.ended(result, phase)
            if result.ok:
                self.passed = True
                self.tokens_per_second = rate = result.tokens_per_second
                judged = self.speed(rate, self.shared) if rate else None
                self.failure = judged if judged is not None and judged.cause in STANDING \
                    else None
                if judged is not None and self.failure is None:
                    found.append(judged)  # like the CPU's: demoted at once
                elif judged is None and placement and not self.shared:
                    # Ollama on a GPU tier: where is it? (a shared canary's answer may have
                    # come from a model the users' traffic loaded: not judged)
                    found.append(await health.placement(self.http, cfg, h.timeout))
            elif (refusal := _embedding_only(result)) and (
                    self.facts is None or self.facts.kind != ModelKind.EMBEDDING):
                # the engine says its model only embeds: ask it that, at once, uncounted
                self.facts = (self.facts or ModelFacts()).as_embedding(refusal)
                self.learned(self.facts)
                self.retry = True
            elif result.cause in STANDING:
                self.failure = result
            else:
                self.failure = None
                self.retry = True
                found.append(result)
        elif task is not None:
            found.extend(await self._judge_wait(cfg, h, runner_port, placement and scheduled))
        due = h.canary_every and (scheduled or self.failure is not None or not self.passed
                                  or self.retry)
        rested = self.clock() - self.started >= h.interval * 0.9
        if alive and due and (rested or self.retry) and self.task is None:
            self.cold = self.passed and await health.loaded(self.http, cfg, h.timeout) is False
            if self.facts is None or self.cold:  # a start, or a model loaded anew (after
                await self._read_facts(cfg, h)  # `ollama pull` too): what is it now?
            baseline = await health.progress(self.http, cfg, runner_port, h.timeout,
                                             self.view)  # read before it is sent
            self.launch(cfg, h)
            assert self.watch is not None
            self.watch.add(self.started, baseline)
            if self.phase == "load":
                self.watch.grew(self.started, self.memory())
            self.shared = progress.working(baseline)
        if self.failure is not None:
            found.append(self.failure)
        return found

    async def _read_facts(self, cfg: EngineConfig, h: HealthSection) -> None:
        """What the model can do (``checks.model``), once per start; unread (the engine did
        not answer) the canary generates, and asks again next time."""
        try:
            headers = health.auth_headers(cfg)
        except OSError:
            headers = {}
        facts = await model.read(self.http, cfg, h.timeout, headers)
        if facts is None:
            return
        known = self.facts
        if not facts.source and known is not None and known.kind == ModelKind.EMBEDDING:
            facts = facts.as_embedding(known.source)  # the engine said so by refusing
        self.facts = facts
        self.learned(facts)

    def launch(self, cfg: EngineConfig, h: HealthSection) -> None:
        self.retry = False
        self.shared = False
        self.completions = 0
        self.started = self.clock()
        self.watch = progress.Watch(self.started, self.phase)
        self.verdict = None
        self.launched(self.phase)
        self.task = asyncio.create_task(health.canary(self.http, cfg, h.timeout,
                                                      h.min_tokens_per_second,
                                                      facts=self.facts))
        self.task.add_done_callback(self._done)

    async def _judge_wait(self, cfg: EngineConfig, h: HealthSection, runner_port: int | None,
                          placement: bool) -> list[Observation]:
        """A canary still running: busy, waiting, or (past its deadline, nothing moving) a
        hang or a stall that stands."""
        watch = self.watch
        if watch is None:
            return []
        watch.add(self.clock(), await health.progress(self.http, cfg, runner_port, h.timeout,
                                                      self.view))
        if watch.phase == "load":
            watch.grew(self.clock(), self.memory())
        deadline = self.deadline(h)
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
