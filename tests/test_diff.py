"""Reload's pure diff: only engines whose effective unit changed are restarted."""

from __future__ import annotations

import tomllib

from llm_supervisor import config
from llm_supervisor.diff import diff
from llm_supervisor.systemd.units import HostFacts

HOST = HostFacts(frozenset({"render", "video"}))
BASE = """
[health]
interval = "5s"
[[engine]]
name = "a"
listen = "127.0.0.1:11434"
[[engine]]
name = "b"
listen = "127.0.0.1:11435"
"""


def test_no_change_is_empty_even_when_the_file_list_differs():
    old = config.loads(BASE, "one.toml")
    new = config.validate([("one.toml", tomllib.loads(BASE)), ("conf.d/x.toml", {})])
    d = diff(old, new, {"a": "rocm", "b": "vulkan"}, HOST)
    assert d.empty and d.to_dict()["changed"] == []


def test_added_changed_removed_retuned():
    old = config.loads(BASE)
    new = config.loads("""
[health]
interval = "2s"
[[engine]]
name = "a"
listen = "127.0.0.1:11434"
environment = { OLLAMA_NUM_PARALLEL = "2" }
[[engine]]
name = "c"
listen = "127.0.0.1:11436"
""")
    d = diff(old, new, {"a": "rocm", "b": "rocm"}, HOST)
    assert (d.added, d.changed, d.removed) == (("c",), ("a",), ("b",))
    assert d.settings == ("health",)


def test_health_only_changes_retune_without_restart():
    old = config.loads(BASE)
    new = config.loads(BASE.replace('name = "b"\n', 'name = "b"\nchain = ["rocm", "cpu"]\n')
                       + '[engine.health]\nfailures = 5\n')
    d = diff(old, new, {"a": "rocm", "b": "rocm"}, HOST)
    assert d.changed == () and d.retuned == ("b",)


def test_a_tier_override_changes_only_engines_on_that_tier():
    old = config.loads(BASE)
    new = config.loads(BASE + '[engine.tiers.cpu]\nenvironment = { OLLAMA_NUM_THREADS = "8" }\n')
    assert diff(old, new, {"a": "rocm", "b": "cpu"}, HOST).changed == ("b",)
    assert diff(old, new, {"a": "rocm", "b": "rocm"}, HOST).changed == ()


def test_paths_a_reload_cannot_move_are_reported():
    old = config.loads(BASE)
    new = config.loads('[supervisor]\nsocket = "/run/other.sock"\n' + BASE)
    d = diff(old, new, {}, HOST)
    assert d.needs_restart == ("socket",) and "supervisor" in d.settings
