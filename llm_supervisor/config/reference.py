"""Every key of the configuration, its type and its default, read from the schema itself:
``supervisor.toml(5)``'s KEYS section is this text (``dev/manpage.py`` writes it; a test
fails when the page and the schema drift apart)."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from annotated_types import Ge, Le
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llm_supervisor.config import schema

BEGIN = '.\\" BEGIN KEYS: generated from the config schema by dev/manpage.py; do not edit'
END = '.\\" END KEYS'

# (the table as written, its model): the order of the page
SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("[supervisor]", schema.SupervisorSection), ("[health]", schema.HealthSection),
    ("[fallback]", schema.FallbackSection), ("[tiers.TIER]", schema.TierHost),
    ("[routing]", schema.RoutingSection), ("[logs]", schema.LogsSection),
    ("[history]", schema.HistorySection), ("[metrics]", schema.MetricsSection),
    ("[agent]", schema.AgentSection),
    ("[[engine]]", schema.EngineConfig), ("[engine.health]", schema.HealthOverride),
    ("[engine.tiers.TIER]", schema.TierOverride),
)
NESTED = {"health", "tiers"}  # [[engine]]'s tables, given their own sections


def entries() -> Iterator[tuple[str, str, str, str]]:
    """(section, key, type, default) for every key a config file may hold."""
    for section, model in SECTIONS:
        for name, field in model.model_fields.items():
            if model is schema.EngineConfig and name in NESTED:
                continue
            if model is schema.HealthOverride or (model is schema.EngineConfig
                                                  and name == "chain"):
                inherited = "[health]" if model is schema.HealthOverride else "[fallback]"
                yield section, name, type_text(field), f"as in {inherited}"
                continue
            kind = name if model is schema.EngineConfig else ""
            yield section, field.alias or name, type_text(field), default_text(field, kind)


def type_text(field: FieldInfo) -> str:
    return _describe(field.annotation, list(field.metadata))


def _describe(annotation: Any, metadata: list[Any]) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _describe(args[0], [*metadata, *args[1:]])
    if origin in (typing.Union, types.UnionType):
        given = [a for a in args if a is not type(None)]
        return _describe(given[0], metadata) + " (optional)" if len(given) == 1 else \
            " or ".join(_describe(a, []) for a in given)
    if origin is typing.Literal:
        return "one of " + ", ".join(f'"{a}"' for a in args)
    if origin is tuple:
        inner = _describe(args[0], [])
        return f"list, each {inner}" if inner.startswith("one of") else \
            f"list of {_plural(inner)}"
    if origin is dict:
        key = _describe(args[0], [])
        by = "" if key == "string" else f" by tier ({key.removeprefix('one of ')})"
        return f"table of {_plural(_describe(args[1], []))}{by}"
    names = {getattr(getattr(m, "func", None), "__name__", "") for m in metadata}
    if "parse_duration" in names:
        return "duration above 0" if "_positive_duration" in names else "duration"
    if "parse_size" in names:
        return "size (bytes, or 1MiB, 64MiB...)"
    base = {bool: "boolean", int: "integer", float: "number", str: "string",
            Path: "absolute path"}.get(annotation, getattr(annotation, "__name__", "value"))
    low = next((m.ge for m in metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    if low is not None and high is not None:
        return f"{base} from {low} to {high}"
    return base


def _plural(text: str) -> str:
    return text if text.endswith("s") or " " in text else text + "s"


def default_text(field: FieldInfo, name: str = "") -> str:
    if field.is_required():
        return "required"
    if name in schema.KIND_DEFAULTS["ollama"]:  # [[engine]]: the kind's own
        return "by kind: " + "; ".join(
            f"{kind} " + (_value(defaults[name]) if defaults[name] else "none (required)")
            for kind, defaults in schema.KIND_DEFAULTS.items())
    value = field.get_default(call_default_factory=True)
    if value is None or value in ("", (), {}):
        return "none" if value is None else "empty"
    if isinstance(value, BaseModel):
        return "its table's defaults"
    if "duration" in type_text(field):
        return f'"{value:g}s"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return _value(value)


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str | Path):
        return f'"{value}"'
    return str(value)


def roff() -> str:
    """The KEYS section of supervisor.toml(5), between its markers."""
    lines = [BEGIN, ".SH KEYS", "Every key, its type and its default (read from the schema"
             " the daemon validates with)."]
    section = None
    for where, key, kind, default in entries():
        if where != section:
            lines.append(f".SS {where}")
            section = where
        lines += [".TP", f".B {key}", f"{kind}; default: {default}".replace("-", "\\-")]
    lines.append(END)
    return "\n".join(lines) + "\n"
