"""Shared fixtures. Tests under tests/system/ need a real systemd: they get the ``system``
marker and boot one in a throwaway container (dev/nspawn.py); ``-m "not system"`` skips them.
A machine that cannot boot the container FAILS those tests: it never skips them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_TESTS = Path(__file__).resolve().parent / "system"
sys.path.insert(0, str(REPO / "dev"))

from nspawn import Container, ContainerError  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SYSTEM_TESTS in item.path.resolve().parents:
            item.add_marker(pytest.mark.system)


def _booted(name: str) -> Container:
    c = Container(name)
    try:
        c.boot()
        return c
    except ContainerError as e:  # boot() already cleaned up after itself
        error = str(e)
    pytest.fail(f"system tests need a real systemd, booted with systemd-nspawn as root "
                f"(dev/bootstrap installs it); the container did not boot:\n{error}",
                pytrace=False)


@pytest.fixture(scope="session")
def container() -> Iterator[Container]:
    """One systemd container for the whole session: clean up what you create in it."""
    c = _booted("session")
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture
def fresh_container() -> Iterator[Container]:
    """A container of the test's own, booted for it and torn down after it."""
    c = _booted("fresh")
    try:
        yield c
    finally:
        c.shutdown()
