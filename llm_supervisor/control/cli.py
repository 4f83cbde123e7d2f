"""``llm-supervisorctl``: query and steer the daemon over its control socket.

Exit codes: ``llm_supervisor.errors.Exit`` (docs/contract.md §9), shared with the status fast path
(``control.ctl``). The operator's verbs (restart, pin, …) are ``llm_supervisor.intents.Verb``:
their commands are made from it. Only the standard library is imported at the top; commands
that need more (the config for ``check-config`` and ``render``, the verbs) import it
themselves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from llm_supervisor.control import client
from llm_supervisor.control.render import Look, format_event, format_status, format_tiers
from llm_supervisor.control.terminal import terminal
from llm_supervisor.errors import AdviseError, BundleError, Exit, Failure, ProtocolError
from llm_supervisor.tiers import TIERS

DEFAULT_CONFIG_PATH = "/etc/llm-supervisor/supervisor.toml"
TYPE_CHECKING = False  # typing itself costs milliseconds of import on this path
if TYPE_CHECKING:
    import argparse
    from typing import Any


def _request(args: argparse.Namespace, method: str, target: str, body: object = None,
             timeout: float = 30.0) -> client.Response:
    """One exchange with the daemon; its failures become exit codes."""
    try:
        return client.request(args.socket, method, target, body, timeout=timeout)
    except client.Unreachable as exc:
        raise Failure(f"llm-supervisord is not reachable: {exc}", Exit.UNREACHABLE) from None
    except ProtocolError as exc:
        raise Failure(f"bad answer from llm-supervisord: {exc}") from None


def _call(args: argparse.Namespace, method: str, target: str, body: object = None,
          timeout: float = 30.0) -> object:
    """A JSON exchange: the document, or a Failure carrying the daemon's error and detail."""
    response = _request(args, method, target, body, timeout)
    try:
        document = response.json()
    except ValueError:
        raise Failure(f"bad answer from llm-supervisord: HTTP {response.status},"
                      " body is not JSON") from None
    if response.status >= 400:
        error = document.get("error") if isinstance(document, dict) else None
        detail = document.get("detail") if isinstance(document, dict) else None
        message = error or f"HTTP {response.status}"
        if isinstance(detail, list):
            message += "".join(f"\n  {line}" for line in detail)
        elif detail:
            message += f": {detail}"
        raise Failure(message, Exit.ERROR)
    return document


# --------------------------------------------------------------------------- formatting

# --------------------------------------------------------------------------- commands

def cmd_status(args: argparse.Namespace) -> int:
    target = f"/v1/engines/{args.engine}" if args.engine else "/v1/status"
    document = _call(args, "GET", target)
    assert isinstance(document, dict)
    engines = [document] if args.engine else document.get("engines", [])
    width, colour = terminal()
    look = Look(width, colour, args.output == "wide")
    if args.json:
        print(json.dumps(document, indent=2))
    elif args.engine:
        print(format_status({"engines": engines}, look))
    else:
        print(format_status(document, look))
    return Exit.OK if all(e.get("state") == "healthy" for e in engines) else Exit.UNHEALTHY


def cmd_tiers(args: argparse.Namespace) -> int:
    document = _call(args, "GET", "/v1/tiers")
    assert isinstance(document, dict)
    print(json.dumps(document, indent=2) if args.json else format_tiers(document))
    return Exit.OK


def cmd_action(args: argparse.Namespace) -> int:
    """An operator's verb, asked the way ``intents.Verb.route`` says the API takes it."""
    from llm_supervisor.intents import Verb

    verb = Verb(args.command)
    method, part = verb.route
    body = {"tier": args.tier} if verb.takes_tier else None
    document = _call(args, method, f"/v1/engines/{args.engine}/{part}", body)
    assert isinstance(document, dict)
    print(f"{args.engine}: {document.get('result', 'done')}")
    return Exit.OK


def cmd_reload(args: argparse.Namespace) -> int:
    """Waits for the outcome: `systemctl reload` (ExecReload) fails on a bad config."""
    if args.json:  # the daemon's answer as it is: applied (its diff) or rejected (why)
        response = _request(args, "POST", "/v1/reload", timeout=300)
        print(response.body.decode(errors="replace").strip())
        return Exit.OK if response.status < 400 else Exit.ERROR
    document = _call(args, "POST", "/v1/reload", timeout=300)
    assert isinstance(document, dict)
    changes = {k: v for k, v in document.get("diff", {}).items() if v}
    print("reloaded: " + ("; ".join(f"{k} {', '.join(v)}" for k, v in changes.items())
                          or "no change"))
    return Exit.OK


def cmd_events(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    from llm_supervisor.timefmt import utc

    # the type and --until are kept here: with either, the daemon is asked for every event
    # since --since, and the last N of those that match are shown
    filtering = bool(args.type or args.until is not None)
    query = {"limit": 0 if filtering and not args.follow else args.n, "engine": args.engine,
             "since": utc(args.since) if args.since is not None else None,
             "follow": 1 if args.follow else None}
    target = "/v1/events?" + urlencode({k: v for k, v in query.items() if v is not None})
    until = utc(args.until) if args.until is not None else None
    types = {t for group in args.type or [] for t in group}

    def wanted(event: dict[str, Any]) -> bool:
        return (not types or event.get("type") in types) and \
            (until is None or str(event.get("ts", "")) <= until)

    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event) if args.json else format_event(event, utc=args.utc),
              flush=True)

    try:
        events = client.stream_lines(args.socket, target)
        if filtering and not args.follow:
            kept = [e for e in events if wanted(e)]
            for event in kept[-args.n:] if args.n else kept:
                show(event)
        else:
            for event in events:
                if wanted(event):
                    show(event)
    except client.Unreachable as exc:
        raise Failure(f"llm-supervisord is not reachable: {exc}", Exit.UNREACHABLE) from None
    except ProtocolError as exc:
        raise Failure(f"bad answer from llm-supervisord: {exc}") from None
    except KeyboardInterrupt:
        pass
    return Exit.OK


def _count(text: str) -> int:
    """``-n``: a count of events, 0 for all."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of events (0 for all)")
    return int(text)


def _when(text: str) -> float:
    """``--since``/``--until``: a time as journalctl takes it (``timefmt.when``)."""
    import time

    from llm_supervisor.timefmt import when
    try:
        return when(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _types(text: str) -> list[str]:
    """``--type``: event types, comma-separated (``state,tier``)."""
    import re

    types = [t for t in text.split(",") if t]
    if not types or not all(re.fullmatch(r"[a-z_]{1,32}", t) for t in types):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of event types"
                                         " (e.g. state,tier,reload)")
    return types


def cmd_bundle(args: argparse.Namespace) -> int:
    print("collecting a support bundle (config, units, state, events, journals)...",
          file=sys.stderr, flush=True)
    try:
        response = client.request(args.socket, "GET", "/v1/bundle", timeout=120)
    except (client.Unreachable, ProtocolError) as exc:
        body, default = _offline_bundle(str(exc), args.config)
    else:
        if response.status != 200:
            raise Failure(f"bundle failed: HTTP {response.status}: {response.body[:500]!r}")
        disposition = response.headers.get("content-disposition", "")
        body = response.body
        default = disposition.split('filename="', 1)[-1].rstrip('"') or \
            "llm-supervisor-bundle.tar.zst"
    path = args.output or default
    if path == "-":
        sys.stdout.buffer.write(body)
    else:
        with open(path, "wb") as fh:
            fh.write(body)
        print(f"wrote {path} ({len(body) / 1024:.0f} KiB)", file=sys.stderr)
    return Exit.OK


def _offline_bundle(why: str, config: str) -> tuple[bytes, str]:
    """The daemon is down: the bundle read from where it keeps things (as root)."""
    from pathlib import Path

    from llm_supervisor.records import support
    from llm_supervisor.timefmt import compact
    from llm_supervisor.tools import bundle

    if not bundle.root():
        raise Failure(f"llm-supervisord is not reachable ({why}); a bundle without it reads"
                      " its state and journals: run as root", Exit.UNREACHABLE)
    print(f"llm-supervisord is not reachable ({why}): reading its files instead",
          file=sys.stderr, flush=True)
    return support.build(bundle.files(why, Path(config))), \
        f"llm-supervisor-bundle-{compact()}.tar.zst"


def cmd_endpoint(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    target = "/v1/endpoint" + (f"?model={quote(args.model)}" if args.model else "")
    document = _call(args, "GET", target)
    assert isinstance(document, dict)
    print(json.dumps(document, indent=2) if args.json else document["url"])
    return Exit.OK


def _load_config(path: str) -> Any:
    """The validated config, or None after printing each problem (file: key: message)."""
    from llm_supervisor.config import load
    from llm_supervisor.errors import ConfigError

    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.json:
        return _check_config_json(args.path)
    config = _load_config(args.path)
    if config is None:
        return Exit.ERROR
    names = ", ".join(e.name for e in config.engines) or "none"
    print(f"{args.path}: ok ({len(config.files)} file(s); engines: {names})")
    return Exit.OK


def _check_config_json(path: str) -> int:
    """``check-config --json``: ``{"path", "ok", "files", "engines"}`` or ``{"path", "ok":
    false, "problems"}``; exit 0 or 1 as without it."""
    from llm_supervisor.config import load
    from llm_supervisor.errors import ConfigError

    try:
        config = load(path)
    except ConfigError as exc:
        print(json.dumps({"path": path, "ok": False, "problems": list(exc.problems)}, indent=2))
        return Exit.ERROR
    print(json.dumps({"path": path, "ok": True, "files": [str(f) for f in config.files],
                      "engines": [e.name for e in config.engines]}, indent=2))
    return Exit.OK


async def probe_cards(config: Any) -> Any:
    """The host's cards, as the daemon's probes find them (``HostView.reprobe``)."""
    from llm_supervisor.host import cards
    from llm_supervisor.host.probes import probe_all

    sup = config.supervisor
    return cards.of_host(await probe_all(timeout=sup.probe_timeout, kfd=str(sup.kfd_path)))


def cmd_render(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from llm_supervisor.host.tiers import kind_supports
    from llm_supervisor.records.memory import load_state
    from llm_supervisor.systemd.units import HostFacts, render

    config = _load_config(args.config)
    if config is None:
        return Exit.ERROR
    engines = config.engines
    if args.engine:
        engines = tuple(e for e in engines if e.name == args.engine)
        if not engines:
            raise Failure(f"no engine named {args.engine!r} in {args.config}")
    state = load_state(config.supervisor.state_dir / "state.json", missing_ok=True,
                       move_aside=False)
    host = HostFacts.read()
    if any(engine.gpus for engine in engines):  # which number each tier gives its cards
        host = dataclasses.replace(host, cards=asyncio.run(probe_cards(config)))
    for engine in engines:
        tier = args.tier or state.tier_of(engine.name) or next(
            (t for t in config.chain_for(engine)
             if kind_supports(engine, t)[0] and config.availability(t) != "never"),
            config.chain_for(engine)[-1])
        units = render(config, engine, tier, host)
        for name, text in units.files().items():
            print(f"# ---- {config.supervisor.unit_dir / name} (tier {tier})")
            print(text)
    return Exit.OK


def cmd_advise(args: argparse.Namespace) -> int:
    from llm_supervisor.tools import advise

    try:
        advice = advise.command(args)
    except (AdviseError, ValueError) as exc:
        raise Failure(str(exc)) from None
    print(json.dumps(advice.document(), indent=2) if args.json else advise.format_advice(advice))
    return Exit.OK


def cmd_models(args: argparse.Namespace) -> int:
    from llm_supervisor.tools.models import cli as models

    try:
        return models.command(args)
    except BundleError as exc:
        raise Failure(str(exc)) from None


def cmd_doctor(args: argparse.Namespace) -> int:
    """Host and config readiness; reads the config itself, needs no daemon."""
    import asyncio

    from llm_supervisor.tools import doctor

    checks = doctor.diagnose(asyncio.run(doctor.gather(args.config)))
    report = doctor.document(checks)
    print(json.dumps(report, indent=2) if args.json else doctor.format_checks(checks))
    return Exit.OK if report["ok"] else Exit.ERROR


def cmd_adopt(args: argparse.Namespace) -> int:
    from llm_supervisor.tools import adopt

    return adopt.main(args)


def _params(text: str) -> str:
    """``advise --params``: a parameter count (``7.6B``), checked here like every argument."""
    from llm_supervisor.tools.advise import parse_count
    try:
        parse_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def positive(kind: type[int] | type[float], *, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number above 0 (or 0 itself with ``zero``), else a clear
    error naming the value (never NaN, infinity, 1e309 or a negative size)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"{text!r}: must be a finite number {'>= 0' if zero else 'above 0'}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


def _parser_class() -> type[argparse.ArgumentParser]:
    import argparse

    class Parser(argparse.ArgumentParser):
        """A bad argument is one line naming it, and exit status 2 (usage)."""

        def error(self, message: str) -> NoReturn:
            print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
            sys.exit(Exit.USAGE)

    return Parser


def parser() -> argparse.ArgumentParser:

    from llm_supervisor.intents import Verb

    Parser = _parser_class()
    p = Parser(prog="llm-supervisorctl", description="Query and steer llm-supervisord.")
    p.add_argument("--socket", default=os.environ.get("LLM_SUPERVISOR_SOCKET",
                                                      client.DEFAULT_SOCKET),
                   help="control socket (default %(default)s)")
    p.add_argument("--version", action="store_true",
                   help="this client's version and the running daemon's")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("status", help="engines, their state and tier")
    s.add_argument("engine", nargs="?")
    s.add_argument("--json", action="store_true", help="print the API document")
    s.add_argument("-o", "--output", choices=["wide"],
                   help="wide: every column (backend, usable tiers), nothing cut")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("tiers", help="host probe results, and tiers each engine skips")
    s.add_argument("--json", action="store_true", help="print the API document")
    s.set_defaults(func=cmd_tiers)

    s = sub.add_parser("events", help="the history: state changes, tier switches, reloads")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    s.add_argument("-n", "--lines", dest="n", type=_count, default=50,
                   help="the last N events, 0 for all (default %(default)s)")
    s.add_argument("-e", "--pager-end", action="store_true",
                   help="the end of the history (what is shown anyway: the last N)")
    s.add_argument("--engine", help="only this engine's events")
    s.add_argument("-S", "--since", type=_when,
                   help="from this time: '-1h', '2 hours ago', 'today', 'yesterday',"
                   " '2026-12-07 08:00' (local), ISO-8601")
    s.add_argument("-U", "--until", type=_when, help="up to this time (the same forms)")
    s.add_argument("-t", "--type", action="append", type=_types,
                   help="only these event types, comma-separated (state,tier,reload,...)")
    s.add_argument("--utc", action="store_true", help="times in UTC (default: local time)")
    s.add_argument("--json", action="store_true", help="one JSON document per line")
    s.set_defaults(func=cmd_events)

    s = sub.add_parser("bundle", help="write a .tar.zst support bundle (the daemon down: as"
                       " root, from its files)")
    s.add_argument("-o", "--output", help="file to write (- for stdout)")
    s.add_argument("--config", default=str(DEFAULT_CONFIG_PATH),
                   help="the config to read when the daemon is down (default %(default)s)")
    s.set_defaults(func=cmd_bundle)

    s = sub.add_parser("reload", help="reload the config; fails (exit 1) if it is rejected")
    s.add_argument("--json", action="store_true", help="print the daemon's answer")
    s.set_defaults(func=cmd_reload)

    for verb in Verb:  # the operator's verbs: one command each
        s = sub.add_parser(verb.value, help=verb.help)
        s.add_argument("engine")
        if verb.takes_tier:
            s.add_argument("tier", choices=TIERS)
        s.set_defaults(func=cmd_action)

    s = sub.add_parser("endpoint", help="URL of a healthy engine (local first) for clients")
    s.add_argument("--model", help="a healthy engine serving this model")
    s.add_argument("--json", action="store_true", help="the URL and the engine as JSON")
    s.set_defaults(func=cmd_endpoint)

    s = sub.add_parser("check-config", help="validate a config and exit 0 (valid) or 1")
    s.add_argument("path", nargs="?", default="/etc/llm-supervisor/supervisor.toml")
    s.add_argument("--json", action="store_true", help="the outcome as a JSON document")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("render", help="print the units that would be written; write nothing")
    s.add_argument("engine", nargs="?")
    s.add_argument("--config", default="/etc/llm-supervisor/supervisor.toml",
                   help="the config to read (default %(default)s)")
    s.add_argument("--tier", choices=TIERS,
                   help="render for this tier (default: the engine's current tier)")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("advise", help="which quantisation of a model fits the GPU's memory")
    s.add_argument("engine", nargs="?", help="an ollama engine to ask about its model")
    s.add_argument("--model", help="the model (default: the engine's)")
    s.add_argument("--vram", type=positive(float), metavar="GIB",
                   help="GPU memory (default: detected)")
    s.add_argument("--bandwidth", type=positive(float), metavar="GB/S",
                   help="GPU memory bandwidth")
    s.add_argument("--params", type=_params,
                   help="parameter count (7.6B): no engine is asked")
    s.add_argument("--layers", type=positive(int), help="the model's layers (with --params)")
    s.add_argument("--kv-heads", type=positive(int), help="its KV heads (with --params)")
    s.add_argument("--head-size", type=positive(int), help="its head size (with --params)")
    s.add_argument("--context", type=positive(int),
                   help="context length (default: the engine's, 4096)")
    s.add_argument("--parallel", type=positive(int),
                   help="parallel sequences (default: the engine's)")
    s.add_argument("--overhead", type=positive(float, zero=True), default=1.0, metavar="GIB",
                   help="runtime and compute buffers (default %(default)s)")
    s.add_argument("--config", default="/etc/llm-supervisor/supervisor.toml",
                   help="the config to read (default %(default)s)")
    s.add_argument("--json", action="store_true", help="the advice as JSON")
    s.set_defaults(func=cmd_advise)

    s = sub.add_parser("models", help="offline model bundles: export and import")
    verbs = s.add_subparsers(dest="verb", metavar="VERB", required=True)
    v = verbs.add_parser("export", help="pack an Ollama model into one .tar.zst")
    v.add_argument("model")
    v.add_argument("-o", "--output", help="file to write (default: MODEL-TAG.ollama.tar.zst)")
    v.add_argument("--engine", help="the engine whose models directory to read")
    v.add_argument("--models-dir", help="read this models directory instead")
    v.add_argument("--config", default="/etc/llm-supervisor/supervisor.toml",
                   help="the config to read (default %(default)s)")
    v = verbs.add_parser("import", help="verify a bundle, then install it for an engine")
    v.add_argument("file")
    v.add_argument("--engine", help="the engine whose models directory to fill")
    v.add_argument("--models-dir", help="fill this models directory instead (owner: --owner)")
    v.add_argument("--owner", help="USER[:GROUP] owning what lands (default: the engine's)")
    v.add_argument("--config", default="/etc/llm-supervisor/supervisor.toml",
                   help="the config to read (default %(default)s)")
    for v in verbs.choices.values():
        v.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
        v.add_argument("--json", action="store_true",
                       help="the outcome as one JSON document on stdout")
    s.set_defaults(func=cmd_models)


    s = sub.add_parser("doctor", help="is this host ready for its config? (needs no daemon)")
    s.add_argument("--config", default="/etc/llm-supervisor/supervisor.toml",
                   help="the config to read (default %(default)s)")
    s.add_argument("--json", action="store_true", help="the checks as JSON")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("adopt", help="take over an existing Ollama unit (e.g. ollama.service)")
    s.add_argument("unit")
    s.add_argument("--name", help="engine name (default: from the unit's name)")
    s.add_argument("--dry-run", action="store_true",
                   help="print what it would do; change nothing")
    s.add_argument("--config", default="/etc/llm-supervisor/supervisor.toml",
                   help="the config to read (default %(default)s)")
    s.set_defaults(func=cmd_adopt)
    return p


class _Args:
    """What argparse would give for ``status``, built without importing argparse."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def _status_args(argv: list[str]) -> _Args | None:
    """The fast path for the commonest call: ``[--socket S] status [ENGINE] [--json]``.

    argparse costs ~12 ms of imports, half of what the whole status call may take; any
    other command line (or anything unusual here) goes through argparse.
    """
    sock = os.environ.get("LLM_SUPERVISOR_SOCKET", client.DEFAULT_SOCKET)
    rest = list(argv)
    if rest[:1] == ["--socket"] and len(rest) >= 2:
        sock, rest = rest[1], rest[2:]
    elif rest[:1] and rest[0].startswith("--socket="):
        sock, rest = rest[0].split("=", 1)[1], rest[1:]
    if rest[:1] != ["status"]:
        return None
    words = rest[1:]
    as_json = "--json" in words
    words = [w for w in words if w != "--json"]
    if len(words) > 1 or any(w.startswith("-") for w in words):
        return None
    return _Args(socket=sock, engine=words[0] if words else None, json=as_json,
                 func=cmd_status)


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"] or argv[2:3] == ["--version"] and argv[0] == "--socket":
        return versions(argv[1] if argv[0] == "--socket" else None)
    argv = _times_joined(argv)
    args: Any = _status_args(argv)
    if args is None:
        try:
            args = parser().parse_args(argv)
        except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
            return int(exc.code or Exit.OK)
    try:
        return int(args.func(args))
    except Failure as exc:
        print(f"llm-supervisorctl: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:  # `events | head -1`: the reader had enough
        _stdout_gone()
        return Exit.OK


TIME_OPTIONS = ("-S", "--since", "-U", "--until")


def _times_joined(argv: list[str]) -> list[str]:
    """``--since -1h`` as journalctl takes it: argparse would read ``-1h`` as an option, so a
    time option and its value become one word (``--since=-1h``)."""
    out: list[str] = []
    for word in argv:
        if out and out[-1] in TIME_OPTIONS and word.startswith("-"):
            out[-1] = f"{out[-1]}={word}" if out[-1].startswith("--") else out[-1] + word
        else:
            out.append(word)
    return out


def versions(sock: str | None) -> int:
    """``--version``: this client's, and the running daemon's as its status says."""
    from llm_supervisor import __version__

    print(f"llm-supervisorctl {__version__}")
    socket = sock or os.environ.get("LLM_SUPERVISOR_SOCKET", client.DEFAULT_SOCKET)
    import argparse

    try:
        document = _call(argparse.Namespace(socket=socket), "GET", "/v1/status")
    except Failure as exc:
        print(exc)  # "llm-supervisord is not reachable: …"
        return Exit.OK
    daemon = document.get("supervisor", {}).get("version") if isinstance(document, dict) \
        else None
    print(f"llm-supervisord {daemon or 'unknown'}")
    return Exit.OK


def _stdout_gone() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main() -> None:
    code = cli()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()
    sys.exit(code)


if __name__ == "__main__":
    main()
