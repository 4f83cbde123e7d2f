"""What the control plane may see of the daemon: a narrow, typed, read-only view (and the one
thing it may ask for, a reload). Handlers read through this; they never write into an engine
(operator actions are intents, ``llm_supervisor.intents``) and never import the daemon or the CLI.
``llm_supervisor.daemon.Supervisor`` provides it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llm_supervisor.config import Config
    from llm_supervisor.engine import Engine
    from llm_supervisor.host.probes import ProbeResult
    from llm_supervisor.host.tiers import TierChoice
    from llm_supervisor.records.disk import Disk
    from llm_supervisor.records.history import EventLog
    from llm_supervisor.records.memory import State
    from llm_supervisor.records.metrics import Metrics
    from llm_supervisor.systemd.systemctl import Systemd
    from llm_supervisor.systemd.units import HostFacts


class Daemon(Protocol):
    @property
    def config(self) -> Config: ...
    @property
    def config_error(self) -> list[str] | None: ...
    @property
    def config_path(self) -> Path: ...
    @property
    def started_at(self) -> float: ...
    @property
    def engines(self) -> Mapping[str, Engine]: ...
    @property
    def probes(self) -> Mapping[str, ProbeResult]: ...
    @property
    def hostfacts(self) -> HostFacts: ...
    @property
    def systemd(self) -> Systemd: ...
    @property
    def events(self) -> EventLog: ...  # read on the disk thread (``disk.run``)
    @property
    def disk(self) -> Disk: ...
    @property
    def state(self) -> State: ...
    @property
    def state_path(self) -> Path: ...
    @property
    def state_error(self) -> str | None: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def generation(self) -> int: ...  # moves with every recorded event: status caches

    def choices(self, engine: Engine) -> list[TierChoice]: ...

    def metrics_text(self) -> bytes: ...

    async def reload(self, door: str) -> tuple[bool, dict[str, Any]]: ...
