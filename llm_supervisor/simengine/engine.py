"""One simulated engine's state: where it runs, which faults are due, loading and generation.

Generation really takes the time it reports: ``num_predict / tokens_per_second`` seconds of
sleep, so a hung or slow engine looks hung or slow to a client with a stopwatch, and
``eval_count / eval_duration * 1e9`` gives back the configured rate exactly. The prompt is
processed first, in batches of 512 tokens like llama-server, each batch shown in the slot's
``n_prompt_tokens_processed``. A reasoning model's first tokens are its thinking, counted in
``eval_count`` like the answer's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llm_supervisor.simengine.logs import Log
from llm_supervisor.simengine.models import Model
from llm_supervisor.simengine.plan import Faults

GPU_TOKENS_PER_SECOND = 45.0
CPU_TOKENS_PER_SECOND = 8.0
RADV_SLOWDOWN = 20  # Vulkan (RADV) against a gfx906 ROCm build on an MI50 (docs/field-notes.md)
PREFILL_SPEEDUP = 10  # prompt tokens are evaluated this many times faster than generated ones
PREFILL_BATCH = 512  # llama-server's default batch: the prompt is decoded this many at a time
LOAD_SECONDS = 0.03  # the first generation "loads" the model
LOAD_STEPS = 10  # a load grows its memory and prints its lines in this many steps
DEFAULT_TOKENS = 12  # the answer's length when the client sets no limit
ANSWER = ("Hello", "!", " I", " am", " a", " simulated", " engine", ",", " and", " I",
          " am", " fine", ".")
THINKING = ("Okay", ",", " the", " user", " wants", " a", " short", " greeting", ".", " I",
            " should", " answer", " briefly", " and", " politely", ",", " in", " one",
            " sentence", ".", " Let", " me", " reply", ".")
MODEL_SIZE = 4_683_087_332  # bytes on disk (a 7B Q4_K_M)
KV_CACHE = 1_073_741_824  # what loading adds to it
CONTEXT_LENGTH = 4096  # Ollama's vram-based default below 24 GiB
OLLAMA_VERSION = "0.33.0"
OLDEST_OLLAMA = (0, 9, 0)  # the oldest Ollama simulated: its runner lines are known from here
LLAMA_SERVER_RUNNER = (0, 30, 0)  # Ollama runs upstream llama-server per model (#16031)
THINKING_BY_DEFAULT = (0, 12, 4)  # a model with "thinking" thinks unless told not to
RUNNER_LINE = (0, 12, 0)  # "starting runner" (before: "starting llama server")


def parse_version(text: str) -> tuple[int, int, int]:
    """``X.Y.Z`` (a leading ``v`` allowed) -> a comparable tuple; ValueError otherwise."""
    parts = text.strip().removeprefix("v").split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--ollama-version {text!r}: expected X.Y.Z, such as {OLLAMA_VERSION}")
    version = (int(parts[0]), int(parts[1]), int(parts[2]))
    if version < OLDEST_OLLAMA:
        raise ValueError(f"--ollama-version {text}: simulated from "
                         f"{'.'.join(map(str, OLDEST_OLLAMA))} on")
    return version


@dataclass(frozen=True)
class Generation:
    """One finished generation, with durations in nanoseconds as Ollama reports them."""

    text: str  # the answer (with a <think> block inline when an old Ollama leaves it there)
    prompt_tokens: int
    eval_count: int  # every generated token, the thinking ones too
    done_reason: str  # "length" when the limit was reached, else "stop"
    load_ns: int
    prompt_ns: int
    eval_ns: int
    total_ns: int
    thinking: str = ""  # what went to ``thinking`` / ``message.thinking``


class Loading(Protocol):
    """What the engine tells while a model loads (Ollama: its runner's lines)."""

    def step(self, done: int, steps: int) -> None: ...

    def finished(self, seconds: float) -> None: ...


def script(limit: int | None, thought: str) -> list[tuple[str, bool]]:
    """The tokens a generation produces, each with "is it thinking": the thinking first
    (``thought`` "field"; "inline" keeps it in the answer between <think> tags, as Ollama did
    before 0.12.4), then the answer; ``limit`` cuts the whole short."""
    thinking: list[tuple[str, bool]] = []
    if thought == "field":
        thinking = [(t, True) for t in THINKING]
    elif thought == "inline":
        thinking = [(t, False) for t in ("<think>", *THINKING, "</think>\n\n")]
    wanted = limit if limit is not None and limit > 0 else len(thinking) + DEFAULT_TOKENS
    answer = [(ANSWER[i % len(ANSWER)], False) for i in range(max(0, wanted - len(thinking)))]
    return (thinking + answer)[:wanted]


@dataclass
class Engine:
    kind: str  # "ollama" or "vllm"
    model: str  # the default model (the first served)
    library: str  # the library it was started on: its faults apply
    faults: Faults
    log: Log
    clock: Callable[[], float] = time.monotonic
    ready_at: float | None = None  # when HTTP answers began; fault times count from here
    started_at: float = field(default_factory=time.time)  # wall time, for modified_at
    dead: bool = False  # vLLM: the engine core died (GPU error); /health answers 503
    api_key: str | None = None  # vLLM's --api-key: /v1 requests need "Bearer <key>"
    stop: threading.Event = field(default_factory=threading.Event)
    parallel: int = 1  # generations at once per model (OLLAMA_NUM_PARALLEL); more wait
    version: str = OLLAMA_VERSION  # Ollama's (vLLM has its own, fixed)
    models: list[Model] = field(default_factory=list)  # served; empty: ``model``, completion
    models_dir: Path | None = None  # OLLAMA_MODELS: manifests written there, pull and delete
    on_load: Callable[[Model], Loading | None] | None = None  # when a model starts loading
    stats: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("liveness", "generations", "running", "waiting", "prompt_tokens", "generation_tokens",
         "requests_length", "requests_stop", "ttft_sum", "e2e_sum"), 0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.models:
            self.models = [Model(self.model, parallel=self.parallel)]
        self.model = self.models[0].name
        cpu = self.faults.cpu_models
        for m in self.models:
            m.present = not self.faults.missing_model
            m.on_cpu = any(m.same(name, self.kind != "ollama") for name in cpu)

    # the models
    @property
    def default(self) -> Model:
        return self.models[0]

    def find(self, name: str) -> Model | None:
        """The served model ``name`` names (Ollama normalises names; vLLM takes them as
        given)."""
        exact = self.kind != "ollama"
        return next((m for m in self.models if m.same(name, exact)), None)

    @property
    def release(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def llama_server_runners(self) -> bool:
        """Ollama >= 0.30: one upstream llama-server per model, with its /slots."""
        return self.kind == "ollama" and self.release >= LLAMA_SERVER_RUNNER

    @property
    def digest(self) -> str:
        return self.default.digest

    def slot(self, prompt_tokens: int = 0, model: Model | None = None
             ) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Hold one of the model's slots: a request beyond them waits (the queue), counted
        in ``waiting`` meanwhile."""
        return (model or self.default).slot(self.stop, prompt_tokens,
                                            waiting=lambda n: self.count("waiting", n))

    def slots_document(self, model: Model | None = None) -> list[dict[str, Any]]:
        return (model or self.default).slots_document(CONTEXT_LENGTH)

    # where it computes
    @property
    def placement(self) -> str:
        """Where it really computes: the library, cpu after a silent fallback, or Vulkan when
        this build dropped the card's ROCm device (Ollama goes on with Vulkan, on by default)."""
        if self.faults.cpu_fallback:
            return "cpu"
        if self.faults.opencl_unsupported and self.library == "opencl":
            return "cpu"
        if self.faults.drops_rocm and self.library == "rocm":
            return "vulkan"
        return self.library

    @property
    def offloaded(self) -> bool:
        """The models' layers go to the GPU (``size_vram`` in /api/ps), unless the scheduler
        put one on the CPU (``model_offloaded``)."""
        return self.on_gpu and not self.faults.no_offload

    def model_offloaded(self, model: Model) -> bool:
        return self.offloaded and not model.on_cpu

    @property
    def on_gpu(self) -> bool:
        return self.placement != "cpu"

    def tokens_per_second(self, model: Model | None = None) -> float:
        if self.faults.tokens_per_second:
            return self.faults.tokens_per_second
        if self._due(self.faults.cpu_speed_after):
            return CPU_TOKENS_PER_SECOND  # on the CPU, whatever /api/ps says
        if model is not None and model.on_cpu:
            return CPU_TOKENS_PER_SECOND
        if self.faults.drops_rocm and self.library == "rocm":
            return GPU_TOKENS_PER_SECOND / RADV_SLOWDOWN  # Vulkan on a card meant for ROCm
        return GPU_TOKENS_PER_SECOND if self.offloaded else CPU_TOKENS_PER_SECOND

    # faults due
    def _due(self, after: float | None) -> bool:
        return after is not None and self.ready_at is not None and \
            self.clock() - self.ready_at >= after

    def hanging(self) -> bool:
        return self._due(self.faults.hang_after)

    def gpu_failing(self) -> bool:
        return self._due(self.faults.gpu_errors_after)

    def runner_failing(self) -> bool:
        return self._due(self.faults.generation_errors_after)

    def count(self, what: str, amount: float = 1) -> float:
        with self._lock:
            self.stats[what] += amount
            return self.stats[what]

    def blip(self, what: str) -> bool:
        """Count a liveness request or a generation; True when this one must answer 500."""
        n = self.count(what)
        return self.faults.blip_every is not None and n % self.faults.blip_every == 0

    def error_message(self, lines: tuple[str, ...]) -> str:
        first = next((s for s in lines if "error" in s.lower()), lines[0] if lines else "")
        return f"llama runner process has terminated: {first.strip()}"

    # loading
    def load(self, model: Model | None = None) -> int:
        """Load the model if it is not loaded yet (it stays loaded); nanoseconds it took."""
        model = model or self.default
        started = time.perf_counter()
        with model.loading:
            if not model.loaded:
                self._load(model)
            model.used_at = time.time()
        return round((time.perf_counter() - started) * 1e9)

    def _load(self, model: Model) -> None:
        """``load_seconds`` in ten steps: each allocates its share of ``load_memory_mb`` and
        lets the runner tell its progress."""
        started = time.perf_counter()
        story = self.on_load(model) if self.on_load is not None else None
        seconds = LOAD_SECONDS if self.faults.load_seconds is None else self.faults.load_seconds
        for step in range(1, LOAD_STEPS + 1):
            if self.stop.wait(seconds / LOAD_STEPS):
                raise ConnectionAbortedError("the engine stopped")
            model.hold_memory(self.faults.load_memory_mb * step // LOAD_STEPS)
            if story is not None:
                story.step(step, LOAD_STEPS)
        if story is not None:
            story.finished(time.perf_counter() - started)

    # generating
    def generate(self, prompt_tokens: int, limit: int | None,
                 on_token: Callable[[str, bool], None] | None = None,
                 model: Model | None = None, thought: str = "") -> Generation:
        """Generate ``limit`` tokens (or the canned answer), sleeping as long as it takes;
        ``on_token(piece, thinking)`` sees each as it comes."""
        model = model or self.default
        started = time.perf_counter()
        rate = self.tokens_per_second(model)
        load_ns = self.load(model)
        tokens = script(limit, thought)
        with self.slot(prompt_tokens, model) as slot:
            self.count("running")
            try:
                prompt_s = self._prefill(slot, prompt_tokens, rate)
                first_token_at = time.perf_counter()
                for i, (piece, thinking) in enumerate(tokens):
                    if self.stop.wait(1 / rate):
                        raise ConnectionAbortedError("the engine stopped")
                    tokens[i] = ("G" if self.faults.degenerate else piece, thinking)
                    slot["n_decoded"] = i + 1
                    if on_token:
                        on_token(*tokens[i])
            finally:
                self.count("running", -1)
        total = time.perf_counter() - started
        n = len(tokens)
        reason = "length" if limit is not None and limit > 0 else "stop"
        self.count("prompt_tokens", prompt_tokens)
        self.count("generation_tokens", n)
        self.count(f"requests_{reason}")
        self.count("ttft_sum", first_token_at - started)
        self.count("e2e_sum", total)
        return Generation(text="".join(p for p, thinking in tokens if not thinking),
                          thinking="".join(p for p, thinking in tokens if thinking),
                          prompt_tokens=prompt_tokens, eval_count=n, done_reason=reason,
                          load_ns=load_ns, prompt_ns=round(prompt_s * 1e9),
                          eval_ns=round(n / rate * 1e9), total_ns=round(total * 1e9))

    def _prefill(self, slot: dict[str, Any], prompt_tokens: int, rate: float) -> float:
        """Process the prompt batch by batch (``prefill_tokens_per_second``, default 10x the
        generation speed); seconds it took."""
        speed = self.faults.prefill_tokens_per_second or rate * PREFILL_SPEEDUP
        done = 0
        while done < prompt_tokens:
            batch = min(PREFILL_BATCH, prompt_tokens - done)
            if self.stop.wait(batch / speed):
                raise ConnectionAbortedError("the engine stopped")
            done += batch
            slot["n_prompt_tokens_processed"] = done
        return prompt_tokens / speed


def count_tokens(text: str) -> int:
    """A rough token count: words and punctuation, at least one."""
    return max(1, len(text.split()) + sum(text.count(p) for p in ",.!?"))
