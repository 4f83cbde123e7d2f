"""A support bundle with the daemon down (``llm-supervisorctl bundle`` when its socket does
not answer): the moment it is needed most. As root, read from where the daemon keeps it —
the config (or its files as they are, with why they do not load), the unit files, the state,
the events, the journals of the daemon, the engines and the kernel, the host's probes, the
versions — and written as the daemon writes its own (``records.support``: secrets redacted).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from llm_supervisor.config import DEFAULT_CONFIG, Config, load
from llm_supervisor.errors import ConfigError, SupervisorError
from llm_supervisor.host.probes import probe_all
from llm_supervisor.records import support
from llm_supervisor.records.history import EventLog
from llm_supervisor.systemd.systemctl import Systemd

DEFAULT_UNITS = Path("/etc/systemd/system")
DEFAULT_STATE = Path("/var/lib/llm-supervisor")


def files(why_down: str, config_path: Path = DEFAULT_CONFIG) -> dict[str, str]:
    """The bundle's files, read without the daemon (``why_down``: what the socket said)."""
    return asyncio.run(_files(why_down, config_path))


async def _files(why_down: str, config_path: Path) -> dict[str, str]:
    out: dict[str, str] = {"status.json": support.as_json(
        {"daemon": f"not reachable: {why_down}", "collected": "without the daemon"})}
    config = _config(config_path, out)
    unit_dir = config.supervisor.unit_dir if config else DEFAULT_UNITS
    state_dir = config.supervisor.state_dir if config else DEFAULT_STATE
    units = [e.unit for e in config.engines] if config else sorted(
        p.name for p in unit_dir.glob("llm-*.service") if p.name != "llm-supervisor.service")
    for unit in units:
        for relative in (unit, f"{unit}.d/50-tier.conf"):
            out[f"units/{relative}"] = support.read_text(unit_dir / relative)
    out["state.json"] = support.read_text(state_dir / "state.json")
    try:
        events = EventLog(state_dir / "events").read(limit=5000)
        out["events.jsonl"] = "".join(json.dumps(e, default=str) + "\n" for e in events)
    except OSError as exc:
        out["events.jsonl"] = f"(events unreadable: {exc})\n"
    systemd = Systemd()
    journals = {f"journal/{unit.removeprefix('llm-').removesuffix('.service')}.log":
                [f"_SYSTEMD_UNIT={unit}"] for unit in units}
    journals["journal/llm-supervisor.log"] = ["_SYSTEMD_UNIT=llm-supervisor.service"]
    journals["journal/kernel.log"] = (config.logs.kernel_match.split() if config
                                      else ["_TRANSPORT=kernel"])
    for name, matches in journals.items():
        try:
            out[name] = await systemd.journal(*matches, lines=1000)
        except SupervisorError as exc:
            out[name] = f"(journal unavailable: {exc})\n"
    sup = config.supervisor if config else None
    probes = await probe_all(timeout=sup.probe_timeout if sup else 10.0,
                             kfd=str(sup.kfd_path) if sup else "/dev/kfd")
    out["tiers.json"] = support.as_json({"tiers": [p.to_dict() for p in probes.values()]})
    try:
        systemd_version = (await systemd.version()).splitlines()[0]
    except (SupervisorError, IndexError) as exc:
        systemd_version = f"unknown ({exc})"
    out["versions.txt"] = support.versions({"systemd": systemd_version})
    return out


def _config(path: Path, out: dict[str, str]) -> Config | None:
    """The config, its files in ``out``; one that does not load: every *.toml as it is, and
    why it does not load."""
    directory = path.parent
    try:
        config = load(path)
    except ConfigError as exc:
        out["config-problems.txt"] = "\n".join(exc.problems) + "\n"
        for toml in sorted([path, *directory.glob("conf.d/*.toml")]):
            if toml.is_file():
                out[f"config/{toml.relative_to(directory)}"] = support.read_text(toml)
        return None
    for name in config.files:
        file = Path(name)
        relative = file.relative_to(directory) if file.is_relative_to(directory) else file.name
        out[f"config/{relative}"] = support.read_text(file)
    return config


def root() -> bool:
    return os.geteuid() == 0
