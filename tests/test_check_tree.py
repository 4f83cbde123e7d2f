"""packaging/check-tree: the staged package tree is refused when a version lacks a
distribution it requires (markers evaluated for that version, not the build host's), when one
stands in both trees, and when the shared tree holds a .pth file."""

from __future__ import annotations

import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load():
    loader = SourceFileLoader("check_tree", str(REPO / "packaging/check-tree"))
    spec = importlib.util.spec_from_loader("check_tree", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


check_tree = _load()


def dist(tree: Path, name: str, *requires: str) -> None:
    info = tree / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0",
             *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    dist(tmp_path / "lib/shared", "llm-supervisor", "pydantic>=2", "tomli; python_version < '3.11'")
    dist(tmp_path / "lib/shared", "pydantic", "pydantic-core==1.0", "email-validator; extra == 'email'")
    for v in ("3.11", "3.13"):
        dist(tmp_path / f"lib/python{v}/site-packages", "pydantic_core")
    return tmp_path


def test_a_complete_tree_passes(prefix, capsys):
    assert check_tree.main([str(prefix), "3.11", "3.13"]) == 0
    assert capsys.readouterr().err == ""


def test_a_requirement_of_one_version_only_is_checked_for_that_version(prefix, capsys):
    dist(prefix / "lib/shared", "anyio", "exceptiongroup; python_version < '3.13'")
    assert check_tree.main([str(prefix), "3.13"]) == 0  # not needed on 3.13
    assert check_tree.main([str(prefix), "3.11", "3.13"]) == 1
    err = capsys.readouterr().err
    assert "Python 3.11: anyio requires exceptiongroup" in err and "3.13: anyio" not in err


def test_a_missing_compiled_distribution_is_named(prefix, capsys):
    dist(prefix / "lib/python3.12/site-packages", "zstandard")  # 3.12 lacks pydantic-core
    assert check_tree.main([str(prefix), "3.11", "3.12"]) == 1
    assert "Python 3.12: pydantic requires pydantic-core==1.0" in capsys.readouterr().err


def test_one_distribution_in_both_trees_is_refused(prefix, capsys):
    dist(prefix / "lib/python3.11/site-packages", "pydantic")
    assert check_tree.main([str(prefix), "3.11"]) == 1
    assert "pydantic is in both lib/shared and lib/python3.11" in capsys.readouterr().err


def test_a_pth_file_in_the_shared_tree_is_refused(prefix, capsys):
    (prefix / "lib/shared/distutils-precedence.pth").write_text("import os\n")
    assert check_tree.main([str(prefix), "3.11"]) == 1
    assert "distutils-precedence.pth" in capsys.readouterr().err
