"""Why an engine's unit is down, when it is a cause no tier change can fix, and whether that
cause has gone: functions over the engine's config, what systemd says of the unit and who
holds its port. They read the host where the answer lives there — ``/proc`` (the tier a
process was started for), the user and group databases, whether the program or the model
file exists — but never systemd and never the port table: those answers are the caller's.
"""

from __future__ import annotations

import grp
import pwd
import shlex
from pathlib import Path
from typing import Any

from llm_supervisor.causes import Cause, Finding
from llm_supervisor.config import EngineConfig
from llm_supervisor.host import ports, tiers
from llm_supervisor.systemd.systemctl import UnitStatus

EXIT_STATUS = {200: "CHDIR", 203: "EXEC", 216: "GROUP", 217: "USER", 218: "CAPABILITIES",
               226: "NAMESPACE", 228: "SECCOMP", 233: "RUNTIME_DIRECTORY", 238: "STATE_DIRECTORY"}


def process_tier(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The tier a running engine was started on (``LLM_SUPERVISOR_TIER`` in its environment)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(tiers.TIER_VARIABLE.encode() + b"="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


def program_of(command: str) -> Path:
    words = shlex.split(command)
    return Path(words[0]) if words else Path("/")


def model_of(command: str) -> Path | None:
    """llama-server's model file: ``-m PATH`` / ``--model PATH`` / ``--model=PATH``."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word.startswith("--model="):
            return Path(word.split("=", 1)[1])
        if word in ("-m", "--model") and i + 1 < len(words):
            return Path(words[i + 1])
    return None


def users_exist(engine: EngineConfig) -> bool:
    try:
        pwd.getpwnam(engine.user)
        grp.getgrnam(engine.group)
    except KeyError:
        return False
    return True


def diagnose_unit(engine: EngineConfig, command: str, unit: UnitStatus,
                  holder: ports.Holder | None) -> Finding | None:
    """Why a unit failed, when no tier change can fix it; None for an ordinary crash."""
    status = unit.exec_main_status
    name = EXIT_STATUS.get(status, "")
    evidence = {"ExecMainStatus": status, "Result": unit.result, **unit.raw}
    program = program_of(command)
    if status == 203 or not program.is_file():
        if not program.is_file():
            return Finding(Cause.EXEC_MISSING, f"{program} does not exist",
                           fix=f"install the engine at {program}, or fix `exec`",
                           evidence=evidence, facts={"program": str(program)})
        return Finding(Cause.PERMISSION, f"{program} cannot be executed (exit status 203/EXEC)",
                       fix=f"chmod +x {program}, and keep it outside /home (ProtectHome=)",
                       evidence=evidence, facts={"program": str(program)})
    if status in (216, 217):
        what = "group" if status == 216 else "user"
        value = engine.group if status == 216 else engine.user
        return Finding(Cause.PERMISSION, f"the {what} {value!r} is missing (exit status"
                       f" {status}/{name})", fix=f"create it: `adduser --system --group"
                       f" {engine.user}`, or set the engine's user/group", evidence=evidence)
    if 200 <= status <= 245:
        return Finding(Cause.CONFIG, f"systemd could not set up the engine (exit status {status}"
                       f"/{name or '?'})", fix="`journalctl -u " + engine.unit + "` says why",
                       evidence=evidence)
    return port_finding(engine, holder, evidence)


def port_finding(engine: EngineConfig, holder: ports.Holder | None, evidence: Any
                 ) -> Finding | None:
    """The engine's port is held by another process: name it (PID and unit) and the fix."""
    if holder is None or holder.unit == engine.unit:
        return None
    fix = (f"systemctl disable --now {holder.unit}" if holder.unit and
           holder.unit.endswith(".service") else f"stop pid {holder.pid}") + \
        " (or `llm-supervisorctl adopt` it), or give the engine another `listen`"
    return Finding(Cause.PORT_IN_USE, f"{engine.listen} is held by {holder.describe()}",
                   fix=fix, evidence=evidence, facts={"holder": holder.to_dict()})


def command_of(engine: EngineConfig, tier: str | None) -> str:
    """The command the engine's unit runs on ``tier`` (its override, else ``exec``)."""
    return tiers.tier_exec(engine, tier or "") or engine.exec


def cleared(engine: EngineConfig, tier: str | None, cause: Cause,
            holder: ports.Holder | None) -> bool:
    """Whether a blocking cause has gone: the port is free (or ours), the program or the
    model file exists, the user and group exist."""
    if cause == Cause.PORT_IN_USE:
        return holder is None or holder.unit == engine.unit
    if cause == Cause.EXEC_MISSING:
        return program_of(command_of(engine, tier)).is_file()
    if cause == Cause.PERMISSION:
        return users_exist(engine)
    if cause == Cause.MODEL_MISSING:
        model = model_of(command_of(engine, tier))
        return model is not None and model.is_file()
    return False
