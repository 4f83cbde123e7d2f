"""A real llama.cpp ``llama-server`` run for tests: the binary dev/bootstrap built, a process on
a loopback port it picks itself (``--port 0``), and its log collected line by line."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "dev" / "build-llama-server"
LISTENING = re.compile(r"HTTP server is listening, hostname: \S+, port: (\d+)")
# The variables that choose devices: a test sets the ones it means, never inherits them.
DEVICE_VARIABLES = ("GGML_VK_VISIBLE_DEVICES", "VK_ICD_FILENAMES", "VK_DRIVER_FILES",
                    "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
# llvmpipe is a CPU-type Vulkan device: ggml-vulkan uses it only when chosen explicitly.
LLVMPIPE = {"GGML_VK_VISIBLE_DEVICES": "0"}
NO_VULKAN_DRIVER = {"VK_ICD_FILENAMES": "/nonexistent.json"}


@functools.cache
def binary() -> Path:
    """Where dev/build-llama-server keeps the binary (it knows the pinned version)."""
    out = subprocess.run([str(BUILD_SCRIPT), "--path"], capture_output=True, text=True,
                         check=True, timeout=10)
    return Path(out.stdout.strip())


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEVICE_VARIABLES}
    return {**env, **(extra or {})}


def run(argv: Sequence[str], env: Mapping[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the binary to completion (``--list-devices``, a start-up that must fail)."""
    return subprocess.run([str(binary()), *argv], capture_output=True, text=True,
                          env=environment(env), timeout=timeout, stdin=subprocess.DEVNULL)


class LlamaServer:
    """One llama-server process; stdout and stderr are collected together, as a journal would."""

    def __init__(self, model: Path | str, *args: str, env: Mapping[str, str] | None = None
                 ) -> None:
        self.argv = [str(binary()), "-m", str(model), "--host", "127.0.0.1", "--port", "0",
                     "-c", "256", "-np", "1", *args]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(self.argv, env=environment(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._url: str | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := wanted.search(line):
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(f"llama-server logged no line matching {pattern!r}:\n{self.log}")

    @property
    def url(self) -> str:
        if self._url is None:
            port = self.wait_line(LISTENING.pattern).group(1)
            self._url = f"http://127.0.0.1:{port}"
        return self._url

    def wait_ready(self, timeout: float = 120) -> list[int]:
        """Poll ``/health`` until 200; every status seen on the way, in order (503s, then 200)."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                status = client.get("/health").status_code
                if not seen or seen[-1] != status:
                    seen.append(status)
                if status == 200:
                    return seen
                assert self.proc.poll() is None, f"llama-server exited:\n{self.log}"
                time.sleep(0.02)
        raise AssertionError(f"llama-server not ready in {timeout}s ({seen}):\n{self.log}")

    def get(self, path: str, timeout: float = 30) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def post(self, path: str, body: object, timeout: float = 60) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        return code
