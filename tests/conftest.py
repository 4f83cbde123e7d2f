"""Shared fixtures. Tests under tests/system/ need a real systemd: they get the ``system``
marker and boot one in a throwaway container (dev/nspawn.py); ``-m "not system"`` skips them.
A machine that cannot boot the container FAILS those tests: it never skips them."""

from __future__ import annotations

import contextlib
import os
import subprocess
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


def _booted(name: str, network: Path | None = None) -> Container:
    c = Container(name, network=network)
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


# A second host's own network: a namespace joined to this one by a veth pair. This side has
# BALANCER (where a load balancer on this host connects from) and STRANGER (another address
# of this host, which the second host's daemon is not told to trust); the far side has REMOTE.
BALANCER, STRANGER, REMOTE = "10.213.7.1", "10.213.7.3", "10.213.7.2"


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


@contextlib.contextmanager
def _network_of_its_own() -> Iterator[Path]:
    name, veth = f"llmsup-{os.getpid()}", f"lsv{os.getpid() % 100000}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", f"{veth}a", "type", "veth", "peer", "name", f"{veth}b")
        _ip("link", "set", f"{veth}b", "netns", name)
        for address in (BALANCER, STRANGER):
            _ip("addr", "add", f"{address}/24", "dev", f"{veth}a")
        _ip("link", "set", f"{veth}a", "up")
        for argv in (["addr", "add", f"{REMOTE}/24", "dev", f"{veth}b"],
                     ["link", "set", f"{veth}b", "up"], ["link", "set", "lo", "up"]):
            _ip("-n", name, *argv)
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def second_container() -> Iterator[Container]:
    """Another container of the test's own, beside ``fresh_container``: a second host, with
    a systemd, a daemon and a network of its own, reached at REMOTE from this host's
    BALANCER (or STRANGER) address."""
    with _network_of_its_own() as network:
        c = _booted("second", network)
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
