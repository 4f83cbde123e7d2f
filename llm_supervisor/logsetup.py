"""Logging with structlog, native to the journal under systemd, readable on a terminal.

Under systemd (stdout is the journal's stream, ``JOURNAL_STREAM``) each log call becomes one
journal entry sent over the native protocol (datagrams of ``KEY=value`` fields to
``/run/systemd/journal/socket``, systemd.io/JOURNAL_NATIVE_PROTOCOL): a human-readable
``MESSAGE`` (``engine demoted engine=main tier=vulkan reason=...``), ``PRIORITY`` from the
level, ``SYSLOG_IDENTIFIER=llm-supervisord``, and every structured key as a field of its own
(``ENGINE=main``, ``TIER=vulkan``, ``CAUSE=hang``, ``REASON=...``), so that
``journalctl -u llm-supervisor ENGINE=main`` and ``journalctl -p warning`` work. A stream
cannot carry fields, hence the socket; if it refuses an entry, the same text goes to stdout
with a ``<N>`` priority prefix. On a terminal: structlog's console format; elsewhere JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
from typing import Any

import structlog

# syslog priorities (sd-daemon(3))
PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6,
            "debug": 7}
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "llm-supervisord"
MAX_VALUE = 16 << 10  # bytes of one field: a datagram stays well under the socket's limit
_NEEDS_QUOTES = re.compile(r'[\s"=]')
_RESERVED = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC"}


def field_name(key: str) -> str | None:
    """A structlog key as a journal field name: upper case, ``[A-Z0-9_]``, not starting with
    ``_`` or a digit (those are journald's own), at most 64 characters."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_0123456789")[:64]
    return name or None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def message(event: dict[str, Any]) -> str:
    """``what key=value key="two words"``, then a traceback if there is one."""
    parts = [str(event.get("event", ""))]
    for key, value in event.items():
        if key in ("event", "level", "timestamp", "exception"):
            continue
        text = _text(value)
        quoted = json.dumps(text) if _NEEDS_QUOTES.search(text) or not text else text
        parts.append(f"{key}={quoted}")
    text = " ".join(parts)
    if event.get("exception"):
        text += "\n" + str(event["exception"])
    return text


def encode(fields: dict[str, str]) -> bytes:
    """The native protocol: ``KEY=value\\n``, or ``KEY\\n<le64 size><value>\\n`` for a value
    holding a newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")[:MAX_VALUE]
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalSender:
    """One datagram per entry to journald's native socket; ``send`` says whether it went."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self.sock: socket.socket | None = None

    def send(self, fields: dict[str, str]) -> bool:
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX,
                                          socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.sendto(encode(fields), self.path)
            return True
        except OSError:
            self.close()
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def journal_fields(_: Any, method: str, event: dict[str, Any]
                   ) -> tuple[tuple[str], dict[str, Any]]:
    """The last processor under the journal: (stdout fallback line,), {"fields": ...}."""
    level = str(event.get("level", method))
    priority = PRIORITY.get(level, PRIORITY.get(method, 6))
    text = message(event)
    fields = {"MESSAGE": text, "PRIORITY": str(priority), "SYSLOG_IDENTIFIER": IDENTIFIER}
    for key, value in event.items():
        name = field_name(key)
        if name and name not in _RESERVED and key not in ("event", "timestamp", "level"):
            fields[name] = _text(value)
    fallback = f"<{priority}>" + text.replace("\n", "\n" + f"<{priority}>")
    return (fallback,), {"fields": fields}


class JournalLogger:
    """A structlog logger that sends fields to the journal, else prints the fallback line."""

    def __init__(self, sender: JournalSender, fallback: Any = None) -> None:
        self.sender = sender
        self.fallback = fallback or sys.stdout

    def _log(self, line: str, fields: dict[str, str] | None = None) -> None:
        if fields is None or not self.sender.send(fields):
            print(line, file=self.fallback, flush=True)

    msg = debug = info = warning = warn = error = err = critical = exception = fatal = _log


def under_journal() -> bool:
    """stdout is connected to the journal (systemd sets JOURNAL_STREAM=dev:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def configure(level: str = "info", *, journal_socket: str = JOURNAL_SOCKET
              ) -> JournalSender | None:
    """Set up structlog for where stdout goes; the journal's sender, when there is one."""
    common: list[Any] = [structlog.contextvars.merge_contextvars,
                         structlog.processors.add_log_level,
                         structlog.processors.TimeStamper(fmt="iso", utc=True)]
    factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    sender = None
    if under_journal():
        processors = [*common, structlog.processors.format_exc_info, journal_fields]
        sender = JournalSender(journal_socket)
        factory = lambda *_: JournalLogger(sender)  # noqa: E731
    elif sys.stdout.isatty():
        processors = [*common, structlog.dev.ConsoleRenderer()]
    else:
        processors = [*common, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    return sender
