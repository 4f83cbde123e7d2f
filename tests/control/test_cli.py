"""The client side: `check-config`, `render`, `llm-supervisord --check`, the strict HTTP reader,
and exit codes (a real socket with a real daemon is in tests/system)."""

from __future__ import annotations

import os
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
    from llm_supervisor.control.render import Look, format_status
    doc = {"engines": [
        {"name": "main", "state": "blocked", "tier": "rocm", "backend": None, "since": None,
         "usable_tiers": ["rocm", "cpu"], "reason": "port in use: 127.0.0.1:11434 is held by"
         " pid 812 (ollama) of ollama.service", "fix": "systemctl disable --now ollama.service"},
        {"name": "mi50", "state": "healthy", "tier": "vulkan",
         "backend": "Vulkan: AMD Instinct MI50 (RADV VEGA20)", "since": None,
         "usable_tiers": ["vulkan", "cpu"], "reason": "serving on vulkan",
         "pull": {"model": "qwen2.5", "status": "pulling abc", "completed": 50, "total": 200}},
    ]}
    text = format_status(doc, Look(wide=True))
    assert "BACKEND" in text.splitlines()[0] and "USABLE" in text.splitlines()[0]
    assert "Vulkan: AMD Instinct MI50 (RADV VEGA20)" in text
    assert "BACKEND" not in format_status(doc).splitlines()[0]  # the narrow table
    assert "main: fix: systemctl disable --now ollama.service" in text
    assert "mi50: pulling qwen2.5: pulling abc 25%" in text


def test_status_reads_at_a_glance_demoted_from_where_and_when_what_comes_next():
    """A demoted engine says where it came from and since when; every engine what it does
    next on its own (a promotion, a retry, a probation's end); states in colour on a
    terminal only; rows cut to the terminal's width, or every column whole with -o wide."""
    import time

    from llm_supervisor.control.render import Look, format_status
    from llm_supervisor.timefmt import utc

    now = time.time()
    doc = {"engines": [
        {"name": "main", "state": "healthy", "tier": "vulkan", "demoted_from": "rocm",
         "demoted_at": utc(now - 240), "next_promotion_at": utc(now + 1560 + 30),
         "since": utc(now - 240), "usable_tiers": ["rocm", "vulkan"],
         "reason": "demoted from rocm: generation hung: no token within 20s; nobody else"
                   " connected (3 checks in a row)"},
        {"name": "side", "state": "failed", "tier": "cpu", "next_retry_at": utc(now + 40),
         "since": utc(now - 5), "usable_tiers": [], "reason": "every usable tier exhausted"},
        {"name": "held", "state": "stopped", "tier": "rocm", "since": utc(now - 60),
         "usable_tiers": ["rocm"], "reason": "stopped outside the daemon: exited with status 0"},
    ]}
    plain = format_status(doc)
    main, side, held = plain.splitlines()[1:4]
    assert "vulkan (from rocm 4m ago)" in main and "promote in 26m" in main
    assert "retry in " in side and "\033[" not in plain  # no colour unless asked
    assert main.endswith("(3 checks in a row)")  # piped: nothing cut
    narrow = format_status(doc, Look(width=80))
    assert all(len(line) <= 80 for line in narrow.splitlines()[:4]), narrow
    assert narrow.splitlines()[1].endswith("…")
    coloured = format_status(doc, Look(width=80, colour=True))
    assert "\033[32mhealthy\033[0m" in coloured and "\033[31mfailed\033[0m" in coloured
    assert "\033[34mstopped\033[0m" in coloured
    stripped = coloured.replace("\033[32m", "").replace("\033[31m", "").replace(
        "\033[34m", "").replace("\033[0m", "")
    assert stripped == narrow  # colour adds no width
    wide = format_status(doc, Look(width=80, wide=True))
    assert "USABLE" in wide and wide.splitlines()[1].endswith("(3 checks in a row)")


def test_status_shows_each_engines_cards_where_engines_name_them():
    from llm_supervisor.control.render import format_status, format_tiers
    mi50 = {"pci": "0000:43:00.0", "number": 2, "name": "AMD Instinct MI50/MI60",
            "gfx": "gfx906", "vram": 32 << 30, "rocm": 1, "vulkan": 1, "opencl": None}
    doc = {"engines": [
        {"name": "a", "state": "healthy", "tier": "rocm", "usable_tiers": ["rocm"],
         "cards": {"named": ["2"], "cards": [mi50], "unresolved": []}},
        {"name": "b", "state": "healthy", "tier": "cpu", "usable_tiers": ["cpu"],
         "reboot_required": True, "reboot_card": "0000:83:00.0",
         "cards": {"named": ["9"], "cards": [], "unresolved": ["card 9 is not on this host"]}},
        {"name": "c", "state": "healthy", "tier": "rocm", "usable_tiers": ["rocm"],
         "cards": None}]}
    head, a, b, c = format_status(doc).splitlines()[:4]
    assert head.split()[:4] == ["ENGINE", "STATE", "TIER", "CARDS"]
    assert " 43:00.0 " in a and " ? " in b and "REBOOT REQUIRED (card 0000:83:00.0)" in b
    assert c.split()[3] == "-"
    assert "CARDS" not in format_status({"engines": [doc["engines"][2]]})  # nobody names one
    tiers = format_tiers({"tiers": [], "engines": [], "cards": [{**mi50, "engines": ["a"]}]})
    assert tiers.splitlines()[-1].split() == ["2", "0000:43:00.0", "AMD", "Instinct",
                                              "MI50/MI60", "gfx906", "32.0", "GiB", "1", "1",
                                              "-", "a"]


def test_the_status_table_is_asked_for_this_terminal(monkeypatch):
    """The fast path asks the daemon for the table drawn for this terminal: its width, colour
    unless NO_COLOR (or piped), -o wide; a bad look is refused by the daemon (400)."""
    from llm_supervisor.control import handlers, terminal
    from llm_supervisor.errors import HTTPError

    class Tty:
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            return 1

    monkeypatch.setattr(terminal.sys, "stdout", Tty())
    monkeypatch.setattr(terminal.os, "get_terminal_size", lambda fd: os.terminal_size((97, 40)))
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert terminal.terminal() == (97, True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert terminal.terminal() == (97, False)
    assert handlers.look_of({"width": "97", "colour": "1", "wide": "0"}) == \
        handlers.Look(97, True, False)
    for bad in ({"width": "5"}, {"width": "x"}, {"colour": "yes"}, {"wide": "2"}):
        with pytest.raises(HTTPError) as exc:
            handlers.look_of(bad)
        assert exc.value.status == 400


def test_both_commands_say_their_version(tmp_path, capsys):
    """--version: the client's own, and the daemon's (or why it cannot be asked)."""
    from llm_supervisor import __version__

    assert cli(["--socket", str(tmp_path / "none.sock"), "--version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"llm-supervisorctl {__version__}"
    assert out[1].startswith("llm-supervisord is not reachable: ")
    with pytest.raises(SystemExit) as exc:
        daemon_main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"llm-supervisord {__version__}\n"


def test_check_config_and_reload_print_json(tmp_path, capsys):
    """--json on the commands that print data: check-config's outcome either way."""
    import json

    good = tmp_path / "good.toml"
    good.write_text('[[engine]]\nname = "main"\n')
    assert cli(["check-config", str(good), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["engines"] == ["main"] and doc["files"] == [str(good)]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[engine]]\nname = "main"\nlisten = "nowhere"\n')
    assert cli(["check-config", str(bad), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and any("listen" in p for p in doc["problems"]), doc
    assert cli(["--socket", str(tmp_path / "none.sock"), "reload", "--json"]) == 4
    assert "not reachable" in capsys.readouterr().err


def test_the_man_page_names_every_exit_code() -> None:
    """llm-supervisorctl(1)'s EXIT STATUS lists each of errors.Exit's codes (a new one fails
    here until the page says it)."""
    from llm_supervisor.errors import Exit

    page = (Path(__file__).resolve().parents[2] / "packaging" / "man" /
            "llm-supervisorctl.1").read_text()
    section = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    codes = {v for k, v in vars(Exit).items() if k.isupper()}
    for code in codes - {Exit.SIGNALLED}:
        assert f".B {code}\n" in section, code
    assert ".BI 128+ n" in section


def test_the_man_page_says_every_option_the_parser_takes(monkeypatch) -> None:
    """llm-supervisorctl(1)'s OPTIONS section is the parser's (dev/manpage.py writes it):
    the page fails here when a command or an option changes and the page does not; every
    option has its help."""
    import argparse

    from llm_supervisor.control import completion, manual

    page = (Path(__file__).resolve().parents[2] / "packaging" / "man" /
            "llm-supervisorctl.1").read_text()
    monkeypatch.setenv("LLM_SUPERVISOR_SOCKET", "/somewhere/else.sock")  # not in the page
    assert manual.roff() in page, "run dev/manpage.py: llm-supervisorctl(1) drifted"
    section = page.split(manual.BEGIN, 1)[1].replace("\\-", "-")
    for command, every in completion.commands(completion.parser()).items():
        options = [o for o in every if o != "--help"]
        assert f".SS {command}\n" in section or not options, command
        for option in options:
            assert option in section, (command, option)

    def without_help(p: argparse.ArgumentParser) -> list[str]:
        found = [f"{p.prog} {' '.join(a.option_strings)}" for a in p._actions
                 if a.option_strings and a.dest != "help" and not a.help]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += without_help(sub)
        return found

    assert without_help(completion.parser()) == []


def test_the_daemons_page_names_each_of_its_options(capsys) -> None:
    """llm-supervisord(8) lists every option its --help shows."""
    import re

    with pytest.raises(SystemExit):
        daemon_main(["--help"])
    options = set(re.findall(r"--[a-z-]+", capsys.readouterr().out)) - {"--help"}
    page = (Path(__file__).resolve().parents[2] / "packaging" / "man" /
            "llm-supervisord.8").read_text().replace("\\-", "-")
    assert options and all(f".B {o}" in page or f".BI {o}" in page for o in options), options
