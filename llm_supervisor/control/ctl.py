"""``llm-supervisorctl``'s entry point: ``status`` at the interpreter's floor.

``status [ENGINE] [--json] [-o wide]`` asks the daemon for the table (or the indented
document) it keeps rendered (``GET /v1/status?format=text``, drawn for this terminal: its
width, colour unless piped or ``NO_COLOR``) and prints the bytes: no argparse, no json,
no ``re``. The exit code (``errors.Exit``, the CLI's own) comes from the
``X-Unhealthy-Engines`` header. Everything else, and a daemon that does not render (an older
one), goes through ``llm_supervisor.control.cli``.
"""

from __future__ import annotations

import os
import sys

from llm_supervisor.control import client
from llm_supervisor.control.terminal import terminal
from llm_supervisor.errors import Exit, ProtocolError


def fast_status(argv: list[str]) -> int | None:
    """The exit code of a status call, or None to go through ``llm_supervisor.control.cli``."""
    sock = os.environ.get("LLM_SUPERVISOR_SOCKET", client.DEFAULT_SOCKET)
    rest = argv
    if rest[:1] == ["--socket"] and len(rest) >= 2:
        sock, rest = rest[1], rest[2:]
    if rest[:1] != ["status"]:
        return None
    words = [w for w in rest[1:] if w != "--json"]
    wide = words[-2:] == ["-o", "wide"]
    words = words[:-2] if wide else words
    if len(words) > 1 or any(w.startswith("-") or "/" in w or "?" in w for w in words):
        return None
    form = "pretty" if "--json" in rest[1:] else "text"
    target = (f"/v1/engines/{words[0]}" if words else "/v1/status") + f"?format={form}"
    if form == "text":
        width, colour = terminal()
        target += (f"&width={width}" if width else "") + ("&colour=1" if colour else "") + \
            ("&wide=1" if wide else "")
    try:
        response = client.request(sock, "GET", target)
    except client.Unreachable as exc:
        print(f"llm-supervisorctl: llm-supervisord is not reachable: {exc}", file=sys.stderr)
        return Exit.UNREACHABLE
    except ProtocolError:
        return None  # cli says what is wrong
    unhealthy = response.headers.get("x-unhealthy-engines", "")
    wanted = "text/plain" if form == "text" else "application/json"
    if response.status != 200 or not unhealthy.isdigit() or \
            not response.headers.get("content-type", "").startswith(wanted):
        return None  # an error to explain, or a daemon without rendered status
    try:
        sys.stdout.buffer.write(response.body)
        sys.stdout.flush()
    except BrokenPipeError:
        return Exit.ERROR
    return Exit.UNHEALTHY if int(unhealthy) else Exit.OK


def main() -> None:
    code = fast_status(sys.argv[1:])
    if code is None:
        from llm_supervisor.control.cli import main as full
        full()
    sys.exit(code)
