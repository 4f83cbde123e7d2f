"""Loading the config: TOML files read, merged, then validated into the schema's models.

``supervisor.toml`` is read first, then ``conf.d/*.toml`` in lexical order. Later files
override keys; ``[[engine]]`` tables merge by ``name``. Every error names the file that set
the offending key and the key's path, e.g. ``conf.d/10-gpu.toml: engine.main.listen: ...``.
Total: whatever bytes the files hold, the outcome is a ``Config`` or a ``ConfigError``.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llm_supervisor.config.schema import Config
from llm_supervisor.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/llm-supervisor/supervisor.toml")
MAX_FILE = 1 << 20                # bytes read from one config file
MAX_DEPTH = 16                    # tables and arrays nested in a config file
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def config_files(path: Path) -> list[Path]:
    """The files a config at ``path`` consists of: the file, then its conf.d in lexical order."""
    confd = path.parent / "conf.d"
    extra = sorted(confd.glob("*.toml")) if confd.is_dir() else []
    return [path, *extra]


def read_file(file: Path) -> tuple[dict[str, Any] | None, str | None]:
    """One config file as a TOML table, or the problem naming the file (and line).

    Only a regular file is read, opened without blocking (a FIFO in conf.d is refused, not
    waited on), at most ``MAX_FILE`` bytes; non-UTF-8 bytes and nesting deeper than
    ``MAX_DEPTH`` are refused with the line or key they are at.
    """
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        return None, f"{file}: cannot read: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, f"{file}: not a regular file; only regular files are read"
        if info.st_size > MAX_FILE:
            return None, f"{file}: {info.st_size} bytes; a config file is at most {MAX_FILE}"
        chunks = []
        left = MAX_FILE + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        return None, f"{file}: cannot read: {exc.strerror or exc}"
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE:
        return None, f"{file}: over {MAX_FILE} bytes; a config file is at most {MAX_FILE}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return None, f"{file}: line {line}: not UTF-8 text (byte {raw[exc.start]:#04x})"
    return parse_toml(text, str(file))


def parse_toml(text: str, source: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, f"{source}: invalid TOML: {exc}"
    except RecursionError:
        return None, f"{source}: invalid TOML: nested too deeply"
    except ValueError as exc:  # e.g. an integer over Python's digit limit
        return None, f"{source}: invalid TOML: {exc}"
    where = _too_deep(table)
    if where is not None:
        return None, f"{source}: {where or '(top level)'}: nested deeper than {MAX_DEPTH} levels"
    return table, None


def _too_deep(value: Any) -> str | None:
    """The dotted path where nesting passes MAX_DEPTH, found without recursion; else None."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return ".".join(str(p) for p in loc[:MAX_DEPTH])
        if isinstance(item, dict):
            stack.extend((v, (*loc, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*loc, i)) for i, v in enumerate(item))
    return None


def load(path: Path | str = DEFAULT_CONFIG) -> Config:
    """Read, merge and validate; raise ConfigError naming file and key path for each problem.

    Total: whatever bytes the files hold, the outcome is a Config or a ConfigError."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError([f"{path}: no such config file"])
    try:
        files = config_files(path)
    except OSError as exc:
        raise ConfigError([f"{path.parent / 'conf.d'}: cannot list: {exc.strerror}"]) from None
    raws: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for file in files:
        table, problem = read_file(file)
        if problem is not None:
            problems.append(problem)
        elif table is not None:
            raws.append((str(file), table))
    if problems:
        raise ConfigError(problems)
    return validate(raws)


def loads(text: str, source: str = "<string>") -> Config:
    table, problem = parse_toml(text, source)
    if problem is not None or table is None:
        raise ConfigError([problem or f"{source}: invalid TOML"])
    return validate([(source, table)])


def validate(raws: list[tuple[str, dict[str, Any]]]) -> Config:
    try:
        return _validate(raws)
    except ConfigError:
        raise
    except (RecursionError, ValueError, TypeError, OverflowError, KeyError,
            AttributeError, IndexError) as exc:  # a gap in the checks must not be a traceback
        files = ", ".join(name for name, _ in raws) or "<config>"
        raise ConfigError([f"{files}: cannot validate: {type(exc).__name__}: {exc}"]) from None


def _validate(raws: list[tuple[str, dict[str, Any]]]) -> Config:
    merged, origin, problems = _merge(raws)
    for loc, value in _walk(merged, ()):
        where = _where(origin, _named(merged, loc))
        if isinstance(value, str) and _CONTROL.search(value):
            problems.append(f"{where}: {_dotted(merged, loc)}: newlines and control"
                            " characters are not allowed in values")
        if isinstance(value, dict):
            for key in value:
                if _CONTROL.search(str(key)):
                    problems.append(f"{where}: {_dotted(merged, loc)}: control"
                                    " characters are not allowed in keys")
    merged["files"] = [name for name, _ in raws]
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        problems += [_describe(error, merged, origin) for error in exc.errors()]
    if problems:
        raise ConfigError(problems)
    return config


def _merge(raws: list[tuple[str, dict[str, Any]]]
           ) -> tuple[dict[str, Any], dict[tuple[Any, ...], str], list[str]]:
    """Deep-merge files; engines by name. ``origin`` maps key paths to the file that set them."""
    merged: dict[str, Any] = {}
    origin: dict[tuple[Any, ...], str] = {}
    problems: list[str] = []
    engines: list[dict[str, Any]] = []
    for source, raw in raws:
        raw = dict(raw)
        file_engines = raw.pop("engine", [])
        _deep_update(merged, raw, (), source, origin)
        if not isinstance(file_engines, list) or not all(isinstance(e, dict)
                                                         for e in file_engines):
            problems.append(f"{source}: engine: must be an array of tables ([[engine]])")
            continue
        names_here: set[str] = set()
        for table in file_engines:
            name = table.get("name")
            if not isinstance(name, str):
                problems.append(f"{source}: engine[{len(engines)}].name: every engine needs a"
                                " name (a string)")
                continue
            if name in names_here:
                problems.append(f"{source}: engine.{name}: duplicate engine name {name!r}")
                continue
            names_here.add(name)
            existing = next((e for e in engines if e["name"] == name), None)
            if existing is None:
                existing = {}
                engines.append(existing)
            _deep_update(existing, table, ("engine", name), source, origin)
    if engines:
        merged["engine"] = engines
    return merged, origin, problems


def _deep_update(target: dict[str, Any], new: Mapping[str, Any], prefix: tuple[Any, ...],
                 source: str, origin: dict[tuple[Any, ...], str]) -> None:
    for key, value in new.items():
        loc = (*prefix, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value, loc, source, origin)
        else:
            target[key] = value.copy() if isinstance(value, dict) else value
            for sub, _ in _walk(value, loc):
                origin[sub] = source
        origin.setdefault(loc, source)


def _walk(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield loc, value
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _walk(sub, (*loc, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _walk(sub, (*loc, index))


def _named(merged: dict[str, Any], loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Turn ``("engine", 0, "listen")`` into ``("engine", "main", "listen")``."""
    if len(loc) >= 2 and loc[0] == "engine" and isinstance(loc[1], int):
        engines = merged.get("engine") or []
        if loc[1] < len(engines) and isinstance(engines[loc[1]].get("name"), str):
            return ("engine", engines[loc[1]]["name"], *loc[2:])
    return loc


def _dotted(merged: dict[str, Any], loc: tuple[Any, ...]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in _named(merged, loc)]
    return ".".join(parts).replace(".[", "[") or "(top level)"


def _where(origin: dict[tuple[Any, ...], str], loc: tuple[Any, ...]) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in origin:
            return origin[loc[:end]]
    return next(iter(origin.values()), "<config>")


def _describe(error: Any, merged: dict[str, Any], origin: dict[tuple[Any, ...], str]) -> str:
    loc = tuple(error["loc"])
    # pydantic appends the tag of a failing validator ("function-after[...]"); drop it
    loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
    if loc[:1] == ("engines",):
        loc = ("engine", *loc[1:])
    named = _named(merged, loc)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}" if loc else "unknown key"
    elif error["type"] == "literal_error" and ("tiers" in loc or "chain" in loc):
        message = f"unknown tier: {message}"
    return f"{_where(origin, named)}: {_dotted(merged, loc)}: {message}"
