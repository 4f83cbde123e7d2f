"""Logging with structlog: JSON lines with a ``<N>`` syslog-priority prefix under the journal
(so ``journalctl -p warning`` works), a readable console format on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

# syslog priorities (sd-daemon(3)): journald reads a leading "<N>" on each stdout line
PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def _journal_prefix(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["_priority"] = PRIORITY.get(method, 6)
    return event


def _render_journal(_: Any, __: str, event: dict[str, Any]) -> str:
    priority = event.pop("_priority", 6)
    return f"<{priority}>" + structlog.processors.JSONRenderer()(_, __, event)


def under_journal() -> bool:
    """stdout is connected to the journal (systemd sets JOURNAL_STREAM=dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def configure(level: str = "info") -> None:
    common: list[Any] = [structlog.contextvars.merge_contextvars,
                         structlog.processors.add_log_level,
                         structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if under_journal():
        processors = [*common, _journal_prefix, _render_journal]
    elif sys.stdout.isatty():
        processors = [*common, structlog.dev.ConsoleRenderer()]
    else:
        processors = [*common, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
