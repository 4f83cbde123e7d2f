"""The config's schema: frozen, comparable pydantic models and the validators of their values.

Every key of ``supervisor.toml`` is a field here, with its type, default and bounds; an unknown
key is refused (``extra="forbid"``). Reading and merging the files, and turning validation errors
into lines that name the file and key, is ``load``'s job: this module reads no file.
"""

from __future__ import annotations

import ipaddress
import math
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from llm_supervisor import pci
from llm_supervisor.tiers import TIERS, Tier

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
POSIX_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MIN_DURATION = 0.001              # 1ms: anything shorter is a typo, or a busy loop
MAX_DURATION = 365 * 86400.0      # 365d
MAX_SIZE = 1 << 40                # 1TiB
MAX_CARD = 63                     # a card's number in `gpus`


# --------------------------------------------------------------------------- value types

def parse_duration(value: Any) -> float:
    """``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"1d"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string like '5s' or a number of seconds, not a boolean")
    shown = repr(value) if not isinstance(value, str) or len(value) < 40 else "(too long)"
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        match = _DURATION.match(value) if len(value) < 40 else None
        if not match:
            raise ValueError(f"bad duration {shown}: use e.g. '500ms', '5s', '2m', '1h'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"bad duration {shown}: use e.g. '500ms', '5s', '2m', '1h'")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION \
            or 0 < seconds < MIN_DURATION:
        raise ValueError(f"bad duration {shown}: must be 0 or between 1ms and 365d")
    return seconds


def _positive_duration(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise ValueError("must be greater than zero (between 1ms and 365d)")
    return value


def bounded(low: float, high: float) -> BeforeValidator:
    """A finite number within [low, high], the bounds named in the error."""
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number between {low:g} and {high:g}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not (math.isfinite(number) and low <= number <= high):
            shown = repr(value) if len(repr(value)) < 40 else "(a huge number)"
            raise ValueError(f"{shown} is out of bounds: must be a finite number between"
                             f" {low:g} and {high:g}")
        return number
    return BeforeValidator(check)


def unit_path(value: str) -> str:
    """A path written unquoted into a unit (``ReadWritePaths=``, ``EnvironmentFile=``): absolute,
    and nothing that systemd would read as structure: no whitespace, quotes, backslash (a
    trailing one joins the next line), ``%`` specifiers or control characters."""
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    bad = sorted({ch for ch in value if ch in "\\\"'%;" or ch.isspace() or not ch.isprintable()})
    if bad:
        raise ValueError(f"{value!r}: {' '.join(map(repr, bad))} cannot go into a unit file"
                         " unquoted; use a path without them")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration),
                             AfterValidator(_positive_duration)]
Failures = Annotated[int, Field(ge=1, le=1000)]
CanaryEvery = Annotated[int, Field(ge=0, le=1_000_000)]
TokensPerSecond = Annotated[float, bounded(0, 1e6)]
Kind = Literal["ollama", "vllm", "llama-server"]


def _check_chain(chain: list[str]) -> list[str]:
    if not chain:
        raise ValueError("the chain must name at least one tier")
    seen: set[str] = set()
    for tier in chain:
        if tier in seen:
            raise ValueError(f"tier {tier!r} appears twice in the chain")
        seen.add(tier)
    return chain


def _check_environment(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not ENV_NAME_RE.match(key):
            raise ValueError(f"bad environment variable name {key!r}: use letters, digits, '_'")
    return env


def _check_exec(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot parse command line {value!r}: {exc}") from None
    if not words:
        raise ValueError("the command line is empty")
    if not words[0].startswith("/"):
        raise ValueError(f"the program must be an absolute path, got {words[0]!r}")
    return value


def _default_exec(kind: str, model: str, host: str, port: int, default: str) -> str:
    """The command line of an engine that gives none: ``vllm serve`` of its model on its
    address, the kind's default for Ollama; a llama-server has no default, since only its
    owner knows the build and the model file."""
    if kind == "vllm":
        if not model:
            raise ValueError("a vllm engine needs `model` (or an explicit `exec`)")
        return f"/usr/local/bin/vllm serve {shlex.quote(model)} --host {host} --port {port}"
    if kind == "llama-server":
        raise ValueError("a llama-server engine needs `exec`, the build to run and its"
                         " model, e.g. \"/usr/local/bin/llama-server -m"
                         " /var/lib/llama/model.gguf\"")
    return default


def _check_llama_flags(commands: tuple[str | None, ...]) -> None:
    """Refuse a llama-server command line that sets what the supervisor sets itself: the
    address (from ``listen``) and the device (from the tier)."""
    for command in commands:
        for word in shlex.split(command or ""):
            if word.split("=", 1)[0] in LLAMA_SERVER_OWN_FLAGS:
                raise ValueError(f"leave {word.split('=', 1)[0]} out of a llama-server"
                                 " `exec`: `listen` sets the address and the tier"
                                 " the device")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- sections

class SupervisorSection(_Model):
    socket: Path = Path("/run/llm-supervisor/control.sock")
    socket_group: str = "llm-supervisor"
    state_dir: Path = Path("/var/lib/llm-supervisor")
    unit_dir: Path = Path("/etc/systemd/system")
    watch_config: bool = True
    probe_timeout: PositiveDuration = 10.0
    kfd_path: Path = Path("/dev/kfd")
    boot_id_path: Path = Path("/proc/sys/kernel/random/boot_id")  # a reboot changes it

    @field_validator("socket", "state_dir", "unit_dir", "kfd_path", "boot_id_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"must be an absolute path, got {str(value)!r}")
        return value


class HealthSection(_Model):
    interval: PositiveDuration = 5.0
    timeout: PositiveDuration = 3.0
    failures: Failures = 3
    startup_grace: Duration = 120.0
    canary_every: CanaryEvery = 6
    canary_timeout: PositiveDuration = 30.0
    load_timeout: PositiveDuration | None = None  # None: startup_grace (at least canary_timeout)
    stall_after: PositiveDuration = 60.0
    blind_timeout: PositiveDuration = 300.0
    min_tokens_per_second: TokensPerSecond = 0.0

    @property
    def load_deadline(self) -> float:
        """How long the first generation after a (re)start may take: it loads the model."""
        if self.load_timeout is not None:
            return self.load_timeout
        return max(self.startup_grace, self.canary_timeout)


class HealthOverride(_Model):
    """``[engine.health]``: any subset of ``[health]``, validated exactly like it."""

    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    failures: Failures | None = None
    startup_grace: Duration | None = None
    canary_every: CanaryEvery | None = None
    canary_timeout: PositiveDuration | None = None
    load_timeout: PositiveDuration | None = None
    stall_after: PositiveDuration | None = None
    blind_timeout: PositiveDuration | None = None
    min_tokens_per_second: TokensPerSecond | None = None


class FallbackSection(_Model):
    chain: tuple[Tier, ...] = TIERS
    restarts_per_tier: int = Field(1, ge=0, le=100)
    promote_after: Duration = 1800.0
    promote_backoff: Annotated[float, bounded(1, 100)] = 2.0
    probation: Duration = 600.0      # a promoted tier failing within this is a failed promotion
    # healthy this long on a tier, the restarts used on it are forgotten: two transient hangs
    # weeks apart each get their restart, never a demotion
    restarts_refill_after: Duration = 3600.0

    _chain = field_validator("chain")(lambda cls, v: tuple(_check_chain(list(v))))


class TierHost(_Model):
    available: Literal["auto", "always", "never"] = "auto"


def _check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
    return patterns


def parse_size(value: Any) -> int:
    """``"64MiB"``, ``"512KiB"``, ``"1GiB"`` or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is a string like '64MiB' or a number of bytes")
    shown = repr(value) if len(str(value)) < 40 else "(too long)"
    if isinstance(value, int):
        size = value
    else:
        match = re.match(r"^\s*(\d{1,30})\s*(B|KiB|MiB|GiB)?\s*$", str(value)[:40])
        if not match:
            raise ValueError(f"bad size {shown}: use e.g. '512KiB', '64MiB', '1GiB',"
                             " between 1B and 1024GiB")
        size = int(match.group(1)) * {"B": 1, "KiB": 1024, "MiB": 1 << 20,
                                      "GiB": 1 << 30, None: 1}[match.group(2)]
    if not 0 < size <= MAX_SIZE:
        raise ValueError(f"bad size {shown}: must be between 1B and 1024GiB")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]


class HistorySection(_Model):
    """The event history: rotated by size into zstd segments, pruned to a budget."""

    segment_size: Size = 1 << 20      # rotate current.jsonl past this
    max_size: Size = 64 << 20         # all compressed segments together stay within this


class MetricsSection(_Model):
    textfile_dir: Path | None = None  # node-exporter textfile collector directory, if any

    @field_validator("textfile_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, got {str(value)!r}")
        return value


class AgentSection(_Model):
    """The balancer's port (``control/agent.py``): HAProxy's agent-check and ``/readyz``."""

    enabled: bool = False
    listen: str = "127.0.0.1:9777"
    allow: tuple[str, ...] = ("127.0.0.1", "::1")  # the balancers' addresses or networks
    full_speed: Annotated[float, Field(gt=0, le=1e6)] | None = None  # tokens/s of 100 %
    interval: PositiveDuration = 2.0       # the balancer's agent-inter: it hears us this often
    drain_timeout: Duration = 120.0        # a planned switch waits this long at most

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or a network (e.g. 10.0.0.5,"
                                 " 10.0.0.0/24)") from None
        return value


class LogsSection(_Model):
    """The log classifier: where the kernel's lines come from, and extra patterns."""

    kernel_match: str = "_TRANSPORT=kernel"   # journalctl matches, space-separated
    gpu_fault: tuple[str, ...] = ()
    discovery: tuple[str, ...] = ()
    placement: tuple[str, ...] = ()
    oom: tuple[str, ...] = ()
    reset: tuple[str, ...] = ()
    fatal_reset: tuple[str, ...] = ()

    _patterns = field_validator("gpu_fault", "discovery", "placement", "oom", "reset",
                                "fatal_reset")(lambda cls, v: _check_patterns(v))

    @field_validator("kernel_match")
    @classmethod
    def _matches(cls, value: str) -> str:
        for word in value.split():
            if word != "+" and not re.match(r"^[A-Z0-9_]+=", word):
                raise ValueError(f"bad journal match {word!r}: use FIELD=value (or +)")
        return value

    def extra(self) -> dict[str, tuple[str, ...]]:
        return {name: getattr(self, name) for name in
                ("gpu_fault", "discovery", "placement", "oom", "reset", "fatal_reset")}


class RoutingSection(_Model):
    fallback_url: str = ""

    @field_validator("fallback_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value


class TierOverride(_Model):
    exec: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)

    _exec = field_validator("exec")(lambda cls, v: _check_exec(v))
    _env = field_validator("environment")(lambda cls, v: _check_environment(v))


KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "ollama": {"exec": "/usr/local/bin/ollama serve", "listen": "127.0.0.1:11434",
               "user": "ollama", "group": "ollama", "writable": ("/usr/share/ollama",)},
    "vllm": {"exec": None, "listen": "127.0.0.1:8000",
             "user": "vllm", "group": "vllm", "writable": ("/var/lib/vllm",)},
    # llama.cpp has no standard install path: `exec` names the build (and its -m model)
    "llama-server": {"exec": None, "listen": "127.0.0.1:8080",
                     "user": "llama", "group": "llama", "writable": ("/var/lib/llama",)},
}
# llama-server takes its address from the unit (LLAMA_ARG_HOST/PORT, from `listen`) and its
# device from the tier: the same flags on its command line would win over both.
LLAMA_SERVER_OWN_FLAGS = ("--host", "--port", "-dev", "--device")


class EngineConfig(_Model):
    name: str
    kind: Kind = "ollama"
    exec: str = ""
    listen: str = ""
    model: str = ""
    pull: bool = False               # pull a missing model through the engine's API
    api_key_file: str = ""           # the key the engine requires, read by the canary
    user: str = ""
    group: str = ""
    environment: dict[str, str] = Field(default_factory=dict)
    environment_file: str = ""  # an EnvironmentFile= the operator owns (secrets)
    writable: tuple[str, ...] | None = None
    chain: tuple[Tier, ...] | None = None
    health: HealthOverride = HealthOverride()
    tiers: dict[Tier, TierOverride] = Field(default_factory=dict)
    gpus: tuple[str, ...] = ()  # its cards: PCI addresses, or numbers among the host's cards

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError("gpus is a list of PCI addresses (\"0000:43:00.0\") or card numbers")
        found: list[str] = []
        for item in value:
            card = _card(item)
            if card in found:
                raise ValueError(f"card {card} is named twice")
            found.append(card)
        return tuple(found)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"bad engine name {value!r}: use ^[a-z0-9][a-z0-9-]{{0,39}}$")
        return value

    _env = field_validator("environment")(lambda cls, v: _check_environment(v))

    @field_validator("chain")
    @classmethod
    def _chain(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else tuple(_check_chain(list(value)))

    @field_validator("api_key_file")
    @classmethod
    def _key_file(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"must be an absolute path, got {value!r}")
        return value

    @field_validator("user", "group")
    @classmethod
    def _posix_name(cls, value: str) -> str:
        if value and not POSIX_NAME_RE.match(value):
            raise ValueError(f"bad user/group name {value!r}")
        return value

    @field_validator("environment_file")
    @classmethod
    def _environment_file(cls, value: str) -> str:
        if value and (not value.startswith("/") or re.search(r"[\x00-\x20\x7f]", value)):
            raise ValueError(f"environment_file must be an absolute path without spaces: {value!r}")
        return value

    @field_validator("writable")
    @classmethod
    def _writable(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for path in value or ():
            unit_path(path)
        return value

    @model_validator(mode="after")
    def _kind_defaults(self) -> EngineConfig:
        """Fill what the engine leaves out from its kind's defaults (``KIND_DEFAULTS``) and
        check its command line."""
        defaults = KIND_DEFAULTS[self.kind]
        fill: dict[str, Any] = {}
        for key in ("listen", "user", "group"):
            if not getattr(self, key):
                fill[key] = defaults[key]
        if self.writable is None:
            fill["writable"] = defaults["writable"]
        host, port = split_listen(fill.get("listen", self.listen))
        if not self.exec:
            fill["exec"] = _default_exec(self.kind, self.model, host, port, defaults["exec"])
        else:
            _check_exec(self.exec)
        if self.kind == "llama-server":
            _check_llama_flags((self.exec, *(t.exec for t in self.tiers.values() if t.exec)))
        for key, value in fill.items():
            object.__setattr__(self, key, value)
        return self

    @property
    def unit(self) -> str:
        return f"llm-{self.name}.service"

    @property
    def endpoint(self) -> str:
        host, port = split_listen(self.listen)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"


def _card(item: Any) -> str:
    """One of ``gpus``: a PCI address, written ``0000:43:00.0``, or a card's number among
    the host's cards ordered by address (resolved when the host is probed)."""
    if isinstance(item, int) and not isinstance(item, bool):
        if not 0 <= item <= MAX_CARD:
            raise ValueError(f"card number {item} is out of range (0-{MAX_CARD})")
        return str(item)
    if isinstance(item, str):
        if item.strip().isdigit():
            return _card(int(item.strip()))
        found = pci.address(item)
        if found is not None:
            return found
    raise ValueError(f"{item!r} is neither a PCI address (0000:43:00.0) nor a card number")


def split_listen(listen: str) -> tuple[str, int]:
    match = re.match(r"^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$", listen)
    if not match or not 0 < int(match.group(3)) < 65536:
        raise ValueError(f"bad listen address {listen!r}: use HOST:PORT, e.g. 127.0.0.1:11434")
    return match.group(1) or match.group(2), int(match.group(3))


class Config(_Model):
    supervisor: SupervisorSection = SupervisorSection()
    health: HealthSection = HealthSection()
    fallback: FallbackSection = FallbackSection()
    tiers: dict[Tier, TierHost] = Field(default_factory=dict)
    routing: RoutingSection = RoutingSection()
    logs: LogsSection = LogsSection()
    history: HistorySection = HistorySection()
    metrics: MetricsSection = MetricsSection()
    agent: AgentSection = AgentSection()
    engines: tuple[EngineConfig, ...] = Field(default=(), alias="engine")
    files: tuple[str, ...] = ()

    @field_validator("engines")
    @classmethod
    def _listen(cls, engines: tuple[EngineConfig, ...]) -> tuple[EngineConfig, ...]:
        for engine in engines:
            split_listen(engine.listen)
        return engines

    @model_validator(mode="after")
    def _unique_listen(self) -> Config:
        seen: dict[str, str] = {}
        for engine in self.engines:
            if engine.listen in seen:
                raise ValueError(f"engines {seen[engine.listen]!r} and {engine.name!r} both"
                                 f" listen on {engine.listen}")
            seen[engine.listen] = engine.name
        return self

    def engine(self, name: str) -> EngineConfig | None:
        return next((e for e in self.engines if e.name == name), None)

    def health_for(self, engine: EngineConfig) -> HealthSection:
        override = engine.health.model_dump(exclude_none=True)
        return self.health.model_copy(update=override) if override else self.health

    def chain_for(self, engine: EngineConfig) -> tuple[str, ...]:
        return engine.chain or self.fallback.chain

    def availability(self, tier: str) -> str:
        host = self.tiers.get(tier)  # type: ignore[call-overload]
        return host.available if host else "auto"
