"""Progress: whether an engine is doing work while a generation check waits for it.

Busy is not broken. A generation check (the canary) that is past its deadline is a hang only
when the engine shows no progress meanwhile; an engine that produces tokens or completes
requests is working, however long the check waits in its queue. The engines' own words:

- llama-server: ``/slots`` (per slot ``is_processing``, ``id_task``,
  ``next_token[0].n_decoded``; on by default in current builds) and ``/metrics`` with
  ``--metrics`` (``llamacpp:n_decode_total``, which grows at every decode step —
  ``tokens_predicted_total`` grows only when a request ends — ``requests_processing``,
  ``requests_deferred``);
- vLLM: ``/metrics`` (``vllm:generation_tokens_total``, ``vllm:num_requests_running``,
  ``vllm:num_requests_waiting``);
- Ollama: one gin access line per completed request in its log, and, from 0.30 on, its runner
  (an upstream llama-server) whose ``/slots`` answers on the port named in its
  ``starting llama-server cmd=… --port N`` line.

Everything here is pure: readings are parsed from text, kept in a ``Watch`` per generation
check, and ``judge`` turns them into a ``Verdict``. The rule, with D the check's deadline
(``load_timeout`` while the model loads, then ``canary_timeout``), S ``stall_after`` and
B ``blind_timeout``, for a check waiting E seconds:

1. E < D: no verdict.
2. Tokens generated or requests completed within the last S (and since the check began):
   **busy**, never a failure.
3. The engine shows tokens (``/metrics`` or ``/slots``): with other requests in flight or
   queued, no token for S is a **stall**; with nothing else in flight, it is a **hang**.
4. No token signal (an Ollama before 0.30, whose log names only completed requests; a
   progress endpoint that stopped answering): the kernel's view of the engine's clients
   (``host.clients``: established connections to its port other than the daemon's own, and
   the bytes sent to them) stands in. Bytes streamed to another client within S are busy;
   with nobody else connected nothing can be ahead of the check: a **hang** at D, as on an
   engine with tokens. Only with another client connected and nothing streaming or
   completing, a hang waits until E ≥ max(D, B) — B is generous, so a user's long
   non-streamed answer in front of the check is never taken for a hang before it; while the
   model loads (no user answer can be running), at D.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from llm_supervisor.host.clients import Clients, flowing

Slot = tuple[int, int, int, bool]  # (slot id, task id, tokens processed, processing)
LOAD_STEP = 8 * 2**20  # memory growth between two looks that shows a load progressing


@dataclass(frozen=True)
class Reading:
    """One look at an engine's work. ``None`` where the engine does not say."""

    tokens: float | None = None           # a counter of generated tokens (metrics)
    slots: tuple[Slot, ...] | None = None  # /slots: what each slot is decoding
    in_flight: int | None = None           # requests being generated
    waiting: int | None = None             # requests queued
    source: str = ""
    clients: Clients | None = None         # the kernel's view: other clients' connections

    @property
    def has_tokens(self) -> bool:
        return self.tokens is not None or self.slots is not None


def from_clients(clients: Clients) -> Reading | None:
    """The kernel's view of an engine's clients as a reading (``host.clients``): other
    clients connected are requests in flight or queued; bytes sent to them, a streamed
    answer flowing. None when the kernel could not be read."""
    if clients.error is not None:
        return None
    return Reading(in_flight=clients.count, source="tcp", clients=clients)


def working(reading: Reading | None) -> bool:
    """Does the engine say it is generating or queueing something (before a check's request
    is sent: someone else's work)?"""
    if reading is None:
        return False
    return bool(reading.in_flight or reading.waiting
                or any(on for _, _, _, on in reading.slots or ()))


def _samples(text: str) -> dict[str, float]:
    """Prometheus text -> sample name -> value, summed over labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def parse_vllm_metrics(text: str) -> Reading | None:
    """vLLM's ``/metrics``; None when it has none of the counters (not vLLM's text)."""
    try:
        s = _samples(text)
    except ValueError:
        return None
    tokens = s.get("vllm:generation_tokens_total")
    if tokens is None:
        return None
    # a long prompt is computed chunk by chunk, each step counted as prompt tokens: busy
    tokens += s.get("vllm:prompt_tokens_total", 0.0)
    return Reading(tokens=tokens, in_flight=_int(s.get("vllm:num_requests_running")),
                   waiting=_int(s.get("vllm:num_requests_waiting")), source="/metrics")


def parse_llama_metrics(text: str) -> Reading | None:
    """llama-server's ``/metrics`` (with ``--metrics``); None without its counters."""
    try:
        s = _samples(text)
    except ValueError:
        return None
    # tokens_predicted_total grows only when a request ends; n_decode_total at every step
    tokens = s.get("llamacpp:n_decode_total", s.get("llamacpp:tokens_predicted_total"))
    if tokens is None:
        return None
    return Reading(tokens=tokens, in_flight=_int(s.get("llamacpp:requests_processing")),
                   waiting=_int(s.get("llamacpp:requests_deferred")), source="/metrics")


def parse_slots(document: Any, source: str = "/slots") -> Reading | None:
    """llama-server's ``/slots``: a list of slots; None when it is not that shape. Progress
    is the prompt tokens processed plus the tokens decoded (a long prompt's prefill counts)."""
    if not isinstance(document, list) or not document:
        return None
    slots: list[Slot] = []
    busy = 0
    for i, slot in enumerate(document):
        if not isinstance(slot, dict) or not isinstance(slot.get("is_processing"), bool):
            return None
        busy += slot["is_processing"]
        ident, task = slot.get("id"), slot.get("id_task")
        nexts = slot.get("next_token")
        first = nexts[0] if isinstance(nexts, list) and nexts else nexts
        decoded = _count(first.get("n_decoded")) if isinstance(first, dict) else 0
        slots.append((ident if _count(ident) == ident else i,
                      task if _count(task) == task else -1,
                      decoded + _count(slot.get("n_prompt_tokens_processed")),
                      slot["is_processing"]))
    return Reading(slots=tuple(slots), in_flight=busy, source=source)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


# Access lines of finished requests: gin's (Ollama) and uvicorn's (vLLM)
#   [GIN] 2026/12/03 - 08:51:00 | 200 |   41.2s |  127.0.0.1 | POST     "/api/chat"
#   INFO:     127.0.0.1:50132 - "POST /v1/completions HTTP/1.1" 200 OK
_GIN = re.compile(r'\[GIN\] [^|]*\|[^\d|]*(\d{3})[^|]*\|[^|]*\|[^|]*\|\W*([A-Z]+)\W+"([^"]*)"')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UVICORN = re.compile(r'"(\w+) (\S+) HTTP/[\d.]+" (\d{3})')
GENERATION_PATHS = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
                    "/v1/completions", "/v1/chat/completions", "/v1/embeddings",
                    "/v1/responses", "/completion", "/completions")


def completed_request(line: str) -> bool:
    """Whether a log line says a generation request finished with 200 (work was done)."""
    if "[GIN]" in line:
        line = _ANSI.sub("", line)  # gin colours its fields on a terminal
        match = _GIN.search(line)
        if not match:
            return False
        status, method, path = match.group(1), match.group(2), match.group(3)
    elif "HTTP/" in line:
        found = _UVICORN.search(line)
        if not found:
            return False
        method, path, status = found.group(1), found.group(2), found.group(3)
    else:
        return False
    return status == "200" and method == "POST" and \
        path.split("?", 1)[0] in GENERATION_PATHS


# --------------------------------------------------------------------------- one check


class Kind(StrEnum):
    PENDING = "pending"  # within its deadline
    BUSY = "busy"        # overdue, but the engine works: never a failure
    WAITING = "waiting"  # overdue, no evidence either way yet: no verdict
    HANG = "hang"        # overdue, and nothing moves
    STALL = "stall"      # overdue, requests in flight, no token for stall_after

    @property
    def failed(self) -> bool:
        return self in (Kind.HANG, Kind.STALL)


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    detail: str = ""
    tokens: float = 0.0        # tokens seen within the window
    completed: int = 0         # requests completed within the window
    window: float = 0.0        # seconds the figures above cover


class Watch:
    """What an engine did while one generation check waited: progress since its launch."""

    def __init__(self, started: float, phase: str) -> None:
        self.started = started
        self.phase = phase                  # "load" or "generate"
        self.last: Reading | None = None    # the latest reading, the baseline of the next
        # (at, tokens, requests done, bytes streamed to other clients, bytes loaded)
        self.events: deque[tuple[float, float, int, int, int]] = deque(maxlen=4096)
        self.memory: int | None = None  # the engine's memory at the last look (a load)
        self.has_tokens = False
        self.sees_clients = False  # the kernel's view of the engine's clients is read
        self.sources: set[str] = set()
        self.earlier_tasks: set[int] | None = None  # tasks in the slots before the check

    def add(self, now: float, reading: Reading | None) -> None:
        if reading is None:
            return
        self.sources.add(reading.source)
        self.has_tokens = self.has_tokens or reading.has_tokens
        self.sees_clients = self.sees_clients or reading.clients is not None
        previous, self.last = self.last, reading
        if previous is None:  # the baseline, read before the check's request was sent
            self.earlier_tasks = {t for _, t, _, on in reading.slots or () if on}
            return
        tokens, done, sent = _delta(previous, reading)
        if tokens or done or sent:
            self.events.append((now, tokens, done, sent, 0))

    def completed(self, at: float) -> None:
        """The engine's log says a generation request finished (at ``at``, our clock)."""
        if at >= self.started:
            self.events.append((at, 0.0, 1, 0, 0))
            self.sources.add("log")

    def grew(self, now: float, memory: int | None) -> None:
        """The engine's memory now: while a model loads, growth is the load's progress
        (``LOAD_STEP`` at least, so the allocator's noise is none)."""
        if memory is None:
            return
        before, self.memory = self.memory, memory
        if before is not None and memory - before >= LOAD_STEP:
            self.events.append((now, 0.0, 0, 0, memory - before))
            self.sources.add("memory")

    def since(self, start: float) -> tuple[float, int, int, int]:
        recent = [e for e in self.events if e[0] >= start]
        return (sum(e[1] for e in recent), sum(e[2] for e in recent),
                sum(e[3] for e in recent), sum(e[4] for e in recent))

    @property
    def last_progress(self) -> float:
        return self.events[-1][0] if self.events else self.started

    @property
    def others(self) -> int:
        """Requests in flight or queued besides this check's own. Metrics count the check's
        request once the engine has it; in the slots it is a task that began after the
        baseline (with every slot taken it may be queued in front of them: not counted)."""
        last = self.last
        if last is None or last.in_flight is None:
            return 0
        if last.clients is not None:  # the kernel's view leaves the daemon's own out
            return last.in_flight
        if last.slots is not None:
            running = [t for _, t, _, on in last.slots if on]
            ours = any(t not in (self.earlier_tasks or set()) for t in running)
            return max(0, len(running) + (last.waiting or 0) - ours)
        return max(0, last.in_flight + (last.waiting or 0) - 1)


def _delta(before: Reading, after: Reading) -> tuple[float, int, int]:
    """(tokens, completed requests, bytes streamed) between two readings of one source."""
    if before.source != after.source:
        return 0.0, 0, 0
    if before.clients is not None and after.clients is not None:
        return 0.0, 0, flowing(before.clients, after.clients)
    if before.tokens is not None and after.tokens is not None:
        grown = after.tokens - before.tokens
        return (grown if grown >= 0 else after.tokens), 0, 0  # a reset: a new process
    if before.slots is not None and after.slots is not None:
        earlier = {ident: (task, n, on) for ident, task, n, on in before.slots}
        tokens, done = 0.0, 0
        for ident, task, n, _ in after.slots:
            was = earlier.get(ident)
            if was is None:
                continue
            if task == was[0]:
                tokens += max(0, n - was[1])
            elif was[2]:  # the slot took another task: the one it was working on finished
                tokens += n
                done += was[0] >= 0
            # an idle slot that took a task (the check's own, or a user's that just began):
            # nothing finished, and its progress counts from the next look on
        return tokens, done, 0
    return 0.0, 0, 0


def judge(watch: Watch, now: float, deadline: float, stall_after: float,
          blind_timeout: float) -> Verdict:
    """The generation check's verdict (the module's docstring states the rule)."""
    waited = now - watch.started
    if waited < deadline:
        return Verdict(Kind.PENDING)
    start = max(watch.started, now - stall_after)
    tokens, done, sent, loaded = watch.since(start)
    window = now - start
    if tokens or done or sent or loaded:
        what = [f"{tokens:.0f} tokens"] if tokens else []
        what += [f"{done} request(s) completed"] if done else []
        what += [f"{sent} bytes streamed to other clients"] if sent else []
        what += [f"the engine's memory grew {loaded / 2**20:.0f} MiB (loading)"] \
            if loaded else []
        return Verdict(Kind.BUSY, f"canary queued {waited:.0f}s; {' and '.join(what)} in the"
                       f" last {window:.0f}s", tokens, done, window)
    silent = now - watch.last_progress
    if watch.has_tokens:
        others = watch.others
        if not others:
            return Verdict(Kind.HANG, _no_token(watch, deadline), window=window)
        if silent >= stall_after:
            return Verdict(Kind.STALL, f"{others} request(s) in flight or queued and no token"
                           f" for {silent:.0f}s", window=window)
        return Verdict(Kind.WAITING, f"canary overdue {waited:.0f}s; {others} request(s) in"
                       f" flight, no token for {silent:.0f}s (a stall after {stall_after:g}s)",
                       window=window)
    if watch.sees_clients and not watch.others:
        # the kernel shows nobody else connected: nothing can be ahead of the check
        return Verdict(Kind.HANG, _no_token(watch, deadline) + "; nobody else connected",
                       window=window)
    if watch.phase == "load" or waited >= max(deadline, blind_timeout):
        return Verdict(Kind.HANG, _no_token(watch, deadline) if waited < blind_timeout else
                       f"no token and no request completed for {waited:.0f}s", window=window)
    return Verdict(Kind.WAITING, f"canary overdue {waited:.0f}s; the engine shows no token"
                   f" progress: a hang after {blind_timeout:g}s without a completed request",
                   window=window)


def _no_token(watch: Watch, deadline: float) -> str:
    if watch.phase == "load":
        return f"loading the model: no token within {deadline:g}s"
    return f"no token within {deadline:g}s"
