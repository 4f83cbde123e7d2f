"""llm_supervisor.host.ports: who holds a listen address, and the unit a process runs in."""

from __future__ import annotations

import os
import socket

from llm_supervisor.host import ports


def test_holder_names_the_listening_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        held = ports.holder(f"127.0.0.1:{port}")
        assert held is not None and held.pid == os.getpid()
        assert held.describe().startswith(f"pid {os.getpid()} (")
        assert ports.holder(f"0.0.0.0:{port}") == held  # the wildcard covers it
    assert ports.holder(f"127.0.0.1:{port}") is None


def test_unit_of_reads_the_cgroup(tmp_path):
    (tmp_path / "812").mkdir()
    (tmp_path / "812/cgroup").write_text("0::/system.slice/ollama.service\n")
    assert ports.unit_of(812, proc=tmp_path) == "ollama.service"
    (tmp_path / "813").mkdir()
    (tmp_path / "813/cgroup").write_text(
        "12:cpu:/\n1:name=systemd:/machine.slice/c/system.slice/llm-main.service\n")
    assert ports.unit_of(813, proc=tmp_path) == "llm-main.service"
    assert ports.unit_of(999, proc=tmp_path) is None
    held = ports.Holder(812, "ollama", "ollama.service")
    assert held.describe() == "pid 812 (ollama) of ollama.service"
