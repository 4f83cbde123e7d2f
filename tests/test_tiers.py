"""The tier names live in one place, ``llm_supervisor.tiers``: no second copy of them in the
package, and every table keyed by tier names each tier exactly.

A copy is a tuple, list or set written out of two or more tier names (``("rocm", "vulkan",
...)``, ``Literal["rocm", ...]``, ``frozenset({"rocm", ...})``): it drifts the day a tier is
added or the order changes. ``KNOWN_COPIES`` lists those still there, in modules being changed
by others; it may only shrink: a new copy fails, and so does one that is gone but still listed.
The simulated engine is a program of its own that imports nothing of the supervisor's but
``names``: its libraries are not scanned, they are held equal to the tiers below instead.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from llm_supervisor import config, tiers
from llm_supervisor.checks import observations
from llm_supervisor.control import cli
from llm_supervisor.host import cards, probes
from llm_supervisor.host import tiers as host_tiers
from llm_supervisor.simengine import plan

PACKAGE = Path(tiers.__file__).resolve().parent
HOME = Path(tiers.__file__).resolve()
NOT_SCANNED = {PACKAGE / "simengine"}
# module (relative to the package) -> literal copies of the tier names still in it
KNOWN_COPIES: dict[str, int] = {}


def copies(path: Path) -> list[int]:
    """The lines of ``path`` that write out two or more tier names as a tuple, list or set."""
    names = set(tiers.TIERS)
    return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Tuple | ast.List | ast.Set) and len(node.elts) >= 2
            and all(isinstance(e, ast.Constant) and e.value in names for e in node.elts)]


def test_the_tier_names_are_written_only_in_their_module():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == HOME or any(path.is_relative_to(d) for d in NOT_SCANNED):
            continue
        lines = copies(path)
        if lines:
            found[str(path.relative_to(PACKAGE))] = len(lines)
    assert copies(HOME), "the scan no longer recognises the one copy it protects"
    new = {m: n for m, n in found.items() if n > KNOWN_COPIES.get(m, 0)}
    assert new == {}, f"tier names written out again: import them from llm_supervisor.tiers: {new}"
    gone = {m: n for m, n in KNOWN_COPIES.items() if found.get(m, 0) < n}
    assert gone == {}, f"no longer there, take them off KNOWN_COPIES: {gone}"


def test_the_tiers_module_imports_nothing_of_the_package():
    tree = ast.parse(HOME.read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.split(".")[0] == "llm_supervisor"]


def test_the_order_and_the_gpu():
    assert tiers.TIERS == ("rocm", "vulkan", "opencl", "cpu")  # docs/contract.md §4: best first
    assert set(tiers.TIERS) - {tiers.CPU_TIER} == tiers.GPU_TIERS
    assert config.TIERS is tiers.TIERS and config.GPU_TIERS is tiers.GPU_TIERS


def test_the_config_accepts_exactly_the_tiers():
    assert config.loads("").fallback.chain == tiers.TIERS
    for tier in tiers.TIERS:
        cfg = config.loads(f'[fallback]\nchain = ["{tier}"]\n[tiers.{tier}]\navailable = "never"\n')
        assert cfg.fallback.chain == (tier,) and cfg.availability(tier) == "never"
    with pytest.raises(config.ConfigError, match="unknown tier"):
        config.loads('[fallback]\nchain = ["cuda"]\n')


def test_every_table_keyed_by_tier_names_each_tier():
    for kind, table in host_tiers.TIER_ENV.items():
        assert tuple(table) == tiers.TIERS, kind
    assert tuple(observations.TIER_LIBRARIES) == tiers.TIERS
    assert set(probes.DEFAULT_COMMANDS) == tiers.GPU_TIERS  # the CPU needs no probe
    assert set(host_tiers.CARD_VARIABLES) == set(cards.SEEN) == tiers.GPU_TIERS
    assert probes.TIERS is tiers.TIERS


def test_the_simulated_engine_knows_the_same_libraries():
    assert plan.LIBRARIES == tiers.TIERS


def test_the_cli_offers_every_tier_and_no_other():
    """While ``control/cli.py`` writes its own copy (``KNOWN_COPIES``), hold it equal."""
    commands = next(a for a in cli.parser()._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    for command, dest in (("pin", "tier"), ("render", "tier")):
        action = next(a for a in commands[command]._actions if a.dest == dest)
        assert tuple(action.choices or ()) == tiers.TIERS, command
