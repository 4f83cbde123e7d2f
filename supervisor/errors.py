"""The exception tree: every error llm-supervisor raises on purpose derives from SupervisorError."""

from __future__ import annotations


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


class UnitFileError(SupervisorError):
    """A unit file could not be written, or is not ours to touch."""
