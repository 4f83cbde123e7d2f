"""What the control plane may see of the daemon: a narrow, typed, read-only view (and the one
thing it may ask for, a reload). Handlers read through this; they never write into an engine
(operator actions are intents, ``supervisor.intents``) and never import the daemon or the CLI.
``supervisor.daemon.Supervisor`` provides it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from supervisor.config import Config
    from supervisor.engine import Engine
    from supervisor.host.probes import ProbeResult
    from supervisor.host.tiers import TierChoice
    from supervisor.records.disk import Disk
    from supervisor.records.history import EventLog
    from supervisor.records.memory import State
    from supervisor.records.metrics import Metrics
    from supervisor.systemd.systemctl import Systemd
    from supervisor.systemd.units import HostFacts


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
    def host(self) -> HostFacts: ...
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
