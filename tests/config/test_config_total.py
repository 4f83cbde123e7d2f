"""Config validation is total: any bytes give a Config or a ConfigError naming the file (and
the key or line), never a traceback; absurd numbers and unit-breaking values are refused."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from configfuzz import configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_supervisor.config import MAX_FILE, Config, ConfigError, load, loads
from llm_supervisor.systemd import units

ENGINE = '[[engine]]\nname = "main"\nexec = "/usr/bin/true"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        loads(text, "s.toml")
    return exc.value.problems


@pytest.mark.parametrize("value, key", [
    ("nan", "health.interval"), ("inf", "health.interval"), ("1e300", "health.timeout"),
    ('"0.0001ms"', "health.interval"), ('"0s"', "health.interval"), ("0", "health.timeout"),
    ('"400d"', "fallback.promote_after"), ("-inf", "health.startup_grace"),
    ('"999999999999999999999999h"', "health.canary_timeout"),
    ("nan", "health.min_tokens_per_second"), ("inf", "fallback.promote_backoff"),
    ("1e300", "health.min_tokens_per_second"), ("100000000000000000000000", "health.failures"),
    ('"0s"', "supervisor.probe_timeout"), ('"99999999999999999999GiB"', "history.max_size"),
])
def test_absurd_numbers_are_refused_with_their_bounds(value: str, key: str) -> None:
    section, name = key.split(".")
    (problem,) = problems(f"[{section}]\n{name} = {value}\n")
    assert problem.startswith(f"s.toml: {key}: ")
    assert any(word in problem for word in ("between", "less than", "greater than")), problem


@pytest.mark.parametrize("value", ['"0s"', "nan", "inf", '"0.0001ms"', "1e300"])
def test_engine_health_overrides_are_checked_like_health(value: str) -> None:
    (problem,) = problems(f'{ENGINE}[engine.health]\ninterval = {value}\n')
    assert problem.startswith("s.toml: engine.main.health.interval: ")


def test_sane_values_still_pass() -> None:
    cfg = loads('[health]\ninterval = "500ms"\nstartup_grace = 0\n[fallback]\n'
                'promote_after = "0"\npromote_backoff = 1.5\n'
                f'{ENGINE}[engine.health]\ninterval = "1ms"\n', "s.toml")
    assert cfg.health_for(cfg.engines[0]).interval == 0.001
    assert cfg.fallback.promote_after == 0


@pytest.mark.parametrize("path", ["/srv/models\\\\", "/srv/a b", '/srv/"x"', "/srv/%n",
                                  "/srv/a;b", "srv/rel"])
def test_unit_breaking_writable_paths_are_refused(path: str) -> None:
    (problem,) = problems(f'{ENGINE}writable = [{json.dumps(path)}]\n')
    assert problem.startswith("s.toml: engine.main.writable")


def test_a_trailing_backslash_cannot_join_unit_lines() -> None:
    """What used to happen: ReadWritePaths=-/srv/models\\ swallowed the next directive."""
    cfg = loads(f'{ENGINE}environment = {{ A = "x\\\\" }}\n', "s.toml")
    rendered = units.render(cfg, cfg.engines[0], "cpu", units.HostFacts(groups=frozenset()))
    for line in rendered.unit_text.splitlines() + rendered.dropin_text.splitlines():
        assert not line.rstrip().endswith("\\"), line


def test_a_fifo_in_conf_d_is_refused_without_blocking(tmp_path: Path) -> None:
    main = tmp_path / "supervisor.toml"
    main.write_text(ENGINE)
    (tmp_path / "conf.d").mkdir()
    os.mkfifo(tmp_path / "conf.d/10-pipe.toml")
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(_load(main)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and time.monotonic() - started < 2, "load() blocked"
    (problem,) = outcome[0]
    assert problem == f"{tmp_path}/conf.d/10-pipe.toml: not a regular file; only regular" \
        " files are read"


def _load(path: Path) -> list[str]:
    try:
        load(path)
    except ConfigError as exc:
        return exc.problems
    return []


def test_bytes_that_are_not_toml_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b'[health]\ninterval = "5s"\n# caf\xe9\n')
    assert _load(path) == [f"{path}: line 3: not UTF-8 text (byte 0xe9)"]
    path.write_bytes(b"a = " + b"[" * 5000 + b"]" * 5000)
    (problem,) = _load(path)
    assert problem.startswith(f"{path}: ") and ("deep" in problem or "deeper" in problem)
    path.write_bytes(b"a = " + b"[" * 20 + b"1" + b"]" * 20)
    assert _load(path) == [f"{path}: a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0: nested deeper than 16"
                           " levels"]
    path.write_bytes(b"[health]\nfailures = " + b"9" * 5000 + b"\n")
    (problem,) = _load(path)
    assert problem.startswith(f"{path}: invalid TOML")
    path.write_bytes(b"#" * (MAX_FILE + 10))
    (problem,) = _load(path)
    assert problem.startswith(f"{path}: ") and "at most" in problem


# -- fuzzing: 500 configs, none with a traceback (the generator is dev/configfuzz.py) --

@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(configs(), st.binary(max_size=200))
def test_fuzzed_configs_never_give_a_traceback(main: bytes, dropin: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "supervisor.toml"
        path.write_bytes(main)
        (Path(directory) / "conf.d").mkdir()
        (Path(directory) / "conf.d/50-x.toml").write_bytes(dropin)
        try:
            cfg = load(path)
        except ConfigError as exc:
            assert exc.problems
            for problem in exc.problems:
                assert problem.startswith(directory), problem
            return
        assert isinstance(cfg, Config)
        for engine in cfg.engines:  # what validation let through renders into a sane unit
            for tier in cfg.chain_for(engine):
                units.render(cfg, engine, tier, units.HostFacts(groups=frozenset()))
