"""The record, kept in one place: the event log, ``state.json``, ``STATUS=`` and the metrics.

An engine hands over each check as its plain view and the check's events (``commit``): the
view is kept (``STATUS=`` and the metrics read the views kept, never the engines), the events
are appended in order (on the disk thread), then the state is saved once, one ``STATUS=``
line is sent and the metrics textfile written once. The daemon's own events (reloads,
probes, start) go through ``event``. Nothing here decides or acts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from llm_supervisor.records.disk import Disk
from llm_supervisor.records.history import EventLog
from llm_supervisor.records.memory import State, dumps_state
from llm_supervisor.records.metrics import EngineView, Metrics, SupervisorView
from llm_supervisor.timefmt import ago, utc

log = structlog.get_logger("llm-supervisor")
NO_ENGINES = ("no engines configured: edit /etc/llm-supervisor or run"
              " `llm-supervisorctl adopt ollama.service`")


class Recorder:
    def __init__(self, *, events: EventLog, disk: Disk, state: State, state_path: Path,
                 notify: Callable[[str], None],
                 gauges: Callable[[], tuple[Mapping[str, bool], SupervisorView]],
                 before_save: Callable[[], None] = lambda: None) -> None:
        self.events = events
        self.disk = disk
        self.state = state
        self.state_path = state_path
        self.views: dict[str, EngineView] = {}  # each engine's, as its last check left it
        self.notify = notify
        self.gauges = gauges  # what the metrics read besides the engines: probes, health
        self.before_save = before_save  # the journal's cursor goes into the state
        self.metrics = Metrics()
        self.generation = 0  # bumped by every event: see handlers.StatusCache
        self.textfile_dir: Path | None = None

    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append to the history (queued for the disk thread, in order), and count it in the
        metrics."""
        self.generation += 1  # the cached status document is stale
        self.disk.submit("record event", self.events.append, type, **fields)
        event = {"type": type, "from": fields.get("from_"),
                 **{k: v for k, v in fields.items() if k != "from_"}}
        self.metrics.observe_event(event)
        return event

    def show(self, view: EngineView) -> None:
        """An engine's view as it is now (a new engine shows before its first check)."""
        self.views[view.name] = view

    def forget(self, engine: str) -> None:
        """An engine no longer supervised: gone from STATUS= and the metrics."""
        self.views.pop(engine, None)

    def commit(self, view: EngineView, events: list[tuple[str, dict[str, Any]]]) -> None:
        """An engine's check, recorded once: its view kept; its events, if any, in order,
        then one state save, one STATUS= and one metrics update."""
        self.show(view)
        if not events:
            return
        engine = view.name
        for type, fields in events:
            try:
                self.event(type, engine=engine, **fields)
            except OSError as exc:  # a full disk must not stop a decision
                log.error("cannot record event", engine=engine, error=str(exc))
        self.save()
        self.update_status()
        self.write_metrics_textfile()

    def save(self) -> None:
        self.before_save()
        try:
            text = dumps_state(self.state)
        except (TypeError, ValueError) as exc:
            log.error("cannot encode the state", error=str(exc))
            return
        self.disk.write_state(self.state_path, text)  # a failure shows as state_error

    @property
    def state_error(self) -> str | None:
        """Why state.json could not be written last time (a full disk), or None."""
        return self.disk.state_error

    def summary(self) -> str:
        return "; ".join(summary_of(view, time.time()) for view in self.views.values()) or \
            NO_ENGINES

    def update_status(self) -> None:
        # sdnotify encodes latin-1: keep the line plain
        self.notify("STATUS=" + self.summary().encode("latin-1", "replace").decode("latin-1"))

    def metrics_text(self) -> bytes:
        probes, health = self.gauges()
        self.metrics.refresh(list(self.views.values()), dict(probes),
                             health)
        return self.metrics.render()

    def write_metrics_textfile(self) -> None:
        directory = self.textfile_dir
        if directory is None:
            return
        self.metrics_text()
        self.disk.submit(f"write the metrics textfile in {directory}",
                         self.metrics.write_textfile, directory)


def summary_of(view: EngineView, now: float) -> str:
    """One engine in ``STATUS=``: ``main: healthy on vulkan (demoted from rocm 4m ago)``."""
    text = f"{view.name}: {view.state}"
    if view.tier:
        text += f" on {view.tier}"
    if view.pinned:
        text += " (pinned)"
    elif view.demoted_from and view.demoted_from != view.tier:
        when = utc(view.demoted_at) if view.demoted_at else None
        text += f" (demoted from {view.demoted_from} {ago(when, now)})"
    if view.trouble:
        text += f": {view.trouble}"
    return text
