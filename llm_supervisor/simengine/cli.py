"""``llm-supervisor-simengine``: arguments, then the engine's life from bind to exit.

Like the real engines, the socket is bound first and HTTP answered only after discovery and
model load (``start_delay``): a client connects, then waits. Exit codes: 0 after SIGTERM or
SIGINT, 1 when it crashes on start (or cannot bind), 2 for a bad plan or arguments and when it
crashes after ``crash_after`` seconds.

Ollama serves every ``--model NAME[=KIND]`` given (the first is the default), each loaded on
its first use by a runner of its own, and behaves as the ``--ollama-version`` given: from 0.30
one upstream llama-server per model (with ``/slots``), before that Ollama's own runner (no
``/slots``); before 0.12.4 a reasoning model does not think unless asked. With
``OLLAMA_MODELS`` set, each model's manifest is written there (one already there is used as
it is). vLLM serves one model, a generating or an embedding (pooling) one.

``rocminfo``, ``vulkaninfo --summary`` and ``clinfo --raw`` instead of ``serve`` print what
those tools print on the simulated host (``SIMENGINE_CARDS``), so a test can install them
under the tools' names.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from llm_supervisor.simengine.api import SimServer
from llm_supervisor.simengine.cards import host_cards
from llm_supervisor.simengine.engine import OLLAMA_VERSION, Engine, parse_version
from llm_supervisor.simengine.listings import LISTINGS
from llm_supervisor.simengine.logs import Log
from llm_supervisor.simengine.models import (
    KINDS,
    Model,
    adopt_manifest,
    parse_model,
    write_manifest,
)
from llm_supervisor.simengine.narrate import Ollama, gpu_error_lines, narrator
from llm_supervisor.simengine.placement import LIBRARIES, choose_library, parse_listen
from llm_supervisor.simengine.plan import Plan, PlanError, load_plan

DEFAULTS = {  # kind -> (model, port)
    "ollama": ("qwen2.5:7b-instruct", 11434),
    "vllm": ("Qwen/Qwen2.5-7B-Instruct", 8000),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="llm-supervisor-simengine",
        description="A simulated Ollama or vLLM engine that follows a fault plan.")
    parser.add_argument("--kind", choices=tuple(DEFAULTS), default="ollama")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="default: $OLLAMA_HOST or 127.0.0.1:11434 (ollama), "
                             "127.0.0.1:8000 (vllm)")
    parser.add_argument("--model", action="append", metavar="NAME[=KIND]",
                        help="a model it serves, again for more (ollama); KIND one of "
                             f"{', '.join(KINDS)} (default completion); the first is the "
                             "default model")
    parser.add_argument("--ollama-version", metavar="X.Y.Z", default=OLLAMA_VERSION,
                        help=f"the Ollama it behaves as (default {OLLAMA_VERSION})")
    parser.add_argument("--library", choices=LIBRARIES,
                        help="force the library (default: chosen from the environment like "
                             "Ollama does; rocm for vllm)")
    parser.add_argument("--faults", metavar="PATH", help="fault plan (default: $SIMENGINE_FAULTS)")
    parser.add_argument("--api-key", help="vllm: require this key on /v1 (default:"
                        " $VLLM_API_KEY)")
    args = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args(args[1:] if args[:1] == ["serve"] else args)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in LISTINGS:
        return listing(words[0], words[1:], os.environ)
    args = parse_args(words)
    env = os.environ
    model, port = DEFAULTS[args.kind]
    try:
        plan = load_plan(args.faults or env.get("SIMENGINE_FAULTS"))
        listen = args.listen or (env.get("OLLAMA_HOST", "") if args.kind == "ollama" else "")
        host, port = parse_listen(listen, port)
        parse_version(args.ollama_version)
        specs = served(args.kind, args.model or [model], plan)
        host_cards(env)  # a bad SIMENGINE_CARDS stops it here, whatever picks the library
        if args.library:
            library, reason = args.library, "--library"
        elif args.kind == "ollama":
            library, reason = choose_library(env)
        else:
            library, reason = "rocm", "vLLM default"
    except (PlanError, ValueError) as e:
        print(f"llm-supervisor-simengine: {e}", file=sys.stderr, flush=True)
        return 2
    slots = parallel(args.kind, env)
    engine = Engine(kind=args.kind, model=specs[0][0], library=library,
                    faults=plan.faults_for(library), log=Log(args.kind), parallel=slots,
                    version=args.ollama_version,
                    models=[Model(name, kind, parallel=slots) for name, kind in specs])
    if args.kind == "vllm":
        engine.api_key = args.api_key or env.get("VLLM_API_KEY") or None
    elif env.get("OLLAMA_MODELS"):
        engine.models_dir = Path(env["OLLAMA_MODELS"])
        manifests(engine)
    return run(engine, host, port, env, reason)


def listing(tool: str, args: Sequence[str], env: Mapping[str, str]) -> int:
    """Print what ``tool`` prints on the simulated host; 2 for arguments it was not meant to
    be run with (only the probes' own are simulated)."""
    wanted, render = LISTINGS[tool]
    try:
        cards = host_cards(env)
    except ValueError as e:
        print(f"llm-supervisor-simengine: {e}", file=sys.stderr, flush=True)
        return 2
    if tuple(args) != wanted:
        print(f"llm-supervisor-simengine: only `{' '.join((tool, *wanted))}` is simulated",
              file=sys.stderr, flush=True)
        return 2
    sys.stdout.write(render(cards))
    return 0


def served(kind: str, values: Sequence[str], plan: Plan) -> list[tuple[str, str]]:
    """The models from ``--model`` (name, kind); ValueError when they do not fit the engine or
    the plan names a model not served."""
    specs = [parse_model(v) for v in values]
    if kind == "vllm" and len(specs) > 1:
        raise ValueError("--model: vllm serves one model")
    if kind == "vllm" and specs[0][1] not in ("completion", "embedding"):
        raise ValueError(f"--model {values[0]!r}: vllm simulates completion and embedding "
                         "models only")
    probe = Engine(kind=kind, model=specs[0][0], library="cpu", faults=plan.faults_for("cpu"),
                   log=Log(kind), models=[Model(name, k) for name, k in specs])
    unknown = sorted(n for n in plan.models() if probe.find(n) is None)
    if unknown:
        raise PlanError(f"fault plan: cpu_models names {', '.join(map(repr, unknown))}, not "
                        "served (--model)")
    return specs


def manifests(engine: Engine) -> None:
    """Each model's manifest in OLLAMA_MODELS: one already there is the model's; a missing
    one is written (for a model on disk) as ``ollama pull`` would."""
    assert engine.models_dir is not None
    for model in engine.models:
        adopt_manifest(engine.models_dir, model)
        if not model.present:
            continue
        try:
            write_manifest(engine.models_dir, model)
        except OSError as e:
            engine.log.slog("WARN", "simengine.py", "cannot write the manifest",
                            model=model.name, error=str(e.strerror or e))


def parallel(kind: str, env: Mapping[str, str]) -> int:
    """Generations at once: Ollama's OLLAMA_NUM_PARALLEL (default 1, its own default); vLLM
    batches (its max_num_seqs default)."""
    if kind != "ollama":
        return 256
    value = env.get("OLLAMA_NUM_PARALLEL", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def run(engine: Engine, host: str, port: int, env: Mapping[str, str], reason: str,
        stop: threading.Event | None = None) -> int:
    """Live until ``stop`` is set (by default: SIGTERM or SIGINT) or a fault ends it."""
    if stop is None:
        stop = _stop_on_signals()
    story, faults = narrator(engine, env, reason), engine.faults
    shown = f"[{host}]" if ":" in host else host
    story.starting(f"http://{shown}:{port}")
    try:
        server = SimServer((host, port), engine)
    except OSError as e:
        reason = str(e.strerror or e)  # Go's syscall errors are lower case
        engine.log.line(f"Error: listen tcp {shown}:{port}: bind: {reason[:1].lower()}{reason[1:]}")
        return 1
    try:
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        story.listening(f"[{bound_host}]:{bound_port}" if ":" in bound_host
                        else f"{bound_host}:{bound_port}")
        if faults.crash_on_start:
            story.crashed(gpu_error_lines(engine), on_start=True)
            return 1
        if faults.start_delay and stop.wait(faults.start_delay):
            story.stopping(getattr(stop, "signame", "stop"))
            return 0
        story.ready()
        if isinstance(story, Ollama) and not faults.no_runner:
            engine.on_load = story.runner
        engine.ready_at = engine.clock()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         name="http", daemon=True).start()
        if stop.wait(faults.crash_after):
            story.stopping(getattr(stop, "signame", "stop"))
            return 0
        story.crashed(gpu_error_lines(engine), on_start=False)
        return 2
    finally:
        engine.stop.set()  # releases hung generations
        if engine.ready_at is not None:
            server.shutdown()
        server.server_close()


class _SignalStop(threading.Event):
    signame = "stop"


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT; the handler only records and sets, nothing more."""
    stop = _SignalStop()

    def handle(signum: int, _frame: object) -> None:
        stop.signame = signal.Signals(signum).name
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
