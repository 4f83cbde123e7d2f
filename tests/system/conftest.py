"""What the package tests share: the .deb files, built once per session on this host and
installed as they are on every release the tests boot (Debian 12 here, Debian 13 and Ubuntu
24.04 from their archives)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two builds, the second one newer: {"old": path, "new": path}. The old one has the
    layout releases before 0.1.0-2 had — the import package named ``supervisor`` — made from
    a copy of this tree by ``dev/rename_package.py`` run backwards, so the upgrade crosses the
    rename. The builds' wheels are cached under /var/cache/llm-supervisor-build, so the
    second takes seconds."""
    old_tree = tmp_path_factory.mktemp("old-layout") / "src"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source, target = REPO / name, old_tree / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run([sys.executable, str(REPO / "dev/rename_package.py"), str(old_tree),
                    "llm_supervisor", "supervisor"], check=True, capture_output=True)
    built = {}
    for key, tree, version in (("old", old_tree, f"{VERSION}-1"), ("new", REPO, f"{VERSION}-2")):
        done = subprocess.run([str(tree / "packaging/build-deb"), "--no-lintian",
                               "--version", version],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        built[key] = next((tree / "dist").glob(f"llm-supervisor_{version}_*.deb"))
    return built
