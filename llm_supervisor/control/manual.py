"""llm-supervisorctl(1)'s OPTIONS section, written from the CLI's own parser (every command,
every option, its help): ``dev/manpage.py`` puts it in the page, and a test fails when the
page and the parser drift apart."""

from __future__ import annotations

import argparse
import os

from llm_supervisor.control.cli import parser

BEGIN = '.\\" BEGIN OPTIONS: generated from the CLI\'s parser by dev/manpage.py; do not edit'
END = '.\\" END OPTIONS'


Command = tuple[str, argparse.ArgumentParser]


def _commands(p: argparse.ArgumentParser, prefix: str = "") -> list[Command]:
    found: list[Command] = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix}{name}", sub))
                found += _commands(sub, f"{prefix}{name} ")
    return found


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-").replace("'", "\\(aq")


def roff() -> str:
    saved = os.environ.pop("LLM_SUPERVISOR_SOCKET", None)  # the page shows the defaults
    try:
        top = parser()
    finally:
        if saved is not None:
            os.environ["LLM_SUPERVISOR_SOCKET"] = saved
    lines = [BEGIN, ".SH OPTIONS", "Every command's options, as the command itself takes"
             " them (\\fB\\-\\-help\\fR after any command says the same)."]
    for name, sub in [("", top), *_commands(top)]:
        options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
        if not options:
            continue
        lines.append(f".SS {_escape(name) if name else 'llm' + chr(92) + '-supervisorctl'}")
        for action in options:
            flags = ", ".join(_escape(o) for o in action.option_strings)
            value = f" \\fI{action.metavar or action.dest.upper()}\\fR" if action.nargs != 0 \
                else ""
            lines += [".TP", f"\\fB{flags}\\fR{value}",
                      _escape((action.help or "").replace("%(default)s", str(action.default)))]
    lines.append(END)
    return "\n".join(lines) + "\n"
