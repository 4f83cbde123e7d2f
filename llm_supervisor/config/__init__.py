"""The declarative config: TOML files merged, then validated into frozen, comparable models.

Two parts: ``schema`` (the models, their validators and bounds: what a valid config is) and
``load`` (reading ``supervisor.toml`` and ``conf.d``, merging ``[[engine]]`` tables by name,
and errors that name the file and key). Callers import from here, as they did when the config
was one module; the tier names the schema validates against live in ``llm_supervisor.tiers``
and are passed on from here for the callers that still read them as ``config.TIERS``.
"""

from __future__ import annotations

from llm_supervisor.config.load import (
    DEFAULT_CONFIG,
    MAX_DEPTH,
    MAX_FILE,
    config_files,
    load,
    loads,
    parse_toml,
    read_file,
    validate,
)
from llm_supervisor.config.schema import (
    ENV_NAME_RE,
    KIND_DEFAULTS,
    LLAMA_SERVER_OWN_FLAGS,
    MAX_DURATION,
    MAX_SIZE,
    MIN_DURATION,
    NAME_RE,
    POSIX_NAME_RE,
    CanaryEvery,
    Config,
    Duration,
    EngineConfig,
    Failures,
    FallbackSection,
    HealthOverride,
    HealthSection,
    HistorySection,
    Kind,
    LogsSection,
    MetricsSection,
    PositiveDuration,
    RoutingSection,
    Size,
    SupervisorSection,
    TierHost,
    TierOverride,
    TokensPerSecond,
    bounded,
    parse_duration,
    parse_size,
    split_listen,
    unit_path,
)
from llm_supervisor.errors import ConfigError
from llm_supervisor.tiers import GPU_TIERS, TIERS, Tier

__all__ = [
    # loading
    "DEFAULT_CONFIG", "MAX_DEPTH", "MAX_FILE", "ConfigError",
    "config_files", "load", "loads", "parse_toml", "read_file", "validate",
    # the schema
    "Config", "SupervisorSection", "HealthSection", "HealthOverride", "FallbackSection",
    "TierHost", "HistorySection", "MetricsSection", "LogsSection", "RoutingSection",
    "TierOverride", "EngineConfig",
    # its value types, bounds and checks
    "CanaryEvery", "Duration", "Failures", "Kind", "PositiveDuration", "Size", "TokensPerSecond",
    "ENV_NAME_RE", "NAME_RE", "POSIX_NAME_RE", "KIND_DEFAULTS", "LLAMA_SERVER_OWN_FLAGS",
    "MAX_DURATION", "MAX_SIZE", "MIN_DURATION",
    "bounded", "parse_duration", "parse_size", "split_listen", "unit_path",
    # the tiers (their home is llm_supervisor.tiers)
    "GPU_TIERS", "TIERS", "Tier",
]
