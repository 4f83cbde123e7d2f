"""The balancer's port (``control/agent.py``): HAProxy's agent-check words for each engine's
state, its weight from its speed and its slots, ``/readyz``, and clients that are not allowed,
slow, too long or too many."""

from __future__ import annotations

import asyncio
import time

import pytest

from llm_supervisor.control import agent
from llm_supervisor.control.agent import AgentServer, agent_line, readyz, weight
from llm_supervisor.records.metrics import EngineView

HEALTHY = EngineView("main", "healthy", "rocm", speed_reference=45.0, best_reference=45.0,
                     slots=4)


def test_a_healthy_engine_is_up_weighed_by_its_speed_with_its_slots():
    assert agent_line(HEALTHY, None) == "up 100% maxconn:4\n"
    cpu = EngineView("main", "healthy", "cpu", speed_reference=3.0, best_reference=45.0)
    assert agent_line(cpu, None) == "up 7%\n"  # no slots known: no maxconn
    # one figure for the fleet: hosts with other cards compare by it
    assert weight(HEALTHY, 30.0) == 150 and weight(cpu, 30.0) == 10
    assert weight(EngineView("m", "healthy", "rocm", speed_reference=900.0), 1.0) == 256
    assert weight(EngineView("m", "healthy", "cpu", speed_reference=0.001), 45.0) == 1


def test_an_engine_whose_speed_is_not_learned_weighs_its_tiers_usual_share():
    learning = EngineView("main", "healthy", "vulkan", tokens_per_second=None)
    assert weight(learning, None) == agent.TIER_SHARE["vulkan"]
    assert weight(EngineView("main", "healthy", "rocm"), None) == 100
    # its last canary's rate, while the reference is still being learned
    fresh = EngineView("main", "healthy", "vulkan", tokens_per_second=9.0, best_reference=45.0)
    assert weight(fresh, None) == 20


@pytest.mark.parametrize("view, said", [
    (EngineView("main", "starting", "vulkan"), "down #starting (vulkan)\n"),
    (EngineView("main", "degraded", "rocm", trouble="generation hung"),
     "down #degraded: generation hung (rocm)\n"),
    (EngineView("main", "stopped", "rocm", trouble="systemctl stop\nby uid 0"),
     "down #stopped: systemctl stop?by uid 0 (rocm)\n"),
    (EngineView("main", "failed", None, trouble="every usable tier exhausted"),
     "down #failed: every usable tier exhausted\n"),
    (None, "down #no such engine\n"),
])
def test_an_engine_not_serving_is_down_with_its_reason_on_one_line(view, said):
    assert agent_line(view, None) == said
    assert all(word not in said.split() for word in ("ready", "drain", "maint"))


def test_readyz():
    assert readyz(HEALTHY) == (200, "ready\n")
    assert readyz(EngineView("main", "starting", "cpu")) == (503, "starting (cpu)\n")
    assert readyz(None) == (404, "no such engine\n")


@pytest.fixture
async def server():
    views = {"main": HEALTHY}
    s = AgentServer(("127.0.0.1", 0), ["127.0.0.1"], lambda: views, lambda: None)
    await s.start()
    assert s.server is not None
    s.port = s.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    yield s
    await s.close()


async def exchange(port: int, data: bytes, *, wait: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), wait)
    except ConnectionResetError:  # closed unanswered
        return b""
    finally:
        writer.close()


async def test_the_agent_and_readyz_on_one_port(server):
    assert await exchange(server.port, b"main\n") == b"up 100% maxconn:4\n"
    assert await exchange(server.port, b"other\r\n") == b"down #no such engine\n"
    answer = await exchange(server.port, b"GET /readyz/main HTTP/1.1\r\nHost: lb\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nready\n")
    answer = await exchange(server.port, b"GET /readyz/nope HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 404 ") or answer.startswith(b"HTTP/1.1 404 ")
    answer = await exchange(server.port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 404 " in answer.split(b"\r\n")[0]


async def test_clients_not_allowed_slow_long_or_malformed_get_no_answer(server):
    server.allow = agent.allowed_networks(["10.0.0.0/8"])
    assert await exchange(server.port, b"main\n") == b""
    server.allow = agent.allowed_networks(["127.0.0.0/8"])
    start = time.monotonic()
    assert await exchange(server.port, b"main") == b""  # no newline: nothing to answer
    assert time.monotonic() - start < agent.READ_TIMEOUT + 1
    assert await exchange(server.port, b"m" * (agent.MAX_REQUEST + 10) + b"\n") == b""
    assert await exchange(server.port, b"GET /readyz/main HTTP/1.1\r\nno colon\r\n\r\n") == b""
    assert await exchange(server.port, b"GET /readyz/main HTTP/1.1\r\n" +
                          b"X: " + b"y" * agent.MAX_REQUEST + b"\r\n\r\n") == b""
    assert server.refused == 5 and server.active == 0
    assert await exchange(server.port, b"main\n") == b"up 100% maxconn:4\n"  # still answers


async def test_too_many_at_once_are_closed_and_the_rest_answered(server):
    idle = [await asyncio.open_connection("127.0.0.1", server.port)
            for _ in range(agent.MAX_CONNECTIONS)]
    await asyncio.sleep(0.1)
    assert server.active == agent.MAX_CONNECTIONS
    assert await exchange(server.port, b"main\n", wait=1) == b""  # one too many
    for _, writer in idle:
        writer.close()
    await asyncio.sleep(agent.READ_TIMEOUT + 0.2)
    assert server.active == 0
    assert await exchange(server.port, b"main\n") == b"up 100% maxconn:4\n"
