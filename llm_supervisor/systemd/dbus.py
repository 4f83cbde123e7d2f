"""systemd over D-Bus: unit state as typed values, changes pushed, jobs tracked.

``BusSystemd`` is a ``Systemd`` whose unit methods (status, start, stop, restart,
reset_failed, daemon_reload) talk to systemd's manager on the system bus (dbus-fast,
asyncio-native). systemd pushes ``PropertiesChanged`` for every unit once we ``Subscribe``;
a change of a watched unit calls ``on_change(unit)``, so the daemon wakes that engine at
once instead of at its next interval. What a person reads (the bundle's journal, the
version) stays with ``systemctl``/``journalctl``.

Every call has a timeout. When the bus cannot be reached (no bus daemon, a bus restart),
each method falls back to ``systemctl`` — supervision never stops — the log says so once,
``describe()`` says so in status, and the adapter reconnects in the background.
systemd's private socket (/run/systemd/private) is not used: it speaks peer-to-peer D-Bus
and never answers the ``Hello`` every dbus-fast connection starts with (tried on
systemd 252).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from llm_supervisor.errors import BusError, SystemdError
from llm_supervisor.systemd.systemctl import UNIT_PROPERTIES, Systemd, UnitStatus

log = structlog.get_logger("llm-supervisor")
T = TypeVar("T")

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNIT_PREFIX = MANAGER_PATH + "/unit/"
MATCHES = (
    f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',member='PropertiesChanged',"
    f"path_namespace='{MANAGER_PATH}/unit'",
    f"type='signal',sender='{SYSTEMD}',interface='{MANAGER}',member='JobRemoved'",
)
# the states worth a check at once: it crashed (auto-restart, failed). Not deactivating or
# inactive (our own restarts and stops pass through them), nor active (a check at exec time
# finds nothing listening yet, and moves the next one a whole interval later).
WAKE_STATES = frozenset({"auto-restart", "failed"})
# which interface holds each property systemctl show reports (UNIT_PROPERTIES)
_SERVICE_PROPERTIES = frozenset({"NRestarts", "ExecMainStatus", "ExecMainCode", "MainPID",
                                 "Result", "ExecMainStartTimestampMonotonic"})


def unit_path(unit: str) -> str:
    """The object path of a unit, by sd-bus label escaping (``-`` → ``_2d``, ``.`` → ``_2e``;
    bytes beyond ASCII letters and digits, and a leading digit, as ``_xx``)."""
    if not unit:
        return UNIT_PREFIX + "_"
    out = []
    for i, byte in enumerate(unit.encode()):
        char = chr(byte)
        keep = char.isascii() and char.isalnum() and not (i == 0 and char.isdigit())
        out.append(char if keep else f"_{byte:02x}")
    return UNIT_PREFIX + "".join(out)


def unit_of_path(path: str) -> str | None:
    """The unit an object path names (the inverse of ``unit_path``), or None."""
    if not path.startswith(UNIT_PREFIX):
        return None
    label = path[len(UNIT_PREFIX):]
    if label == "_":
        return ""
    out, i = bytearray(), 0
    while i < len(label):
        if label[i] == "_":
            try:
                out.append(int(label[i + 1:i + 3], 16))
            except ValueError:
                return None
            i += 3
        else:
            out.append(ord(label[i]))
            i += 1
    return out.decode(errors="replace")


def show_text(value: Any) -> str:
    """A property as ``systemctl show`` prints it, for evidence and ``UnitStatus.raw``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):  # Job: (id, path), an id of 0 for none
        return str(value[0] or "") if value else ""
    return str(value)


def unit_status(unit: str, props: dict[str, Any]) -> UnitStatus:
    """``UnitStatus`` from typed property values (the two interfaces' GetAll, merged)."""
    def number(key: str) -> int:
        value = props.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0
    raw = {k: show_text(props[k]) for k in UNIT_PROPERTIES if k in props}
    return UnitStatus(name=unit, active_state=str(props.get("ActiveState", "unknown")),
                      sub_state=str(props.get("SubState", "unknown")),
                      n_restarts=number("NRestarts"), exec_main_status=number("ExecMainStatus"),
                      main_pid=number("MainPID"), result=str(props.get("Result", "")),
                      load_state=str(props.get("LoadState", "")),
                      need_daemon_reload=props.get("NeedDaemonReload") is True,
                      main_started=number("ExecMainStartTimestampMonotonic") / 1e6,
                      job=job_id(props.get("Job")), raw=raw)


def job_id(value: Any) -> int:
    """The Job property, ``(uo)``: the id of the job queued for the unit, 0 for none."""
    if isinstance(value, list | tuple) and value and isinstance(value[0], int):
        return value[0]
    return 0


class BusSystemd(Systemd):
    """systemd's manager over D-Bus, with ``systemctl`` as the fallback."""

    def __init__(self, *, call_timeout: float = 10.0, job_timeout: float = 90.0,
                 bus_address: str | None = None, retry: float = 5.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.call_timeout = call_timeout
        self.job_timeout = job_timeout
        self.bus_address = bus_address
        self.retry = retry
        self.bus: MessageBus | None = None
        self.down: str | None = "not connected yet"  # why the bus is not used, or None
        self.on_change: Callable[[str], None] | None = None
        self.jobs: dict[str, asyncio.Future[str]] = {}  # job path -> its result, awaited
        self.finished: dict[str, str] = {}  # job path -> result, for jobs done before awaited
        # unit -> its status as last read; dropped on any PropertiesChanged of the unit, any
        # job or reload through us, and a lost connection: a unit that does not change
        # costs no call at all
        self.cache: dict[str, UnitStatus] = {}
        self.changes: dict[str, int] = {}  # unit -> signals seen (a read racing one is not kept)
        self._reconnect: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ connection

    async def connect(self) -> bool:
        """Connect and subscribe; False (and systemctl from then on) when the bus is away.
        Reconnects in the background after a failure or a lost connection."""
        try:
            bus = MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM)
            bus = await asyncio.wait_for(bus.connect(), self.call_timeout)
        except Exception as exc:  # no socket, auth refused, a timeout: all the same to us
            self._went_down(f"cannot connect to the system bus: {exc or type(exc).__name__}")
            return False
        self.bus = bus
        bus.add_message_handler(self._on_message)
        try:
            for rule in MATCHES:
                await self._call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                 "org.freedesktop.DBus", "AddMatch", "s", [rule])
            await self._call(SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")
        except SystemdError as exc:
            self.bus = None
            bus.disconnect()
            self._went_down(f"systemd did not subscribe us on the system bus: {exc}")
            return False
        if self.down:
            log.info("systemd over D-Bus", bus=self.bus_address or "system", unique=bus.unique_name)
        self.down = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch_disconnect(bus))
        return True

    def describe(self) -> str:
        """How systemd is reached, for status: ``dbus`` or ``systemctl (why)``."""
        return "dbus" if self.down is None else f"systemctl ({self.down})"

    def _went_down(self, why: str) -> None:
        if self.down is None or self.down == "not connected yet":
            log.warning("D-Bus unreachable; watching units with systemctl until it is back",
                        error=why)
        self.down = why
        self.bus = None
        self.cache.clear()
        for future in self.jobs.values():
            if not future.done():
                future.set_exception(BusError([MANAGER], why))
        self.jobs.clear()
        if not self._closing and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_later())

    async def _reconnect_later(self) -> None:
        while self.bus is None and not self._closing:
            await asyncio.sleep(self.retry)
            await self.connect()

    async def _watch_disconnect(self, bus: MessageBus) -> None:
        try:
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            why = "the bus connection closed"
        except Exception as exc:
            why = f"the bus connection failed: {exc!r}"
        if self.bus is bus and not self._closing:
            self._went_down(why)

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            await asyncio.gather(self._reconnect, return_exceptions=True)
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)

    # ------------------------------------------------------------------ signals

    def _on_message(self, msg: Message) -> None:
        """Signals: a unit crashed (``WAKE_STATES``) → ``on_change(unit)``; a job
        ended → whoever waits for it."""
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.member == "PropertiesChanged" and msg.interface == PROPERTIES:
            if len(msg.body) < 2:
                return
            unit = unit_of_path(msg.path or "")
            if not unit:
                return
            self._forget(unit)
            if msg.body[0] != UNIT or self.on_change is None:
                return
            changed = msg.body[1]
            states = {changed[k].value for k in ("ActiveState", "SubState") if k in changed}
            if states & WAKE_STATES:
                self.on_change(unit)
        elif msg.member == "JobRemoved" and msg.interface == MANAGER and len(msg.body) >= 4:
            _, job, unit, result = msg.body[:4]
            future = self.jobs.pop(job, None)
            if future is not None:
                if not future.done():
                    future.set_result(result)
                return
            # the reply naming the job may not have reached its caller yet
            self.finished[job] = result
            while len(self.finished) > 256:
                del self.finished[next(iter(self.finished))]

    # ------------------------------------------------------------------ calls

    async def _call(self, destination: str, path: str, interface: str, member: str,
                    signature: str = "", body: list[Any] | None = None) -> list[Any]:
        bus = self.bus
        what = [f"dbus:{member}", *(str(b) for b in body or [])]
        if bus is None:
            raise BusError(what, self.down or "not connected")
        message = Message(destination=destination, path=path, interface=interface,
                          member=member, signature=signature, body=body or [])
        try:
            reply = await asyncio.wait_for(bus.call(message), self.call_timeout)
        except TimeoutError:
            raise BusError(what, f"no answer within {self.call_timeout:g}s") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection broke under the call
            if self.bus is bus:
                self._went_down(f"{member}: {exc!r}")
            raise BusError(what, f"the bus failed: {exc!r}") from exc
        if reply is None:
            raise BusError(what, "no reply")
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            raise BusError(what, f"{reply.error_name}: {text}".rstrip(": "))
        return list(reply.body)

    async def _manager(self, member: str, signature: str = "", body: list[Any] | None = None
                       ) -> list[Any]:
        return await self._call(SYSTEMD, MANAGER_PATH, MANAGER, member, signature, body)

    async def _job(self, member: str, unit: str, *, wait: bool) -> None:
        """A unit job through the manager (``replace`` mode), as ``systemctl`` queues it;
        with ``wait``, until systemd reports the job removed (JobRemoved), within
        ``job_timeout``."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._forget(unit)
        (job,) = await self._manager(member, "ss", [unit, "replace"])
        if not wait:
            return
        if job in self.finished:
            future.set_result(self.finished.pop(job))
        else:
            self.jobs[job] = future
        try:
            result = await asyncio.wait_for(future, self.job_timeout)
        except TimeoutError:
            raise BusError([f"dbus:{member}", unit], f"job {job} not finished within"
                           f" {self.job_timeout:g}s") from None
        finally:
            self.jobs.pop(job, None)
        if result not in ("done", "skipped"):
            raise BusError([f"dbus:{member}", unit], f"job {result}")

    async def _bus_or_systemctl(self, fast: Callable[[], Awaitable[T]],
                                slow: Callable[[], Awaitable[T]]) -> T:
        """The bus when connected; systemctl when not, or when the bus itself broke."""
        if self.bus is None:
            return await slow()
        try:
            return await fast()
        except BusError:
            if self.bus is None:  # the connection went down under the call
                return await slow()
            raise

    # ------------------------------------------------------------------ Systemd's methods

    def _forget(self, unit: str | None = None) -> None:
        """Drop what we know of a unit (of every unit: None)."""
        if unit is None:
            self.cache.clear()
            for name in self.changes:
                self.changes[name] += 1
            return
        self.cache.pop(unit, None)
        self.changes[unit] = self.changes.get(unit, 0) + 1

    async def status(self, unit: str, *, fresh: bool = False) -> UnitStatus:
        """The unit's state: as last read unless it changed since (systemd says so), or
        ``fresh``: read now (``NeedDaemonReload`` changes with files on disk, unsignalled)."""
        cached = self.cache.get(unit)
        if cached is not None and not fresh and self.bus is not None:
            return cached

        async def fast() -> UnitStatus:
            seen = self.changes.get(unit, 0)
            path = unit_path(unit)
            unit_props: list[Any] | BaseException
            service_props: list[Any] | BaseException
            unit_props, service_props = await asyncio.gather(
                self._call(SYSTEMD, path, PROPERTIES, "GetAll", "s", [UNIT]),
                self._call(SYSTEMD, path, PROPERTIES, "GetAll", "s", [SERVICE]),
                return_exceptions=True)
            if isinstance(unit_props, BaseException):
                raise unit_props
            props = {k: v.value for k, v in unit_props[0].items()}
            if isinstance(service_props, BaseException):  # not loaded: no Service interface
                if props.get("LoadState") == "loaded":
                    raise service_props
            else:
                props.update({k: v.value for k, v in service_props[0].items()
                              if k in _SERVICE_PROPERTIES})
            status = unit_status(unit, props)
            if self.changes.get(unit, 0) == seen and self.bus is not None:
                self.cache[unit] = status
            return status
        return await self._bus_or_systemctl(fast, lambda: super(BusSystemd, self).status(unit))

    async def start(self, unit: str) -> None:
        await self._bus_or_systemctl(lambda: self._job("StartUnit", unit, wait=False),
                                     lambda: super(BusSystemd, self).start(unit))

    async def restart(self, unit: str) -> None:
        await self._bus_or_systemctl(lambda: self._job("RestartUnit", unit, wait=False),
                                     lambda: super(BusSystemd, self).restart(unit))

    async def stop(self, unit: str) -> None:
        await self._bus_or_systemctl(lambda: self._job("StopUnit", unit, wait=True),
                                     lambda: super(BusSystemd, self).stop(unit))

    async def reset_failed(self, unit: str) -> None:
        async def fast() -> None:
            self._forget(unit)
            try:
                await self._manager("ResetFailedUnit", "s", [unit])
            except BusError as exc:
                if "NoSuchUnit" not in str(exc):
                    raise  # a unit not loaded has nothing to reset
        await self._bus_or_systemctl(fast, lambda: super(BusSystemd, self).reset_failed(unit))

    async def daemon_reload(self) -> None:
        # Reload answers once the reload is done, as `systemctl daemon-reload` waits for it
        self._forget()
        await self._bus_or_systemctl(lambda: self._manager("Reload"),
                                     lambda: super(BusSystemd, self).daemon_reload())
        self._forget()


__all__ = ["BusError", "BusSystemd", "unit_of_path", "unit_path", "unit_status"]
