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
SYSTEM_TEST_TIMEOUT = 1200  # seconds
sys.path.insert(0, str(REPO / "dev"))

from nspawn import Container, ContainerError  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SYSTEM_TESTS in item.path.resolve().parents:
            item.add_marker(pytest.mark.system)
            # a container boots, packages build, engines start: a longer bound than the
            # default (pyproject's `timeout`), still one that ends a hung test
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SYSTEM_TEST_TIMEOUT))


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


@pytest.fixture
def second_container() -> Iterator[Container]:
    """Another container of the test's own, beside ``fresh_container``: a second host, with
    a systemd and a daemon of its own (the containers share the host's network)."""
    c = _booted("second")
    try:
        yield c
    finally:
        c.shutdown()


# A real llama.cpp llama-server (built by dev/bootstrap) and a tiny real model for it.


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~470 KB random-weight llama GGUF written by dev/tinymodel.py; nothing downloaded."""
    from tinymodel import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture
def llama_server() -> Iterator:
    """Start real llama-servers: ``llama_server(model, *args, env=...)``; all stopped after."""
    from llamaserver import LlamaServer, binary

    if not binary().is_file():
        pytest.fail(f"no llama-server at {binary()}: dev/bootstrap builds it "
                    "(dev/build-llama-server)", pytrace=False)
    started: list[LlamaServer] = []

    def start(model: Path | str, *args: str, env: dict[str, str] | None = None) -> LlamaServer:
        started.append(LlamaServer(model, *args, env=env))
        return started[-1]

    yield start
    for server in started:
        server.stop()
