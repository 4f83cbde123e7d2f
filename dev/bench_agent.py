#!/usr/bin/env python3
"""The balancer's port under load: how long HAProxy waits for an agent answer.

A child process serves, on two loopback ports, the daemon's ``AgentServer`` (four engines'
views, the allow list on) and, as the reference in the same run, the least a line server can
do: asyncio's ``start_server`` answering a fixed line. This process opens connections as
HAProxy does (connect, send ``<engine>\\n``, read the line, close) from 1, 16 and 64 clients at
once, alternating between the two servers, and prints answers per second and the latency's
median and 99th percentile for each. Run as ``dev/bench_agent.py [--seconds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LINE = b"up 100% maxconn:4\n"


def serve(ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from llm_supervisor.control.agent import AgentServer
    from llm_supervisor.records.metrics import EngineView

    views = {f"e{i}": EngineView(f"e{i}", "healthy", "rocm", speed_reference=40.0 + i,
                                 best_reference=45.0, slots=4) for i in range(4)}

    async def main() -> None:
        agent = AgentServer(("127.0.0.1", 0), ["127.0.0.1"], lambda: views, lambda: None)
        await agent.start()

        async def reference(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\n")
            writer.write(LINE)
            await writer.drain()
            writer.close()

        floor = await asyncio.start_server(reference, "127.0.0.1", 0)
        assert agent.server is not None
        ready.put((agent.server.sockets[0].getsockname()[1],
                   floor.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


async def one(port: int, name: bytes) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(name)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    if not answer.startswith(b"up "):
        raise RuntimeError(f"unexpected answer {answer!r}")
    return time.perf_counter() - start


async def load(port: int, clients: int, seconds: float) -> list[float]:
    end = time.perf_counter() + seconds
    times: list[float] = []

    async def client(i: int) -> None:
        while time.perf_counter() < end:
            times.append(await one(port, f"e{i % 4}\n".encode()))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return times


def figures(times: list[float], seconds: float) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{len(ms) / seconds:8.0f}/s  p50 {statistics.median(ms):6.2f} ms  p99 {p99:6.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    ready: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    child = multiprocessing.Process(target=serve, args=(ready,), daemon=True)
    child.start()
    agent_port, floor_port = ready.get(timeout=30)
    print(f"agent answers from {args.rounds} alternating rounds of {args.seconds:g} s,"
          " each client: connect, send, read the line, close")
    try:
        for clients in (1, 16, 64):
            got: dict[str, list[float]] = {"agent": [], "reference": []}
            for _ in range(args.rounds):
                for name, port in (("agent", agent_port), ("reference", floor_port)):
                    got[name] += asyncio.run(load(port, clients, args.seconds))
            for name, times in got.items():
                print(f"{clients:3d} clients  {name:9s} "
                      f"{figures(times, args.seconds * args.rounds)}")
    finally:
        child.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
