"""A real HAProxy (Debian's package) in front of two engines, asking the daemon's balancer port
(agent-check) for each: an engine fallen to the CPU gets its speed's share of the requests, an
engine that stops serving gets none, a daemon that dies leaves HAProxy with the last word it
heard while the engines go on serving, and a planned switch under load drains first: no
request fails; a hang fails only what was in flight on the hung engine. The same requests
without the agent, side by side. HAProxy is Debian 12's (2.6) and, for the weights, Debian
13's (3.0) too; two hosts on two networks share one HAProxy."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
from conftest import BALANCER, REMOTE, STRANGER
from nspawn import Container
from roots import carry_host_settings, release_root
from sandbox import (
    FAST,
    apt,
    configure,
    engine_toml,
    events,
    free_port,
    install,
    start_daemon,
    status,
    wait_engine,
)

AGENT = free_port()
SETTINGS = FAST + f"""
[agent]
enabled = true
listen = "127.0.0.1:{AGENT}"
"""


def server_lines(ports: dict[str, int], agents: dict[str, tuple[int, str]] | None,
                 hosts: dict[str, str] | None = None) -> str:
    """A server line per engine port (on loopback, or at ``hosts[name]``); with ``agents``
    (name -> agent port, agent-send), each weighed by its host's daemon's agent."""
    return "\n".join(
        f"    server {name} {(hosts or {}).get(name, '127.0.0.1')}:{port} check inter 1s"
        + (f" agent-check agent-port {agents[name][0]} agent-inter 500ms"
           f' agent-send "{agents[name][1]}\\n"' if agents else "") + " weight 100"
        for name, port in ports.items())


def haproxy_cfg(front: int, ports: dict[str, int], *, agent: bool) -> str:
    """roundrobin over both engines; with ``agent``, each weighed by this host's agent."""
    return fleet_cfg(front, server_lines(ports, {n: (AGENT, n) for n in ports} if agent
                                         else None))


def fleet_cfg(front: int, servers: str) -> str:
    return f"""global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend llm
    bind 127.0.0.1:{front}
    default_backend engines
backend engines
    balance roundrobin
    option http-server-close
    http-response set-header X-Engine %s
{servers}
"""


def start_haproxy(c, name: str, front: int, ports: dict[str, int], *, agent: bool) -> None:
    path = f"/etc/haproxy/{name}.cfg"
    c.write(path, haproxy_cfg(front, ports, agent=agent))
    c.run(["haproxy", "-c", "-f", path])
    c.run(["systemd-run", f"--unit={name}", "haproxy", "-f", path, "-db"])


def split(front: int, n: int) -> tuple[Counter[str], int]:
    """``n`` short generations through HAProxy: how many each engine served, and failures."""
    served: Counter[str] = Counter()
    failed = 0
    with httpx.Client(trust_env=False, timeout=10) as client:
        for _ in range(n):
            try:
                r = client.post(f"http://127.0.0.1:{front}/api/generate", json={
                    "model": "qwen2.5:7b-instruct", "prompt": "x", "stream": False,
                    "options": {"num_predict": 1}})
                served[r.headers.get("x-engine", "?")] += r.status_code == 200
                failed += r.status_code != 200
            except httpx.HTTPError:
                failed += 1
    return served, failed


def falls_to_the_cpu(c, engine: str) -> None:
    """``engine`` learns its ROCm speed, then falls to the CPU (pinned there: the simulated
    CPU answers at 8 tokens/s against 45 on the GPU) and learns that too."""
    c.wait_for(lambda: status(c, engine)["speed"]["reference"], timeout=60,
               what=f"{engine}'s ROCm speed learned")
    c.run(["llm-supervisorctl", "pin", engine, "cpu"])
    wait_engine(c, engine, state="healthy", tier="cpu")
    c.wait_for(lambda: status(c, engine)["speed"]["reference"], timeout=60,
               what=f"{engine}'s CPU speed learned")


def agent_says(c, engine: str) -> str:
    return c.run(["bash", "-c", f"printf '{engine}\\n' | timeout 3 bash -c 'exec 3<>/dev/tcp/"
                  f"127.0.0.1/{AGENT}; cat >&3; cat <&3'"], check=False).stdout.strip()


# The HAProxy releases MI50 hosts get from their distribution: Debian 12's (this host's own,
# installed by dev/bootstrap) and Debian 13's, installed from Debian 13's archive into a
# container booted from that release's root (dev/roots.py) on this host's network.
RELEASES = {"debian12": "2.6.", "debian13": "3.0."}


@pytest.fixture(params=list(RELEASES))
def balancer(request, fresh_container):
    """The container HAProxy runs in, and its version: Debian 12's or Debian 13's."""
    if request.param == "debian12":
        yield fresh_container, RELEASES["debian12"]
        return
    c = Container("trixie-haproxy", lower=release_root("trixie"))
    c.boot(timeout=120)
    try:
        carry_host_settings(c)
        apt(c, "update")
        apt(c, "install", "haproxy")
        c.run(["systemctl", "disable", "--now", "haproxy.service"])
        yield c, RELEASES["debian13"]
    finally:
        c.shutdown()


def test_haproxy_weighs_engines_by_their_speed_and_stops_sending_to_one_down(fresh_container,
                                                                              balancer):
    c = fresh_container
    lb, release = balancer
    version = lb.run(["haproxy", "-v"]).stdout.splitlines()[0]
    assert version.startswith(f"HAProxy version {release}"), version
    install(c)
    ports = {"a": free_port(), "b": free_port()}
    configure(c, "".join(engine_toml(n, p) for n, p in ports.items()), SETTINGS)
    start_daemon(c)
    for name in ports:
        wait_engine(c, name, state="healthy", tier="rocm")
    falls_to_the_cpu(c, "b")
    said = {name: agent_says(c, name) for name in ports}
    assert said["a"].startswith("up 100%"), said
    assert said["b"].startswith("up ") and int(said["b"].split()[1].rstrip("%")) < 30, said
    assert agent_says(c, "nope") == "down #no such engine"

    fronts = {"with": free_port(), "without": free_port()}
    start_haproxy(lb, "lb-agent", fronts["with"], ports, agent=True)
    start_haproxy(lb, "lb-plain", fronts["without"], ports, agent=False)
    time.sleep(3)  # a few agent and health checks
    weighed, failed = split(fronts["with"], 120)
    plain, plain_failed = split(fronts["without"], 120)
    print(f"\n{version}: agent said: {said}\nsplit with the agent:"
          f" {dict(weighed)} ({failed} failed);"
          f" without: {dict(plain)} ({plain_failed} failed)")
    assert failed == 0 and plain_failed == 0
    share = weighed["b"] / 120
    assert share <= int(said["b"].split()[1].rstrip("%")) / 100 + 0.05, weighed
    assert abs(plain["b"] - plain["a"]) <= 2, plain  # without it: half each

    # a stops serving (an operator's stop): the agent says down, HAProxy sends it nothing
    c.run(["llm-supervisorctl", "stop", "a"])
    c.wait_for(lambda: agent_says(c, "a").startswith("down #stopped"), timeout=20,
               what="the agent saying a is down")
    time.sleep(1.5)  # an agent interval and then some
    served, failed = split(fronts["with"], 40)
    assert served == Counter({"b": 40}) and failed == 0, (served, failed)
    c.run(["llm-supervisorctl", "start", "a"])
    wait_engine(c, "a", state="healthy", tier="rocm")
    c.wait_for(lambda: split(fronts["with"], 10)[0]["a"], timeout=10,
               what="HAProxy sending to a again")

    # the daemon dies (and stays down): HAProxy keeps the last word it heard, the engines go
    # on serving
    c.run(["systemctl", "kill", "--signal=SIGKILL", "llm-supervisor.service"])
    c.run(["systemctl", "stop", "llm-supervisor.service"])  # no restart of it either
    assert agent_says(c, "a") == ""  # nobody answers on the balancer's port
    time.sleep(2)
    served, failed = split(fronts["with"], 60)
    print(f"the daemon down: {dict(served)} ({failed} failed)")
    assert failed == 0 and served["a"] > 3 * served["b"] > 0, served


class Stream:
    """A client sending one short generation after another through HAProxy (a second apart:
    the canary finds enough windows of its own to judge the speed), counting what each engine
    served and what failed, until stopped."""

    def __init__(self, front: int) -> None:
        self.front, self.served, self.failed = front, Counter[str](), []
        self.log: list[tuple[float, str]] = []  # (when sent, the engine that answered or why not)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            while not self.stop.is_set():
                sent = time.time()
                try:
                    r = client.post(f"http://127.0.0.1:{self.front}/api/generate", json={
                        "model": "qwen2.5:7b-instruct", "prompt": "x", "stream": False,
                        "options": {"num_predict": 10}})
                    if r.status_code == 200:
                        self.served[r.headers.get("x-engine", "?")] += 1
                        self.log.append((sent, r.headers.get("x-engine", "?")))
                    else:
                        self.failed.append(f"HTTP {r.status_code} from"
                                           f" {r.headers.get('x-engine', '?')}")
                        self.log.append((sent, f"HTTP {r.status_code}"))
                except httpx.HTTPError as exc:
                    self.failed.append(type(exc).__name__)
                    self.log.append((sent, type(exc).__name__))
                time.sleep(1.0)

    def end(self) -> tuple[Counter[str], list[str]]:
        self.stop.set()
        self.thread.join(timeout=40)
        return self.served, self.failed


def degrade_under_load(c, *, agent: bool) -> tuple[Counter[str], list[str], list[str]]:
    """Engine a falls to the CPU's speed 30 s after its start while a client streams requests
    through HAProxy; the daemon moves it to vulkan. What was served, what failed, and the
    drain's events."""
    install(c)
    ports = {"a": free_port(), "b": free_port()}
    engines = engine_toml("a", ports["a"], c=c, faults={"rocm": {"cpu_speed_after": 30}}) \
        + engine_toml("b", ports["b"])
    configure(c, engines, SETTINGS if agent else FAST)
    start_daemon(c)
    for name in ports:
        wait_engine(c, name, state="healthy", tier="rocm")
    front = free_port()
    start_haproxy(c, "lb", front, ports, agent=agent)
    time.sleep(2)
    stream = Stream(front)
    wait_engine(c, "a", state="healthy", tier="vulkan", timeout=120)
    time.sleep(3)
    served, failed = stream.end()
    drains = [f"{e['to']}: {e['reason']}" for e in events(c) if e["type"] == "drain"]
    return served, failed, drains


def test_a_planned_switch_under_load_drains_first_and_fails_no_request(fresh_container):
    served, failed, drains = degrade_under_load(fresh_container, agent=True)
    print(f"\nwith the agent: served {dict(served)}, failed {failed}; drain: {drains}")
    assert failed == [] and served["a"] > 0 and served["b"] > 0
    assert drains and drains[0].startswith("vulkan: draining before demote to vulkan")
    assert drains[-1].startswith("done: drained in")


def test_the_same_switch_without_the_agent_for_comparison(fresh_container):
    served, failed, drains = degrade_under_load(fresh_container, agent=False)
    print(f"\nwithout the agent: served {dict(served)}, failed {failed}")
    assert drains == [] and served["a"] > 0  # measured, not asserted: how many failed


def when(event: dict) -> float:
    from datetime import datetime
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


@dataclass
class Hang:
    """What three clients' requests met around a hang's verdict on engine a (times from the
    verdict): sent before it and one agent interval, and sent while a was down."""
    before: list[tuple[float, str]]
    down: list[tuple[float, str]]
    back: float  # a healthy again, seconds after the verdict

    @property
    def failed_before(self) -> list[tuple[float, str]]:
        return [x for x in self.before if x[1] not in ("a", "b")]

    @property
    def failed_down(self) -> list[tuple[float, str]]:
        return [x for x in self.down if x[1] not in ("a", "b")]

    def __str__(self) -> str:
        return (f"{len(self.before)} sent before the verdict and the agent's interval"
                f" ({len(self.failed_before)} failed: {self.failed_before}); {len(self.down)}"
                f" sent while a was down ({self.back:.1f}s), answered by"
                f" {dict(Counter(w for _, w in self.down))}")


def hang_under_load(c, *, agent: bool) -> Hang:
    """Engine a's generations hang 25 s after its start, under three clients' streams through
    HAProxy (with the agent, or its own TCP checks only); each start of a takes 6 s (its model
    loading): the window while it is down."""
    install(c)
    ports = {"a": free_port(), "b": free_port()}
    configure(c, engine_toml("a", ports["a"], c=c, faults={"rocm": {"hang_after": 25,
                                                                     "start_delay": 6}})
              + engine_toml("b", ports["b"]), SETTINGS if agent else FAST)
    start_daemon(c)
    for name in ports:
        wait_engine(c, name, state="healthy", tier="rocm")
    front = free_port()
    start_haproxy(c, "lb", front, ports, agent=agent)
    time.sleep(2)
    streams = [Stream(front) for _ in range(3)]
    c.wait_for(lambda: [e for e in events(c) if e.get("engine") == "a"
                        and e["type"] == "state" and e.get("cause") == "hang"],
               timeout=90, what="the hang's verdict on a")
    c.wait_for(lambda: status(c, "a")["state"] == "healthy", timeout=60, what="a back")
    time.sleep(2)
    for stream in streams:
        stream.end()
    log = sorted(entry for stream in streams for entry in stream.log)
    verdict = next(e for e in events(c) if e.get("engine") == "a" and e["type"] == "state"
                   and e.get("cause") == "hang")
    at = when(verdict)
    back = next(when(e) for e in events(c) if e.get("engine") == "a" and e["type"] == "state"
                and e["to"] == "healthy" and when(e) > at)
    edge = at + 0.5 + 1.0  # the verdict, one agent interval and a second's slack
    return Hang(before=[(t - at, what) for t, what in log if t <= edge],
                down=[(t - at, what) for t, what in log if edge < t < back], back=back - at)


def test_a_hang_fails_only_what_was_in_flight_and_new_requests_go_elsewhere(fresh_container):
    """The requests sent to a before the verdict fail (nothing is being served: no drain);
    from the verdict and one agent interval on, the agent says down and every new request
    goes to b until a serves again; none of those fails."""
    hang = hang_under_load(fresh_container, agent=True)
    print(f"\nhang on a, with the agent: {hang}")
    assert hang.down and all(what == "b" for _, what in hang.down), hang.down
    assert hang.failed_down == [], hang.failed_down
    assert hang.failed_before, "the requests in flight on the hung engine fail (no drain)"


def test_the_same_hang_without_the_agent_for_comparison(fresh_container):
    """HAProxy's own TCP check sees a hung engine's port open: it learns nothing until the
    daemon restarts a. Measured, not asserted: how many failed."""
    hang = hang_under_load(fresh_container, agent=False)
    print(f"\nhang on a, without the agent: {hang}")
    assert hang.down, "requests were sent while a was down"


def asks_readyz(source: str, port: int, engine: str) -> str:
    """``GET /readyz/<engine>`` from this host's ``source`` address to the second host's
    balancer port: its status line, or what happened instead."""
    import socket
    with socket.create_connection((REMOTE, port), timeout=3,
                                  source_address=(source, 0)) as s:
        s.sendall(f"GET /readyz/{engine} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            answer = s.recv(4096).decode(errors="replace")
        except ConnectionResetError:
            return "reset"
    return answer.splitlines()[0] if answer else "closed unanswered"


def test_two_hosts_each_with_its_daemon_behind_one_haproxy(fresh_container, second_container):
    """Two hosts (two booted systemds, the second on a network of its own), each with an
    engine named main and its own daemon answering on its own balancer port; HAProxy on the
    first asks each host about its main. The second host's port answers the balancer's
    address only. Its engine falls to the CPU: it gets its speed's share; stopped, none."""
    hosts = {"gpu1": fresh_container, "gpu2": second_container}
    where = {"gpu1": "127.0.0.1", "gpu2": REMOTE}
    allow = {"gpu1": "127.0.0.1", "gpu2": BALANCER}
    ports, agents = {}, {}
    for name, c in hosts.items():
        install(c)
        ports[name], agents[name] = free_port(), free_port()
        configure(c, engine_toml("main", ports[name], host=where[name]), FAST + f"""
[agent]
enabled = true
listen = "{where[name]}:{agents[name]}"
allow = ["{allow[name]}"]
""")
        start_daemon(c)
    for c in hosts.values():
        wait_engine(c, "main", state="healthy", tier="rocm")
    assert asks_readyz(BALANCER, agents["gpu2"], "main") == "HTTP/1.1 200 OK"
    assert asks_readyz(STRANGER, agents["gpu2"], "main") in ("closed unanswered", "reset")
    gpu2 = hosts["gpu2"]
    falls_to_the_cpu(gpu2, "main")
    front = free_port()
    c = hosts["gpu1"]
    c.write("/etc/haproxy/fleet.cfg", fleet_cfg(front, server_lines(
        ports, {name: (agents[name], "main") for name in hosts}, where)))
    c.run(["haproxy", "-c", "-f", "/etc/haproxy/fleet.cfg"])
    c.run(["systemd-run", "--unit=fleet", "haproxy", "-f", "/etc/haproxy/fleet.cfg", "-db"])
    time.sleep(3)
    served, failed = split(front, 120)
    print(f"\ntwo hosts, gpu2 on the CPU: {dict(served)} ({failed} failed)")
    assert failed == 0 and served["gpu1"] > 4 * served["gpu2"] > 0, served
    gpu2.run(["llm-supervisorctl", "stop", "main"])
    time.sleep(2)
    served, failed = split(front, 30)
    assert served == Counter({"gpu1": 30}) and failed == 0, (served, failed)
