"""The systemd adapter's parsers (the adapter itself runs under a real systemd in tests/system)."""

from __future__ import annotations

from llm_supervisor.systemd.systemctl import (
    UnitStatus,
    journal_message,
    parse_environment,
    parse_show,
)


def test_parse_environment_undoes_systemctl_show_quoting():
    # as systemd 252 prints it: words with specials double-quoted, "\$` escaped inside
    shown = r'A=1 "B=two words" "QUOTED=50% \"x\" \\y \$HOME" C= D=-1'
    assert parse_environment(shown) == {
        "A": "1", "B": "two words", "QUOTED": '50% "x" \\y $HOME', "C": "", "D": "-1"}
    assert parse_environment("") == {}


def test_parse_show_and_unit_status():
    props = parse_show("ActiveState=active\nSubState=running\nNRestarts=2\nExecMainStatus=0\n"
                       "MainPID=812\nResult=success\nEnvironment=A=b=c\n")
    status = UnitStatus.from_properties("llm-main.service", props)
    assert status.running and status.n_restarts == 2 and status.main_pid == 812
    assert props["Environment"] == "A=b=c"
    crashed = UnitStatus.from_properties("x", {"ActiveState": "activating",
                                               "SubState": "auto-restart", "NRestarts": "x"})
    assert not crashed.running and crashed.n_restarts == 0 and crashed.job == 0
    queued = UnitStatus.from_properties("x", parse_show("ActiveState=inactive\nJob=134\n"))
    assert queued.job == 134 and not queued.running
    assert UnitStatus.from_properties("x", parse_show("Job=\n")).job == 0


def test_journal_message_decodes_byte_arrays():
    assert journal_message({"MESSAGE": "plain"}) == "plain"
    assert journal_message({"MESSAGE": [104, 105, 0xff]}) == "hi\ufffd"
