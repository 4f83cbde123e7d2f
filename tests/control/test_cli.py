"""The client side: `check-config`, `render`, `llm-supervisord --check`, the strict HTTP reader,
and exit codes (a real socket with a real daemon is in tests/system)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from llm_supervisor.control import client
from llm_supervisor.control.cli import cli
from llm_supervisor.daemon import main as daemon_main
from llm_supervisor.errors import ProtocolError

GOOD = '[[engine]]\nname = "main"\nexec = "/bin/sleep infinity"\n'
BAD = '[[engine]]\nname = "main"\nlistne = "x"\n[health]\ninterval = "soon"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(text)
    return path


def test_check_config(tmp_path, capsys):
    assert cli(["check-config", str(write(tmp_path, GOOD))]) == 0
    assert "ok" in capsys.readouterr().out
    path = write(tmp_path, BAD)
    assert cli(["check-config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"{path}: engine.main.listne: unknown key 'listne'" in err
    assert any(line.startswith(f"{path}: health.interval: bad duration") for line in err)


def test_daemon_check_is_like_nginx_t(tmp_path, capsys):
    assert daemon_main(["--check", "--config", str(write(tmp_path, GOOD))]) == 0
    assert daemon_main(["--check", "--config", str(write(tmp_path, BAD))]) == 1
    assert "unknown key" in capsys.readouterr().err


def test_the_daemon_checks_its_config_itself(tmp_path, capsys, monkeypatch):
    """No ``ExecStartPre=llm-supervisord --check`` (a second interpreter before READY): the
    daemon refuses a broken config before it starts anything, exit 1, the problems said."""
    unit = (Path(__file__).resolve().parents[2] / "units/llm-supervisor.service").read_text()
    assert "ExecStart=/usr/bin/llm-supervisord\n" in unit
    assert not [line for line in unit.splitlines() if line.startswith("ExecStartPre=")]
    monkeypatch.setattr("llm_supervisor.daemon.configure", lambda: None)  # the journal's
    with capture_logs() as logs:
        assert daemon_main(["--config", str(write(tmp_path, BAD))]) == 1
    assert "unknown key" in capsys.readouterr().err
    assert [e["event"] for e in logs] == ["invalid config; not starting"]
    assert any("unknown key" in p for p in logs[0]["problems"])


def test_render_prints_units_and_writes_nothing(tmp_path, capsys):
    units = tmp_path / "units"
    path = write(tmp_path, f'[supervisor]\nunit_dir = "{units}"\nstate_dir = "{tmp_path}/st"\n'
                 + GOOD)
    assert cli(["render", "main", "--config", str(path), "--tier", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"# ---- {units}/llm-main.service (tier cpu)" in out
    assert 'Environment="OLLAMA_GPU_DRIVER=cpu"' in out
    assert not units.exists() and not (tmp_path / "st").exists()
    assert cli(["render", "nope", "--config", str(path)]) == 1
    # without --tier: the first tier the kind can run (no state yet)
    assert cli(["render", "--config", str(path)]) == 0
    assert "(tier rocm)" in capsys.readouterr().out


def test_exit_codes_without_a_daemon(tmp_path, capsys):
    sock = str(tmp_path / "none.sock")
    assert cli(["--socket", sock, "status"]) == 4
    assert cli(["--socket", sock, "status", "main", "--json"]) == 4
    assert cli(["--socket", sock, "tiers"]) == 4
    assert cli(["frobnicate"]) == 2
    assert cli(["pin", "main", "metal"]) == 2
    assert "not reachable" in capsys.readouterr().err


@pytest.mark.parametrize(("raw", "message"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", None),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", "bad status line"),
    (b"HTTP/1.1 200 OK\r\n\r\n{}", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", "Content-Length says 5"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
     "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "no end of headers"),
    (b"garbage", "no end of headers"),
])
def test_the_strict_reader(raw, message):
    if message is None:
        assert client.parse_response(raw).json() == {}
    else:
        with pytest.raises(ProtocolError, match=message):
            client.parse_response(raw)


def test_ago_without_strptime():
    import calendar
    import time

    from llm_supervisor.timefmt import ago, epoch

    for iso in ("2026-11-22T16:00:00Z", "2000-02-29T23:59:59Z", "1970-01-01T00:00:00Z",
                "2024-03-01T00:00:01Z", "2100-12-31T12:30:00Z"):
        assert epoch(iso) == calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")), iso
    now = epoch("2026-11-22T16:00:00Z")
    assert ago("2026-11-22T15:56:00Z", now) == "4m ago"
    assert ago("2026-11-22T15:59:50Z", now) == "10s ago"
    assert ago("2026-11-20T16:00:00Z", now) == "2d ago"
    assert ago(None, now) == "-" and ago("soon", now) == "soon"


def test_status_table_shows_backend_fix_and_pull_progress():
    from llm_supervisor.control.render import format_status
    doc = {"engines": [
        {"name": "main", "state": "blocked", "tier": "rocm", "backend": None, "since": None,
         "usable_tiers": ["rocm", "cpu"], "reason": "port in use: 127.0.0.1:11434 is held by"
         " pid 812 (ollama) of ollama.service", "fix": "systemctl disable --now ollama.service"},
        {"name": "mi50", "state": "healthy", "tier": "vulkan",
         "backend": "Vulkan: AMD Instinct MI50 (RADV VEGA20)", "since": None,
         "usable_tiers": ["vulkan", "cpu"], "reason": "serving on vulkan",
         "pull": {"model": "qwen2.5", "status": "pulling abc", "completed": 50, "total": 200}},
    ]}
    text = format_status(doc)
    assert "BACKEND" in text.splitlines()[0]
    assert "Vulkan: AMD Instinct MI50 (RADV VEGA20)" in text
    assert "main: fix: systemctl disable --now ollama.service" in text
    assert "mi50: pulling qwen2.5: pulling abc 25%" in text
