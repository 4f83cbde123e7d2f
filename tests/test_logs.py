"""Journal-native logs: each entry's structured keys as journal fields, a readable MESSAGE,
PRIORITY from the level; the stdout fallback when the journal's socket refuses."""

from __future__ import annotations

import io
import socket
import struct
from pathlib import Path

import pytest
import structlog

from llm_supervisor import logsetup as logs


def decode(datagram: bytes) -> dict[str, str]:
    """journald's side of the native protocol."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        head, sep, tail = rest.partition(b"\n")
        if b"=" in head:
            key, _, value = head.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = tail
        else:
            (size,) = struct.unpack("<Q", tail[:8])
            fields[head.decode()] = tail[8:8 + size].decode()
            assert tail[8 + size:9 + size] == b"\n"
            rest = tail[9 + size:]
    return fields


@pytest.fixture
def journal(tmp_path: Path, monkeypatch):
    path = tmp_path / "journal.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    monkeypatch.setattr(logs, "under_journal", lambda: True)
    sender = logs.configure(journal_socket=str(path))
    assert sender is not None
    try:
        yield server
    finally:
        sender.close()
        server.close()
        structlog.reset_defaults()


def test_structured_keys_become_journal_fields(journal: socket.socket) -> None:
    log = structlog.get_logger("test")
    log.warning("engine demoted", engine="main", tier="vulkan", cause="hang",
                reason='canary timed out 3 times\nsecond line', evidence={"ms": 30000})
    fields = decode(journal.recv(1 << 16))
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_IDENTIFIER"] == "llm-supervisord"
    assert fields["ENGINE"] == "main" and fields["TIER"] == "vulkan" and fields["CAUSE"] == "hang"
    assert fields["REASON"] == "canary timed out 3 times\nsecond line"
    assert fields["EVIDENCE"] == '{"ms": 30000}'
    assert fields["MESSAGE"].startswith("engine demoted engine=main tier=vulkan cause=hang ")
    assert not fields["MESSAGE"].startswith("{")
    log.info("ready", engines=["main"])
    assert decode(journal.recv(1 << 16))["PRIORITY"] == "6"


def test_tracebacks_stay_in_the_message(journal: socket.socket) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("test").exception("check cycle failed", engine="main")
    fields = decode(journal.recv(1 << 16))
    assert fields["PRIORITY"] == "3" and "RuntimeError: boom" in fields["MESSAGE"]
    assert "Traceback" in fields["MESSAGE"]


def test_field_names_and_the_stdout_fallback() -> None:
    assert logs.field_name("engine") == "ENGINE"
    assert logs.field_name("_private-key.x") == "PRIVATE_KEY_X"
    assert logs.field_name("9") is None
    out = io.StringIO()
    logger = logs.JournalLogger(logs.JournalSender("/nonexistent/socket"), out)
    line, kw = logs.journal_fields(None, "error", {"event": "cannot write state",
                                                   "path": "/var/lib/x y", "level": "error"})
    logger.error(*line, **kw)
    assert logger.sender.sock is None
    assert out.getvalue() == '<3>cannot write state path="/var/lib/x y"\n'
