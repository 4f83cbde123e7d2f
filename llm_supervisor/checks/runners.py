"""Which of Ollama's models a log line is about (pure).

One Ollama serves several models at once (``OLLAMA_MAX_LOADED_MODELS``: a chat model on the
GPU and an embedding model beside it, often on the CPU). Each model has a runner of its own:
from 0.30 an upstream llama-server, started with ``msg="starting llama-server"
cmd="…/llama-server --model <models>/blobs/sha256-<hex> --port N … [--embedding]"``; from
0.12 to 0.29 ``msg="starting runner" cmd="…/ollama runner --model … --port N"``; 0.9 to 0.11
``msg="starting llama server" cmd="… runner --model … --port …"``. The runner's own
llama.cpp lines (``using device ROCm0 (…)``, ``offloaded N/M layers to GPU``) reach
Ollama's log unprefixed, right after the line that started it, while that model loads.

So a runner line opens a span: the lines that follow, up to the next runner start, are about
that runner's model — the model whose manifest names the ``--model`` blob
(``names.model_blob``). Only the engine's own model (``model`` in its config) judges
placement and progress; another model's placement is shown, never a fault. A GPU-discovery
runner (0.12–0.29 start one without ``--model``) and lines before any runner are the
engine's own (discovery, ``inference compute``). When the engine's own blob cannot be read
(no manifest yet), every runner counts as its own, as before any of this.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

_START = re.compile(r'msg="?starting (?:llama-server|runner|llama server)\b')
_CMD = re.compile(r'\bcmd=("(?:[^"\\]|\\.)*"|\S+)')
EMBEDDING_FLAGS = ("--embedding", "--embeddings")


@dataclass(frozen=True)
class Runner:
    """One model's runner, as its start line describes it."""

    blob: str               # sha256-<hex>: the weights it loads ("" for a discovery runner)
    port: int | None        # where its own API answers (llama-server's /slots, from 0.30)
    embedding: bool = False


def parse_start(line: str) -> Runner | None:
    """A runner start line, or None when the line is not one."""
    if not _START.search(line):
        return None
    match = _CMD.search(line)
    if not match:
        return Runner("", None)
    command = match.group(1)
    if command.startswith('"'):
        command = re.sub(r"\\(.)", r"\1", command[1:-1])
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    blob, port = "", None
    for i, word in enumerate(words):
        value = words[i + 1] if i + 1 < len(words) else ""
        if word.startswith("--model="):
            word, value = "--model", word.split("=", 1)[1]
        if word.startswith("--port="):
            word, value = "--port", word.split("=", 1)[1]
        if word == "--model":
            blob = value.rsplit("/", 1)[-1]
        elif word == "--port" and value.isdigit() and 0 < int(value) < 65536:
            port = int(value)
    return Runner(blob, port, any(w in EMBEDDING_FLAGS for w in words))


class RunnerLog:
    """The runner whose span a line falls in, and whether it is the engine's own model.

    ``own_blob`` reads the engine's own model's blob (I/O: the caller's); it is asked again
    at each runner start, so a model pulled after the engine started is found. Without one
    (not an Ollama with a model) every runner is the engine's own."""

    def __init__(self, own_blob: Callable[[], str | None] | None = None) -> None:
        self.own_blob = own_blob
        self.current: Runner | None = None   # the runner whose lines come now
        self.own = True                      # ... and whether it is the engine's own model
        self.others: dict[str, Runner] = {}  # blob -> the other models' runners

    def line(self, line: str) -> tuple[Runner | None, bool]:
        """(the runner this line opens or falls in, whether it is the engine's own)."""
        started = parse_start(line)
        if started is not None:
            self.current = started
            mine = self.own_blob() if self.own_blob is not None else None
            self.own = not started.blob or mine is None or started.blob == mine
            if not self.own:
                self.others[started.blob] = started
        return self.current, self.own

    def forget(self) -> None:
        """A (re)start of the engine: no runner yet."""
        self.current, self.own = None, True
        self.others.clear()
