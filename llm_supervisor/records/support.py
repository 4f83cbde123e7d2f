"""The support bundle: one ``.tar.zst`` an operator can hand to a maintainer.

It holds the config files, the rendered units, state, status, recent events, probe
evidence, the engines' and the daemon's recent journal, and versions. Values of keys that
look secret (TOKEN, KEY, SECRET, PASSWORD) are redacted wherever they appear, and so are
the values of secret command-line flags (``--api-key VALUE``), URL user-info
(``https://user:pw@host``) and bearer tokens. Only root may fetch a bundle.
"""

from __future__ import annotations

import io
import json
import platform
import re
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zstandard

REDACTED = "<redacted>"
_SECRET = re.compile(
    r"""(?ix)
    (?<![\w.-])
    (?P<name>(?:[\w.-]*[_.-])?(?:token|key|secret|password|passwd|apikey)(?:[_.-][\w.-]*)?)
    (?P<sep>"?\s*[=:]\s*)                                    # = or : (TOML, env, JSON)
    (?P<value>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s"',}\]]+)    # its value
    """)

# --api-key VALUE, --hf-token=VALUE: long flags one of whose -/_ parts names a secret
_FLAG = re.compile(
    r"""(?ix)(?P<flag>--(?:[a-z0-9]+[-_])*(?:api[-_]?key|key|token|secret|password|passwd)
    (?:[-_][a-z0-9]+)*)
    (?P<sep>=|[ \t]+)(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s"']+)""")
_USERINFO = re.compile(r"(?i)(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@\"']+@")
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer|basic|token)(?P<sp>[ \t]+)[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str) -> str:
    """Replace the value of every secret-looking assignment, keeping the quotes' style.

    A name counts when one of its ``_``/``.``/``-`` separated parts is TOKEN, KEY,
    SECRET, PASSWORD...: ``HF_TOKEN`` and ``api_key`` do, ``tokens_per_second`` does not.
    """
    def hide(match: re.Match[str]) -> str:
        value, sep = match.group("value"), match.group("sep")
        quote = value[0] if value[:1] in "\"'" else ('"' if ":" in sep else "")
        return f"{match.group('name')}{sep}{quote}{REDACTED}{quote}"

    def hide_flag(match: re.Match[str]) -> str:
        value = match.group("value")
        quote = value[0] if value[:1] in "\"'" else ""
        return f"{match.group('flag')}{match.group('sep')}{quote}{REDACTED}{quote}"

    text = _SECRET.sub(hide, text)
    text = _FLAG.sub(hide_flag, text)
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    return _BEARER.sub(lambda m: f"{m.group('kind')}{m.group('sp')}{REDACTED}", text)


def build(files: Mapping[str, str | bytes], *, level: int = 10) -> bytes:
    """A zstd-compressed tar (one frame) of ``files``: name -> content, text redacted."""
    stamp = time.time()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            data = redact(content).encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"llm-supervisor-bundle/{name}")
            info.size = len(data)
            info.mtime = int(stamp)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=level).compress(raw.getvalue())


def versions(extra: Mapping[str, str]) -> str:
    from llm_supervisor import __version__

    lines = {"llm-supervisor": __version__, "python": platform.python_version(),
             "kernel": platform.release(), "machine": platform.machine(), **extra}
    return "".join(f"{k}: {v}\n" for k, v in lines.items())


def read_text(path: Path, limit: int = 1 << 20) -> str:
    try:
        with path.open(errors="replace") as fh:
            return fh.read(limit)
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})\n"


def as_json(document: Any) -> str:
    return json.dumps(document, indent=1, default=str) + "\n"
