"""``llm-supervisorctl models export|import``: the command around ``export`` and ``install``.

Its lines say what is on disk: an import that failed leaves the models directory as it was
(and says so), one that went in says which version it replaced and what it repaired, and
trouble after the manifest went in (a signal during the last fsync, a closed stdout) is said
with the model installed. Ctrl-C, SIGTERM and SIGHUP (a dropped ssh session) stop it with the
exit code 128 + the signal's number; a closed stdout is SIGPIPE's 141.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from llm_supervisor import names
from llm_supervisor.errors import BundleError, Exit, Failure
from llm_supervisor.timefmt import span
from llm_supervisor.tools.models import export, install
from llm_supervisor.tools.models.beneath import Owner
from llm_supervisor.tools.models.format import Progress, default_output, quiet, size_text
from llm_supervisor.tools.models.install import NotImported
from llm_supervisor.tools.models.signals import Interrupted, Signals

NUMBER_RE = re.compile(r"[0-9]+")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown
SIGPIPE_EXIT = Exit.SIGNALLED + signal.SIGPIPE


def progress_printer(verb: str, what: str, stream: IO[str] | None = None,
                     clock: Any = time.monotonic) -> Progress:
    """``exporting qwen2.5:7b: 1.2 GiB of 4.4 GiB (27%), 310 MiB/s, 11s left`` on one
    rewritten line of stderr (a terminal) at most twice a second; a pipe or a journal gets
    a line every 10 %. A total of 0 is unknown (a pipe): bytes and rate only. Shares are
    rounded down, so 100 % is said once: the final line, ``… 4.4 GiB in 14s (318 MiB/s)``.
    A closed stderr silences it, never the command."""
    out = stream or sys.stderr
    live = out.isatty()
    began = clock()
    last = [float("-inf"), -1.0]

    def report(done: int, total: int, label: str) -> None:
        now = clock()
        share = done / total if total else 0.0
        finished = bool(total) and done >= total
        if not finished and ((live and now - last[0] < 0.5) or (not live and (
                share - last[1] < 0.1 if total else now - last[0] < 10))):
            return
        last[0], last[1] = now, share
        elapsed = max(now - began, 1e-6)
        rate = done / elapsed
        if finished:
            line = f"{verb} {what}: {size_text(done)} in {span(elapsed)}" \
                f" ({size_text(int(rate))}/s)"
        else:
            line, left = f"{verb} {what}: {size_text(done)}", ""
            if total:
                line += f" of {size_text(total)} ({int(share * 100)}%)"
                left = f", {span((total - done) / rate)} left" if rate > 0 else ""
            line += f", {size_text(int(rate))}/s{left}"
        start, end = ("\r", "\n" if finished else "\x1b[K") if live else ("", "\n")
        with contextlib.suppress(OSError, ValueError):
            out.write(f"{start}{line}{end}")
            out.flush()

    return report


def engine_models_dir(engine: Any) -> Path:
    """Where the engine's Ollama reads models (``llm_supervisor.names.models_dir``: OLLAMA_MODELS,
    else its user's ~/.ollama/models)."""
    return Path(names.models_dir(engine.environment, names.user_home(engine.user)))


def tree_owner(models_dir: Path) -> Owner:
    """The owner of the models directory, or of its nearest existing parent."""
    probe = models_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = probe.stat()
    return Owner(st.st_uid, st.st_gid)


def resolve_owner(spec: str) -> Owner:
    """``user[:group]`` (names or decimal numbers) -> uid and gid; the user's group by
    default."""
    import grp
    import pwd

    user, _, group = spec.partition(":")
    for part in (user, group):
        if NUMBER_RE.fullmatch(part) and int(part) > MAX_ID:
            raise BundleError(f"{part}: not a user or group id (at most {MAX_ID})")
    try:
        entry = pwd.getpwuid(int(user)) if NUMBER_RE.fullmatch(user) else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    except (KeyError, ValueError):
        if not NUMBER_RE.fullmatch(user):
            raise BundleError(f"no user {user!r} on this host (create it first)") from None
        uid, gid = int(user), int(user)
    if group:
        try:
            gid = int(group) if NUMBER_RE.fullmatch(group) else grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            raise BundleError(f"no group {group!r} on this host") from None
    return Owner(uid, gid)


def _engine(args: Any) -> Any:
    from llm_supervisor.config import load
    from llm_supervisor.errors import ConfigError

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise BundleError("; ".join(exc.problems)) from None
    if args.engine:
        engine = next((e for e in config.engines if e.name == args.engine), None)
        if engine is None:
            raise BundleError(f"no engine named {args.engine!r} in {args.config}")
    else:
        engine = next((e for e in config.engines if e.kind == "ollama"), None)
        if engine is None:
            raise BundleError(f"no ollama engine in {args.config}: pass --models-dir")
    if engine.kind != "ollama":
        raise BundleError(f"{engine.name} is a {engine.kind} engine: bundles are Ollama models")
    return engine


def cause(exc: BaseException) -> str:
    """One line for why a command stopped."""
    if isinstance(exc, Interrupted):
        return f"interrupted by {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by Ctrl-C"
    if isinstance(exc, BrokenPipeError):
        return "stdout was closed"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, Interrupted):
        return Exit.SIGNALLED + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return Exit.SIGNALLED + signal.SIGINT
    if isinstance(exc, BrokenPipeError):
        return SIGPIPE_EXIT
    return Exit.ERROR


def command(args: Any) -> int:
    """``llm-supervisorctl models export|import``; failures raise ``Failure`` (a line and
    an exit code)."""
    signals = Signals()
    with signals.caught():
        try:
            engine = None if args.models_dir else _engine(args)
            models_dir = Path(args.models_dir) if args.models_dir else engine_models_dir(engine)
            what = args.model if args.verb == "export" else Path(args.file).name
            progress: Progress = quiet if args.quiet else progress_printer(
                f"{args.verb}ing", what)
            if args.verb == "export":
                return _export(args, models_dir, progress, signals)
            return _import(args, engine, models_dir, progress, signals)
        except (Interrupted, KeyboardInterrupt) as exc:  # before anything was begun
            raise Failure(f"{cause(exc)}: nothing was {args.verb}ed", exit_code(exc)) from None
        except BundleError as exc:
            raise Failure(str(exc)) from None


def _export(args: Any, models_dir: Path, progress: Progress, signals: Signals) -> int:
    if args.output == "-":
        if sys.stdout.isatty():
            raise BundleError("stdout is a terminal: redirect it (-o - > FILE, or | ssh …)")
        try:
            export.export_stream(models_dir, args.model, sys.stdout.buffer, progress)
            sys.stdout.buffer.flush()
        except (Interrupted, KeyboardInterrupt, BrokenPipeError) as exc:
            raise Failure(f"{cause(exc)}: the bundle written to stdout is incomplete",
                          exit_code(exc)) from None
        return Exit.OK
    output = args.output or default_output(args.model)
    try:
        path, document = export.export_file(models_dir, args.model, output, progress, signals)
    except (Interrupted, KeyboardInterrupt) as exc:
        raise Failure(f"{cause(exc)}: nothing was written", exit_code(exc)) from None
    size = Path(path).stat().st_size
    if args.json:
        _say(json.dumps({"exported": args.model, "file": str(path), "bytes": size,
                         "files": document["files"]}, indent=2), f"{path} is written")
        return Exit.OK
    _say(f"wrote {path}: {args.model}, {len(document['files'])} files, {size_text(size)}",
         f"{path} is written")
    return Exit.OK


def _import(args: Any, engine: Any, models_dir: Path, progress: Progress,
            signals: Signals) -> int:
    if args.owner is not None:
        owner = resolve_owner(args.owner)
    elif engine is not None:
        owner = resolve_owner(f"{engine.user}:{engine.group}")
    else:  # --models-dir: whoever owns that tree (never silently root)
        owner = tree_owner(models_dir)
    try:
        imported = install.import_file(args.file, models_dir, owner, progress, signals)
    except NotImported as failed:
        raise Failure(f"{cause(failed.cause)}: nothing was imported, {failed.state}",
                      exit_code(failed.cause)) from None
    lines = [f"imported {imported.name} into {imported.models_dir}"
             f" (owner {owner.uid}:{owner.gid})"]
    if imported.replaced:
        lines.append(f"it replaced another version of {imported.name}"
                     f" (manifest sha256:{imported.replaced[:12]}…); blobs only that version"
                     " used are left for Ollama to remove when it starts")
    if imported.repaired:
        lines.append(f"{len(imported.repaired)} blob(s) already there were corrupt or not"
                     f" owned and moded as Ollama reads them, and were replaced by the verified"
                     f" copy: {', '.join(b[:19] for b in imported.repaired)}")
    installed = f"{imported.name} is installed in {imported.models_dir}"
    if imported.trouble is not None:
        raise Failure(f"{installed}, but then: {cause(imported.trouble)}",
                      exit_code(imported.trouble))
    if args.json:
        lines = [json.dumps({"imported": imported.name, "models_dir": str(imported.models_dir),
                             "owner": f"{owner.uid}:{owner.gid}",
                             "replaced": imported.replaced, "repaired": imported.repaired},
                            indent=2)]
    _say("\n".join(lines), installed)
    return Exit.OK


def _say(text: str, done: str) -> None:
    """The result on stdout; a closed stdout is said on stderr with what is done."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise Failure(f"{done}, but stdout was closed before it could say so",
                      SIGPIPE_EXIT) from None


