"""The exception tree: every error llm-supervisor raises on purpose derives from
``SupervisorError``, and is defined here. (The simulated engine, a program of its own, has its
``PlanError``.)

    SupervisorError
    ├── ConfigError          the configuration is invalid (one line per problem)
    ├── CommandError         an external command failed or timed out
    │   └── SystemdError     systemctl or journalctl failed
    │       └── BusError     systemd's D-Bus answered with an error, or not in time
    ├── UnitFileError        a unit file could not be written, or is not ours
    ├── HTTPError            a control request answered with an error status
    ├── Refused              an operator's intent the engine cannot carry out
    ├── ProtocolError        the daemon answered something that is not our HTTP (client)
    ├── Failure              a CLI command failed: the message and the exit code
    ├── StateError           state.json is missing where it must exist
    ├── AdoptError           an Ollama unit cannot be adopted
    ├── AdviseError          what advice needs could not be found
    └── BundleError          a model bundle cannot be exported or imported

It also holds ``Exit``, ``llm-supervisorctl``'s exit codes, which a ``Failure`` carries.

No imports: the status client imports this on its fast path.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported on the status path; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, Final


class Exit:
    """``llm-supervisorctl``'s exit codes, defined once: the full CLI
    (``control.cli``), the status fast path (``control.ctl``) and the tools return these.
    Plain ints, not an ``enum``: the status path imports no ``enum``."""

    OK: Final = 0           # done (for ``status``: every engine healthy)
    ERROR: Final = 1        # the command failed
    USAGE: Final = 2        # a bad command line (argparse's own code)
    UNHEALTHY: Final = 3    # ``status``: some engine is not healthy
    UNREACHABLE: Final = 4  # the daemon's socket does not answer
    SIGNALLED: Final = 128  # + the signal's number: stopped by it (a closed stdout: SIGPIPE's)


class SupervisorError(Exception):
    """Base class of the errors llm-supervisor raises on purpose."""


class ConfigError(SupervisorError):
    """The configuration is invalid. ``problems`` holds one line per error."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CommandError(SupervisorError):
    """An external command failed, timed out or could not be started."""

    def __init__(self, argv: list[str], message: str, *, returncode: int | None = None,
                 output: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(f"{' '.join(argv)}: {message}")


class SystemdError(CommandError):
    """systemctl or journalctl failed."""


class BusError(SystemdError):
    """systemd answered a D-Bus call with an error, or did not answer in time."""


class UnitFileError(SupervisorError):
    """A unit file could not be written, or is not ours to touch."""


class HTTPError(SupervisorError):
    """A control request ends with this status and JSON ``{"error", "detail"}``."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


class Refused(SupervisorError):
    """An intent the engine cannot carry out: the HTTP status that says why, and details."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


class ProtocolError(SupervisorError):
    """The daemon answered something that is not the HTTP we expect."""


class Failure(SupervisorError):
    """A CLI command failed: what to print, and the exit code."""

    def __init__(self, message: str, code: int = Exit.ERROR) -> None:
        super().__init__(message)
        self.code = code


class StateError(SupervisorError):
    """``state.json`` is missing where it must exist (a corrupt one is moved aside instead)."""


class AdoptError(SupervisorError):
    """An existing Ollama unit cannot be adopted; nothing was changed."""


class AdviseError(SupervisorError):
    """What the advice needs could not be found (model shape, GPU memory)."""


class BundleError(SupervisorError):
    """A model or bundle that cannot be exported or imported; nothing was left behind."""
