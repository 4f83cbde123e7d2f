"""The one journal reader's routing, skipping and cursor arithmetic (no journal needed)."""

from __future__ import annotations

from llm_supervisor.systemd.journal import (
    JournalReader,
    Position,
    match_terms,
    matches_entry,
    oldest,
)
from llm_supervisor.systemd.systemctl import Systemd


def cursor(seq: int, realtime: int = 0, seqnum_id: str = "abc") -> str:
    return f"s={seqnum_id};i={seq:x};b=boot;m=1;t={realtime or seq * 1000:x};x=0"


def entry(seq: int, message: str, **fields: str) -> dict[str, object]:
    return {"__CURSOR": cursor(seq), "__REALTIME_TIMESTAMP": str(seq * 1000),
            "MESSAGE": message, **fields}


def test_positions_compare_by_sequence_number_then_time():
    a, b = Position.of(cursor(5)), Position.of(cursor(9))
    assert a is not None and b is not None
    assert b.after(a) and not a.after(b) and not a.after(a)
    other = Position.of(cursor(1, realtime=10**9, seqnum_id="zzz"))
    assert other is not None and other.after(b)  # another seqnum_id: by wall time
    assert Position.of("garbage") is None and Position.of(None) is None
    assert oldest([cursor(9), None, cursor(5), "bad"]) == cursor(5)
    assert oldest([None]) is None


def test_kernel_match_terms_as_journalctl_reads_them():
    groups = match_terms("_TRANSPORT=kernel SYSLOG_IDENTIFIER=a SYSLOG_IDENTIFIER=b + X=1")
    assert groups == [["_TRANSPORT=kernel", "SYSLOG_IDENTIFIER=a", "SYSLOG_IDENTIFIER=b"],
                      ["X=1"]]
    assert matches_entry(groups, {"_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "b"})
    assert not matches_entry(groups, {"_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "c"})
    assert matches_entry(groups, {"X": "1"})


def test_one_command_line_routes_by_unit_and_kernel_and_skips_what_was_given():
    got: list[tuple[str, str]] = []
    reader = JournalReader(Systemd())
    reader.add_unit("llm-a.service", lambda m, c, r, p: got.append(("a", m)))
    reader.add_unit("llm-b.service", lambda m, c, r, p: got.append(("b", m)),
                    cursor=cursor(3))  # b was read up to 3 by an older follower
    reader.set_kernel("_TRANSPORT=kernel", lambda m, c, r, p: got.append(("k", m)))
    assert reader.matches() == ["_SYSTEMD_UNIT=llm-a.service", "+",
                                "_SYSTEMD_UNIT=llm-b.service", "+", "_TRANSPORT=kernel"]
    for item in (entry(1, "a1", _SYSTEMD_UNIT="llm-a.service"),
                 entry(2, "b2", _SYSTEMD_UNIT="llm-b.service"),
                 entry(3, "b3", _SYSTEMD_UNIT="llm-b.service"),
                 entry(4, "k4", _TRANSPORT="kernel"),
                 entry(5, "b5", _SYSTEMD_UNIT="llm-b.service"),
                 entry(6, "x6", _SYSTEMD_UNIT="other.service")):
        reader.deliver(item)
    assert got == [("a", "a1"), ("k", "k4"), ("b", "b5")]
    assert reader.cursor == cursor(6)


def test_a_source_added_while_running_rereads_a_little_without_repeating_the_others():
    got: list[str] = []
    reader = JournalReader(Systemd(), clock=lambda: 1000.0)
    reader.add_unit("llm-a.service", lambda m, c, r, p: got.append(m))
    reader.restarts = 1  # running
    reader.deliver(entry(10, "a10", _SYSTEMD_UNIT="llm-a.service"))
    reader.add_unit("llm-new.service", lambda m, c, r, p: got.append(m))
    assert reader.rewind == 1000.0 - 10  # read again from a little before it was added
    # journalctl restarts from there: a's lines up to 10 come again and are skipped
    for item in (entry(8, "new8", _SYSTEMD_UNIT="llm-new.service"),
                 entry(10, "a10", _SYSTEMD_UNIT="llm-a.service"),
                 entry(11, "a11", _SYSTEMD_UNIT="llm-a.service")):
        reader.deliver(item)
    assert got == ["a10", "new8", "a11"]


def test_journalctl_is_asked_only_for_the_fields_routing_and_the_sinks_read():
    reader = JournalReader(Systemd())
    reader.add_unit("llm-a.service", lambda message, cursor, realtime, pid: None)
    assert reader.fields() == ["MESSAGE", "_PID", "_SYSTEMD_UNIT"]
    reader.set_kernel("_TRANSPORT=kernel + SYSLOG_IDENTIFIER=amdgpu PRIORITY=3",
                      lambda message, cursor, realtime, pid: None)
    assert reader.fields() == ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "_PID",
                               "_SYSTEMD_UNIT", "_TRANSPORT"]
    # what a kernel entry carries with those fields alone still routes to the kernel's sink
    line = entry(1, "amdgpu: ring gfx timeout", _TRANSPORT="kernel")
    assert reader._route(line)[0] != ""


def test_a_sink_hears_which_process_wrote_the_entry():
    reader = JournalReader(Systemd())
    got: list[int | None] = []
    reader.add_unit("llm-a.service", lambda m, c, r, pid: got.append(pid))
    reader.deliver(entry(1, "one", _SYSTEMD_UNIT="llm-a.service", _PID="4242"))
    reader.deliver(entry(2, "two", _SYSTEMD_UNIT="llm-a.service"))
    assert got == [4242, None]
