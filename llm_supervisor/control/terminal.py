"""The terminal ``llm-supervisorctl`` prints to: how wide, and whether in colour."""

from __future__ import annotations

import os
import sys


def terminal() -> tuple[int | None, bool]:
    """(columns, colour) of standard output: a terminal's width (at least 20) and colour
    unless ``NO_COLOR`` is set (no-color.org); piped: (None, False)."""
    if not sys.stdout.isatty():
        return None, False
    try:
        width: int | None = max(20, min(1000, os.get_terminal_size(sys.stdout.fileno()).columns))
    except OSError:
        width = None
    return width, not os.environ.get("NO_COLOR")
