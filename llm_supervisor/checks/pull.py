"""Pulling a missing model through Ollama's own API (``pull = true``): ``POST /api/pull``
with streamed progress. The I/O only; the engine decides when to pull and what follows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from llm_supervisor.checks.health import describe_error

PULL_IDLE_TIMEOUT = 300.0  # s without a progress line from /api/pull


def percent(progress: dict[str, Any]) -> int:
    total, done = progress.get("total") or 0, progress.get("completed") or 0
    if progress.get("status") == "success":
        return 100
    return int(done * 100 / total) if total else 0


async def pull(client: httpx.AsyncClient, endpoint: str, model: str, timeout: float,
               progress: dict[str, Any], on_step: Callable[[str, int], None]) -> str | None:
    """Pull ``model``; ``progress`` is updated in place (``status``, ``completed``,
    ``total``) and ``on_step(status, percent)`` called at each quarter and at the end.
    None when it succeeded, else why not."""
    last_step = -1
    try:
        async with client.stream("POST", endpoint + "/api/pull",
                                 json={"model": model, "stream": True},
                                 timeout=httpx.Timeout(timeout, read=PULL_IDLE_TIMEOUT)) as r:
            if r.status_code != 200:
                text = (await r.aread())[:300].decode(errors="replace")
                return f"HTTP {r.status_code}: {text}"
            async for line in r.aiter_lines():
                if not line.strip():
                    continue
                try:
                    part = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(part, dict):
                    continue
                if part.get("error"):
                    return str(part["error"])
                progress.update({k: part[k] for k in ("status", "completed", "total")
                                 if k in part})
                step = percent(progress) // 25
                if step != last_step or part.get("status") == "success":
                    last_step = step
                    on_step(str(part.get("status")), percent(progress))
    except httpx.HTTPError as exc:
        return describe_error(exc)
    if progress.get("status") != "success":
        return "the pull ended without success"
    return None
