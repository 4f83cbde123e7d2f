"""The fault plan: a JSON file read once at start, naming what goes wrong on which library.

    {"rocm": {"hang_after": 30, "tokens_per_second": 20},
     "*":    {"blip_every": 50}}

Keys are libraries (``rocm``, ``vulkan``, ``opencl``, ``cpu``) or ``*`` for all of them; the
library's own entry overrides ``*`` key by key. Times count from the moment the engine starts
answering HTTP (after ``start_delay``). No plan, or an empty one, is a healthy engine.

Each key is one field of ``Faults`` below, with what it does. Besides the GPU faults there are
the ones a supervisor must tell apart from them: a runner that fails every generation at once
(``generation_errors_after``: 500 ``llama runner process has terminated: exit status 2``, no
GPU line), embedding models answering bad vectors (``embed_nan``, ``embed_zeros``,
``embed_constant``), a long prompt processed batch by batch (``prefill_tokens_per_second``),
a slow load whose memory grows step by step (``load_seconds``, ``load_memory_mb``) and models
the scheduler put on the CPU beside others on the GPU (``cpu_models``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

LIBRARIES = ("rocm", "vulkan", "opencl", "cpu")
MAX_LOAD_MEMORY_MB = 65536
TUPLES = ("error_lines", "cpu_models")  # lists in JSON, tuples in Faults (it is frozen)


class PlanError(Exception):
    """The fault plan is missing or invalid; the message names the file and the value."""


@dataclass(frozen=True)
class Faults:
    """The faults of one library: each field is one key of the plan, None or False is "off"."""

    crash_on_start: bool = False  # print GPU error lines and exit 1 before serving
    crash_after: float | None = None  # serve, then print error lines and exit 2 after N s
    start_delay: float = 0.0  # socket bound, but no HTTP answers for N s (discovery, load)
    hang_after: float | None = None  # from N s on, generations never return; liveness stays 200
    tokens_per_second: float | None = None  # generation speed (default 45 on a GPU, 8 on cpu)
    cpu_fallback: bool = False  # on a GPU library, silently run on the CPU
    gpu_errors_after: float | None = None  # from N s on, generations print GPU errors, answer 500
    blip_every: int | None = None  # every Nth liveness request and generation answers 500
    error_lines: tuple[str, ...] | None = None  # the GPU error lines to print (default per library)
    missing_model: bool = False  # the model is not on disk until pulled (/api/pull)
    pull_seconds: float = 1.0  # how long a pull takes
    drops_rocm: str | None = None  # this build has no ROCm kernels for the card's gfx target:
    #                                it drops the ROCm device at discovery, computes on Vulkan
    drops_igpu: bool = False  # it also drops an APU's integrated GPU (the card stays in use)
    no_offload: bool = False  # the GPU is found, but the model loads with no layer on it
    load_seconds: float | None = None  # how long loading the model takes (default 0.03 s)
    no_runner: bool = False  # an Ollama before 0.30: no llama-server runner, so no /slots
    cpu_speed_after: float | None = None  # from N s on, generation runs at the CPU's speed
    #                                       while /api/ps and the runner still say all on GPU
    degenerate: bool = False  # answers garbage at full speed ("GGGG…"), as after a ROCm fault
    opencl_unsupported: bool = False  # on opencl: llama.cpp's OpenCL drops the GPU
    #                                   ("ggml_opencl: unsupported GPU"), computes on the CPU
    generation_errors_after: float | None = None  # from N s on, every generation and
    #     embedding answers 500 "llama runner process has terminated: exit status 2" at once;
    #     liveness stays 200 and no GPU error line is printed (a runner failing every request)
    embed_nan: bool = False  # an embedding model computes NaN: Ollama < 0.30 answers 500
    #     "failed to encode response: json: unsupported value: NaN"; >= 0.30 (llama-server's
    #     JSON null, read as 0) all zeros with 200; vLLM 500
    embed_zeros: bool = False  # an embedding model answers all-zero vectors, HTTP 200
    embed_constant: bool = False  # an embedding model answers one vector whatever the input
    prefill_tokens_per_second: float | None = None  # prompt processing speed (default 10x
    #     the generation speed), in batches of 512 tokens that /slots shows one by one
    load_memory_mb: int = 0  # loading a model allocates (and touches) this many MB in ten
    #     steps across load_seconds, held while it stays loaded
    cpu_models: tuple[str, ...] = ()  # these models' runners are on the CPU ("offloaded 0/N
    #     layers", size_vram 0, CPU speed) while the others stay on the GPU


def _seconds(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _positive(v: Any) -> bool:
    return _seconds(v) and v > 0


_CHECKS: dict[str, tuple[Any, str]] = {
    "crash_on_start": (lambda v: isinstance(v, bool), "true or false"),
    "crash_after": (_seconds, "a number of seconds >= 0"),
    "start_delay": (_seconds, "a number of seconds >= 0"),
    "hang_after": (_seconds, "a number of seconds >= 0"),
    "tokens_per_second": (_positive, "a number > 0"),
    "cpu_fallback": (lambda v: isinstance(v, bool), "true or false"),
    "gpu_errors_after": (_seconds, "a number of seconds >= 0"),
    "blip_every": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                   "an integer >= 1"),
    "error_lines": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                    "a list of strings"),
    "missing_model": (lambda v: isinstance(v, bool), "true or false"),
    "pull_seconds": (_seconds, "a number of seconds >= 0"),
    "drops_rocm": (lambda v: isinstance(v, str) and v.startswith("gfx"),
                   "a gfx target such as \"gfx906\""),
    "drops_igpu": (lambda v: isinstance(v, bool), "true or false"),
    "no_offload": (lambda v: isinstance(v, bool), "true or false"),
    "load_seconds": (_seconds, "a number of seconds >= 0"),
    "no_runner": (lambda v: isinstance(v, bool), "true or false"),
    "cpu_speed_after": (_seconds, "a number of seconds >= 0"),
    "degenerate": (lambda v: isinstance(v, bool), "true or false"),
    "opencl_unsupported": (lambda v: isinstance(v, bool), "true or false"),
    "generation_errors_after": (_seconds, "a number of seconds >= 0"),
    "embed_nan": (lambda v: isinstance(v, bool), "true or false"),
    "embed_zeros": (lambda v: isinstance(v, bool), "true or false"),
    "embed_constant": (lambda v: isinstance(v, bool), "true or false"),
    "prefill_tokens_per_second": (_positive, "a number > 0"),
    "load_memory_mb": (lambda v: isinstance(v, int) and not isinstance(v, bool)
                       and 0 <= v <= MAX_LOAD_MEMORY_MB,
                       f"an integer of megabytes from 0 to {MAX_LOAD_MEMORY_MB}"),
    "cpu_models": (lambda v: isinstance(v, list) and all(isinstance(s, str) and s.strip()
                                                         for s in v),
                   "a list of model names"),
}
assert set(_CHECKS) == {f.name for f in fields(Faults)}


@dataclass(frozen=True)
class Plan:
    """The whole plan, already validated: library (or ``*``) -> the keys given for it."""

    entries: dict[str, dict[str, Any]]

    def faults_for(self, library: str) -> Faults:
        merged = {**self.entries.get("*", {}), **self.entries.get(library, {})}
        for key in TUPLES:
            if key in merged:
                merged[key] = tuple(merged[key])
        return Faults(**merged)

    def models(self) -> set[str]:
        """Every model name the plan refers to (``cpu_models``), to check against those
        served."""
        return {name for entry in self.entries.values() for name in entry.get("cpu_models", ())}


def load_plan(path: str | None) -> Plan:
    """Read and validate the plan at ``path``; no path is the empty plan (a healthy engine)."""
    if not path:
        return Plan({})
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise PlanError(f"fault plan {path}: cannot read it: {e.strerror or e}") from e
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise PlanError(f"fault plan {path}: not valid JSON: {e}") from e
    return parse_plan(data, source=path)


def parse_plan(data: Any, *, source: str = "fault plan") -> Plan:
    if not isinstance(data, dict):
        raise PlanError(f"{source}: must be a JSON object keyed by library, got {data!r}")
    problems = []
    for library, entry in data.items():
        if library not in (*LIBRARIES, "*"):
            problems.append(f"{source}: unknown library {library!r} "
                            f"(expected one of {', '.join(LIBRARIES)} or '*')")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{source}: {library}: must be an object of faults, got {entry!r}")
            continue
        for key, value in entry.items():
            if key not in _CHECKS:
                problems.append(f"{source}: {library}: unknown fault {key!r} "
                                f"(known: {', '.join(_CHECKS)})")
            elif not _CHECKS[key][0](value):
                problems.append(f"{source}: {library}.{key} = {json.dumps(value)}: "
                                f"must be {_CHECKS[key][1]}")
    if problems:
        raise PlanError("\n".join(problems))
    return Plan({lib: dict(entry) for lib, entry in data.items()})
