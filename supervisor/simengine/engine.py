"""One simulated engine's state: where it runs, which faults are due, and token generation.

Generation really takes the time it reports: ``num_predict / tokens_per_second`` seconds of
sleep, so a hung or slow engine looks hung or slow to a client with a stopwatch, and
``eval_count / eval_duration * 1e9`` gives back the configured rate exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from supervisor.simengine.logs import Log
from supervisor.simengine.plan import Faults

GPU_TOKENS_PER_SECOND = 45.0
CPU_TOKENS_PER_SECOND = 8.0
RADV_SLOWDOWN = 20  # Vulkan (RADV) against a gfx906 ROCm build on an MI50 (FIELD-NOTES)
PREFILL_SPEEDUP = 10  # prompt tokens are evaluated this many times faster than generated ones
LOAD_SECONDS = 0.03  # the first generation "loads" the model
DEFAULT_TOKENS = 12  # the answer's length when the client sets no limit
ANSWER = ("Hello", "!", " I", " am", " a", " simulated", " engine", ",", " and", " I",
          " am", " fine", ".")
MODEL_SIZE = 4_683_087_332  # bytes on disk (a 7B Q4_K_M)
KV_CACHE = 1_073_741_824  # what loading adds to it
CONTEXT_LENGTH = 4096  # Ollama's vram-based default below 24 GiB


@dataclass(frozen=True)
class Generation:
    """One finished generation, with durations in nanoseconds as Ollama reports them."""

    text: str
    prompt_tokens: int
    eval_count: int
    done_reason: str  # "length" when the limit was reached, else "stop"
    load_ns: int
    prompt_ns: int
    eval_ns: int
    total_ns: int


@dataclass
class Engine:
    kind: str  # "ollama" or "vllm"
    model: str
    library: str  # the library it was started on: its faults apply
    faults: Faults
    log: Log
    clock: Callable[[], float] = time.monotonic
    ready_at: float | None = None  # when HTTP answers began; fault times count from here
    started_at: float = field(default_factory=time.time)  # wall time, for modified_at
    used_at: float | None = None  # wall time of the last generation; None: model not loaded
    dead: bool = False  # vLLM: the engine core died (GPU error); /health answers 503
    present: bool = True  # the model is on disk (a missing_model fault: until pulled)
    api_key: str | None = None  # vLLM's --api-key: /v1 requests need "Bearer <key>"
    stop: threading.Event = field(default_factory=threading.Event)
    parallel: int = 1  # generations at once (OLLAMA_NUM_PARALLEL); more wait for a slot
    on_load: Callable[[], None] | None = None  # called once, when the model is first loaded
    stats: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("liveness", "generations", "running", "waiting", "prompt_tokens", "generation_tokens",
         "requests_length", "requests_stop", "ttft_sum", "e2e_sum"), 0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.present = not self.faults.missing_model
        self._free = threading.Semaphore(self.parallel)
        self._tasks = itertools.count(1)
        # llama-server's /slots, as Ollama's runner (an upstream llama-server) serves it
        self.slots: list[dict[str, Any]] = [
            {"id": i, "id_task": -1, "is_processing": False, "n_decoded": 0,
             "n_prompt_tokens_processed": 0} for i in range(self.parallel)]

    @contextlib.contextmanager
    def slot(self, prompt_tokens: int = 0) -> Iterator[dict[str, Any]]:
        """Hold one of ``parallel`` slots: a request beyond them waits here (the queue)."""
        self.count("waiting")
        try:
            while not self._free.acquire(timeout=0.2):
                if self.stop.is_set():
                    raise ConnectionAbortedError("the engine stopped")
        finally:
            self.count("waiting", -1)
        with self._lock:
            slot = next(s for s in self.slots if not s["is_processing"])
            slot.update(id_task=next(self._tasks), is_processing=True, n_decoded=0,
                        n_prompt_tokens_processed=0)
        try:
            yield slot
        finally:
            with self._lock:
                slot["is_processing"] = False
            self._free.release()

    def slots_document(self) -> list[dict[str, Any]]:
        """``GET /slots`` of llama-server (server_slot::to_json, metrics-only fields)."""
        with self._lock:
            return [{"id": s["id"], "id_task": s["id_task"], "n_ctx": CONTEXT_LENGTH,
                     "speculative": False, "is_processing": s["is_processing"],
                     "n_prompt_tokens_processed": s["n_prompt_tokens_processed"],
                     "params": {"n_predict": -1, "seed": 4294967295, "temperature": 0.8},
                     "next_token": [{"has_next_token": s["is_processing"],
                                     "has_new_line": False, "n_remain": -1,
                                     "n_decoded": s["n_decoded"]}]}
                    for s in self.slots]

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
        """The model's layers are on the GPU (``size_vram`` in /api/ps)."""
        return self.on_gpu and not self.faults.no_offload

    @property
    def on_gpu(self) -> bool:
        return self.placement != "cpu"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.model.encode()).hexdigest()

    @property
    def tokens_per_second(self) -> float:
        if self.faults.tokens_per_second:
            return self.faults.tokens_per_second
        if self._due(self.faults.cpu_speed_after):
            return CPU_TOKENS_PER_SECOND  # on the CPU, whatever /api/ps says
        if self.faults.drops_rocm and self.library == "rocm":
            return GPU_TOKENS_PER_SECOND / RADV_SLOWDOWN  # Vulkan on a card meant for ROCm
        return GPU_TOKENS_PER_SECOND if self.offloaded else CPU_TOKENS_PER_SECOND

    def _due(self, after: float | None) -> bool:
        return after is not None and self.ready_at is not None and \
            self.clock() - self.ready_at >= after

    def hanging(self) -> bool:
        return self._due(self.faults.hang_after)

    def gpu_failing(self) -> bool:
        return self._due(self.faults.gpu_errors_after)

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

    def load(self) -> int:
        """Load the model if it is not loaded yet (it stays loaded); nanoseconds it took."""
        started = time.perf_counter()
        if self.used_at is None:
            loading = self.faults.load_seconds
            time.sleep(LOAD_SECONDS if loading is None else loading)
            if self.on_load is not None:
                self.on_load()
                self.on_load = None
        self.used_at = time.time()
        return round((time.perf_counter() - started) * 1e9)

    def generate(self, prompt_tokens: int, limit: int | None,
                 on_token: Callable[[str], None] | None = None) -> Generation:
        """Generate ``limit`` tokens (or the canned answer), sleeping as long as it takes."""
        started = time.perf_counter()
        rate = self.tokens_per_second
        load_ns = self.load()
        with self.slot() as slot:
            self.count("running")
            try:
                prompt_s = prompt_tokens / (rate * PREFILL_SPEEDUP)
                time.sleep(prompt_s)
                slot["n_prompt_tokens_processed"] = prompt_tokens
                first_token_at = time.perf_counter()
                n = limit if limit is not None and limit > 0 else DEFAULT_TOKENS
                pieces = []
                for i in range(n):
                    if self.stop.wait(1 / rate):
                        raise ConnectionAbortedError("the engine stopped")
                    piece = "G" if self.faults.degenerate else ANSWER[i % len(ANSWER)]
                    pieces.append(piece)
                    slot["n_decoded"] = i + 1
                    if on_token:
                        on_token(piece)
            finally:
                self.count("running", -1)
        total = time.perf_counter() - started
        reason = "length" if limit is not None and limit > 0 else "stop"
        self.count("prompt_tokens", prompt_tokens)
        self.count("generation_tokens", n)
        self.count(f"requests_{reason}")
        self.count("ttft_sum", first_token_at - started)
        self.count("e2e_sum", total)
        return Generation(text="".join(pieces), prompt_tokens=prompt_tokens, eval_count=n,
                          done_reason=reason, load_ns=load_ns,
                          prompt_ns=round(prompt_s * 1e9), eval_ns=round(n / rate * 1e9),
                          total_ns=round(total * 1e9))


def count_tokens(text: str) -> int:
    """A rough token count: words and punctuation, at least one."""
    return max(1, len(text.split()) + sum(text.count(p) for p in ",.!?"))
