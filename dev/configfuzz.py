"""A hypothesis strategy for config files: random bytes, the shipped example with random
byte edits, and TOML built from the config's own sections and keys with hostile values
(nan, inf, huge integers, control characters, backslashes, deep structures).

Used by tests/config/test_config_total.py and by dev/reliability.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = (REPO / "etc/llm-supervisor/supervisor.toml").read_bytes()
ENGINE = '[[engine]]\nname = "main"\nexec = "/usr/bin/true"\n'

KEYS = {
    "supervisor": ["socket", "socket_group", "state_dir", "unit_dir", "watch_config",
                   "probe_timeout", "kfd_path"],
    "health": ["interval", "timeout", "failures", "startup_grace", "canary_every",
               "canary_timeout", "load_timeout", "stall_after", "blind_timeout",
               "min_tokens_per_second"],
    "fallback": ["chain", "restarts_per_tier", "restarts_refill_after", "promote_after",
                 "promote_backoff"],
    "history": ["segment_size", "max_size"],
    "logs": ["kernel_match", "gpu_fault", "oom"],
    "routing": ["fallback_url"],
    "metrics": ["textfile_dir"],
}
ENGINE_KEYS = ["name", "kind", "exec", "listen", "model", "user", "group", "environment",
               "writable", "chain", "health", "tiers"]

scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["5s", "0s", "0.0001ms", "1h", "nan", "inf", "rocm", "cpu", "vulkan",
                     "/srv/models\\", "/usr/bin/true --x", "127.0.0.1:1", "main", "64MiB",
                     "%n", "a\nb", "\\", '"', "x" * 200]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(ENGINE_KEYS + KEYS["health"]), st.text(max_size=8)),
                    inner, max_size=4)), max_leaves=12)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
                if math.isinf(value) else repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["structured", "mutated", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "mutated":
        data = bytearray(EXAMPLE + b"\n" + ENGINE.replace("main", "x").encode())
        for _ in range(draw(st.integers(1, 6))):
            at = draw(st.integers(0, len(data)))
            if draw(st.booleans()):
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[at:at + draw(st.integers(1, 20))]
        return bytes(data)
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), unique=True, max_size=4)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(KEYS[section]), unique=True, max_size=4)):
            lines.append(f"{key} = {toml_value(draw(values))}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[engine]]")
        lines.append(f'name = {toml_value(draw(st.one_of(st.just("main"), scalars)))}')
        for key in draw(st.lists(st.sampled_from(ENGINE_KEYS[1:]), unique=True, max_size=4)):
            lines.append(f"{key} = {toml_value(draw(values))}")
    return ("\n".join(lines) + "\n").encode()
