#!/usr/bin/env python3
"""Rename the import package of a source tree: ``rename_package.py TREE OLD NEW``.

Moves ``TREE/OLD`` to ``TREE/NEW`` and rewrites every reference to the package, and only
those: in Python, the ``from``/``import`` statements and module paths inside strings and
comments (``"OLD.engine.Engine"``, ``OLD/engine.py``) — never a variable that happens to be
called ``OLD``, never ``supervisor.toml``; in other text files (docs, man pages, scripts,
pyproject), module paths and the package directory's name where the build names it.

The package was renamed ``supervisor`` -> ``llm_supervisor`` with it; the upgrade test runs it
backwards on a copy of the tree to build a package of the old layout from today's code.
"""

from __future__ import annotations

import io
import re
import sys
import tokenize
from pathlib import Path

SKIP_DIRS = {".git", "dist", "build", "__pycache__", ".mypy_cache", ".ruff_cache",
             ".pytest_cache", ".hypothesis"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".in", ".cfg", ".ini", ".yml", ".yaml",
                 ".j2", ".json", ".sh", ".1", ".5", ".8", ".service", ".conf", ".rst"}
# files whose bare word names the package directory (build and lint commands)
BUILD_FILES = {"pyproject.toml", "dev/test", "dev/bootstrap", "packaging/build-deb",
               ".ci/run", "packaging/check-tree"}
# files where the package's name stands quoted on its own ("supervisor" is also the config's
# [supervisor] section and a cgroup's name elsewhere: those stay)
QUOTED_FILES = {"packaging/debian/wrapper.in", "dev/profile-status.py", "dev/profile-checks.py",
                "tests/test_contrib.py"}


def submodules(package: Path) -> list[str]:
    names = {p.stem for p in package.glob("*.py")} | {
        p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    return sorted(names - {"__init__"}, key=len, reverse=True)


def patterns(old: str, new: str, modules: list[str]) -> list[tuple[re.Pattern[str], str]]:
    mods = "|".join(map(re.escape, modules))
    before = r"(?<![\w.\-/$])"
    return [(re.compile(before + re.escape(old) + rf"(?=[./](?:{mods})\b)"), new)]


def rewrite_quoted(text: str, old: str, new: str) -> str:
    return re.sub(rf"(['\"]){re.escape(old)}\1", rf"\g<1>{new}\g<1>", text)


def rewrite_text(text: str, subs: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, replacement in subs:
        text = pattern.sub(replacement, text)
    return text


def rewrite_python(source: str, old: str, new: str,
                   subs: list[tuple[re.Pattern[str], str]]) -> str:
    """Import statements by their lines; strings and comments by their tokens."""
    imports = re.compile(rf"^(\s*(?:from|import)\s+){re.escape(old)}\b", re.M)
    source = imports.sub(rf"\g<1>{new}", source)
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    spans = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT) or \
                token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            start = offsets[token.start[0] - 1] + token.start[1]
            end = offsets[token.end[0] - 1] + token.end[1]
            spans.append((start, end))
    out, last = [], 0
    for start, end in spans:
        out.append(source[last:start])
        out.append(rewrite_text(source[start:end], subs))
        last = end
    out.append(source[last:])
    return "".join(out)


def rewrite_build(text: str, old: str, new: str) -> str:
    """The package directory where a build or lint command names it."""
    return re.sub(rf"(?<![\w.\-])(\$here/)?{re.escape(old)}(?=[\s\"'*\]|/]|$)",
                  lambda m: f"{m.group(1) or ''}{new}", text, flags=re.M)


def rename(tree: Path, old: str, new: str) -> list[Path]:
    package = tree / old
    if not package.is_dir() or (tree / new).exists():
        raise SystemExit(f"{tree}: needs {old}/ and no {new}/")
    subs = patterns(old, new, submodules(package))
    package.rename(tree / new)
    changed = []
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file() \
                or path.is_symlink():
            continue
        name = rel.as_posix()
        if path.suffix not in TEXT_SUFFIXES and name not in BUILD_FILES \
                and not name.startswith(("dev/", ".ci/", "packaging/")):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if path.suffix == ".py" or text.startswith("#!/usr/bin/env python"):
            result = rewrite_python(text, old, new, subs)
        else:
            result = rewrite_text(text, subs)
        if name in BUILD_FILES:
            result = rewrite_build(result, old, new)
        if name in QUOTED_FILES:
            result = rewrite_quoted(result, old, new)
        if result != text:
            path.write_text(result)
            changed.append(rel)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    for rel in rename(Path(sys.argv[1]), sys.argv[2], sys.argv[3]):
        print(rel)
