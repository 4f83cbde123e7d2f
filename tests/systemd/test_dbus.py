"""The D-Bus adapter's pure parts: object paths, typed properties, signal dispatch.
Against the real systemd: tests/system/test_push.py."""

from __future__ import annotations

from dbus_fast import Message, MessageType, Variant

from llm_supervisor.systemd.dbus import (
    MANAGER,
    PROPERTIES,
    UNIT,
    BusSystemd,
    unit_of_path,
    unit_path,
    unit_status,
)


def test_unit_paths_are_escaped_as_sd_bus_does():
    assert unit_path("llm-main.service") == \
        "/org/freedesktop/systemd1/unit/llm_2dmain_2eservice"
    assert unit_path("0x.service").endswith("/_30x_2eservice")  # a leading digit
    for unit in ("llm-main.service", "a_b@c-1.service", "ünï.service", ""):
        assert unit_of_path(unit_path(unit)) == unit
    assert unit_of_path("/org/freedesktop/systemd1/job/1") is None


def test_typed_values_become_a_unit_status_with_systemctl_show_text_as_evidence():
    status = unit_status("llm-a.service", {
        "ActiveState": "activating", "SubState": "auto-restart", "NRestarts": 2,
        "ExecMainStatus": 9, "MainPID": 0, "Result": "signal", "LoadState": "loaded",
        "NeedDaemonReload": False, "ExecMainCode": 2, "Description": "not kept"})
    assert (status.active_state, status.sub_state, status.n_restarts,
            status.exec_main_status, status.result) == ("activating", "auto-restart", 2, 9,
                                                        "signal")
    assert not status.running and not status.need_daemon_reload
    assert status.raw["NeedDaemonReload"] == "no" and status.raw["NRestarts"] == "2"
    assert "Description" not in status.raw and status.job == 0
    queued = unit_status("llm-a.service", {"ActiveState": "inactive", "Result": "success",
                                           "Job": [134, "/org/freedesktop/systemd1/job/134"]})
    assert queued.job == 134 and queued.raw["Job"] == "134"
    none = unit_status("llm-a.service", {"Job": [0, "/"]})
    assert none.job == 0 and none.raw["Job"] == ""


async def test_a_unit_state_change_is_pushed_and_a_job_end_remembered():
    sd = BusSystemd()
    seen: list[str] = []
    sd.on_change = seen.append
    path = unit_path("llm-a.service")
    sd._on_message(Message(message_type=MessageType.SIGNAL, path=path, interface=PROPERTIES,
                           member="PropertiesChanged", signature="sa{sv}as",
                           body=[UNIT, {"ActiveState": Variant("s", "failed")}, []]))
    for changed in ({"Names": Variant("as", ["x"])},  # not a state
                    {"ActiveState": Variant("s", "deactivating"),  # our own restart
                     "SubState": Variant("s", "stop-sigterm")}):
        sd._on_message(Message(message_type=MessageType.SIGNAL, path=path,
                               interface=PROPERTIES, member="PropertiesChanged",
                               signature="sa{sv}as", body=[UNIT, changed, []]))
    sd._on_message(Message(message_type=MessageType.SIGNAL, path=path, interface=PROPERTIES,
                           member="PropertiesChanged", signature="sa{sv}as",
                           body=[UNIT, {"ActiveState": Variant("s", "activating"),
                                        "SubState": Variant("s", "auto-restart")}, []]))
    assert seen == ["llm-a.service", "llm-a.service"]
    sd._on_message(Message(message_type=MessageType.SIGNAL, path="/org/freedesktop/systemd1",
                           interface=MANAGER, member="JobRemoved", signature="uoss",
                           body=[7, "/org/freedesktop/systemd1/job/7", "llm-a.service",
                                 "done"]))
    assert sd.finished == {"/org/freedesktop/systemd1/job/7": "done"}
    assert sd.describe().startswith("systemctl (")  # not connected
