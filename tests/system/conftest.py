"""What the package tests share: the .deb files, built once per session on this host and
installed as they are on every release the tests boot (Debian 12 here, Debian 13 and Ubuntu
24.04 from their archives)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="session")
def debs() -> dict[str, Path]:
    """Two builds, the second one newer: {"old": path, "new": path}. The builds' wheels are
    cached under /var/cache/llm-supervisor-build, so the second takes seconds."""
    built = {}
    for key, version in (("old", f"{VERSION}-1"), ("new", f"{VERSION}-2")):
        done = subprocess.run([str(REPO / "packaging/build-deb"), "--no-lintian",
                               "--version", version],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        built[key] = next((REPO / "dist").glob(f"llm-supervisor_{version}_*.deb"))
    return built

