"""Every document the repository cites is in it, and every reference into it resolves.

Code, tests, docs, the unit, the manual pages and the Debian files cite the product's own
documents under ``docs/`` (``docs/contract.md §5``, ``docs/field-notes.md``), never documents
kept elsewhere. Checked here: (a) no file names such an outside document; (b) every relative
Markdown link, and every ``docs/<file>.md`` named anywhere, points to a file that exists (and a
link's ``#anchor`` to a heading of it); (c) every ``§N`` given with ``contract.md`` names a
numbered section heading of ``docs/contract.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# what is not the repository's own text: build output, caches, virtualenvs, git itself
SKIP_DIRS = {".git", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache",
             ".pytest_cache", ".hypothesis", ".venv", "venv", "node_modules"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".service", ".in", ".yml", ".yaml", ".j2", ".ini",
                 ".conf", ".cfg", ".txt", ".sh"}
# scripts without a suffix (dev/demo, packaging/build-deb…), the manual pages, the Debian files
BARE_FILE_DIRS = ("dev", "packaging", ".ci")

# Spelled in pieces, so that this file does not cite them itself.
OUTSIDE = re.compile(r"\b" + "SP" + r"EC\b|" + "FIELD" + r"-NOTES|\.\./" + "shared")
MD_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOCS_REF = re.compile(r"(?<![\w/.-])docs/[\w.-]+\.md(?![\w])")
SECTION_REF = re.compile(r"contract\.md\)?\s*§\s*(\d+)((?:\s*(?:,|and|or)\s*§\s*\d+)*)")
FENCE = re.compile(r"^\s*(```|~~~)")


def repository_files() -> Iterator[Path]:
    """The repository's text files: sources, tests, docs, units, man pages, Debian files."""
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or (rel.parts[0] in BARE_FILE_DIRS
                                            and (path.suffix == "" or "man" in rel.parts)):
            yield path


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a Markdown text, fenced code blocks left out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in outside_fences(read(path)):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def contract_sections() -> set[str]:
    return set(re.findall(r"^## (\d+)\. ", read(DOCS / "contract.md"), flags=re.MULTILINE))


def where(path: Path, number: int) -> str:
    return f"{path.relative_to(ROOT)}:{number}"


def test_the_documents_are_there() -> None:
    for name in ("contract.md", "decisions.md", "field-notes.md", "internals.md"):
        assert (DOCS / name).is_file(), name
    assert contract_sections() >= {str(n) for n in range(1, 13)}


def test_no_file_cites_a_document_kept_outside_the_repository() -> None:
    problems = [f"{where(path, number)}: {line.strip()}"
                for path in repository_files()
                for number, line in enumerate(read(path).splitlines(), 1)
                if OUTSIDE.search(line)]
    assert not problems, "cite docs/contract.md or docs/field-notes.md instead:\n" + \
        "\n".join(problems)


def test_relative_markdown_links_resolve() -> None:
    problems = []
    cache: dict[Path, set[str]] = {}
    for path in repository_files():
        if path.suffix != ".md":
            continue
        for number, line in outside_fences(read(path)):
            for target in MD_LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, man:
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                if not linked.exists():
                    problems.append(f"{where(path, number)}: {target}: no such file")
                elif anchor and linked.suffix == ".md":
                    known = cache.setdefault(linked, anchors(linked))
                    if anchor not in known:
                        problems.append(f"{where(path, number)}: {target}: no such heading")
    assert not problems, "\n".join(problems)


def test_docs_named_anywhere_exist() -> None:
    problems = [f"{where(path, number)}: {name}"
                for path in repository_files()
                for number, line in enumerate(read(path).splitlines(), 1)
                for name in DOCS_REF.findall(line)
                if not (ROOT / name).is_file()]
    assert not problems, "no such document:\n" + "\n".join(problems)


def test_contract_sections_cited_exist() -> None:
    sections = contract_sections()
    problems = []
    for path in repository_files():
        text = read(path)
        for match in SECTION_REF.finditer(text):
            cited = [match.group(1), *re.findall(r"§\s*(\d+)", match.group(2))]
            number = text.count("\n", 0, match.start()) + 1
            problems += [f"{where(path, number)}: §{n}" for n in cited if n not in sections]
    assert not problems, "no such section in docs/contract.md:\n" + "\n".join(problems)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The patterns themselves: a stale citation, a dead link, a missing section are seen."""
    assert OUTSIDE.search("see " + "SP" + "EC §5")
    assert OUTSIDE.search("(" + "FIELD" + "-NOTES)")
    assert not OUTSIDE.search("SPECIAL = ('<unk>',)")
    assert DOCS_REF.findall("the rule (docs/decisions.md)") == ["docs/decisions.md"]
    assert not DOCS_REF.findall('hint="see docs/gpu.mdx" ggml/docs/gguf.md')
    match = SECTION_REF.search("(docs/contract.md §5, §7, §8)")
    assert match and [match.group(1), *re.findall(r"§\s*(\d+)", match.group(2))] == \
        ["5", "7", "8"]
    assert SECTION_REF.search("[contract.md](contract.md) §4")
    assert MD_LINK.findall("see [a](notes/a.md#b) and ![img](x.png)") == ["notes/a.md#b"]
    assert slug("Try it (as root, on Debian 12)") == "try-it-as-root-on-debian-12"
    assert slug("llama.cpp's llama-server") == "llamacpps-llama-server"
    page = tmp_path / "page.md"
    page.write_text("# Title\n```\n# not a heading\n```\n## Title\n")
    assert anchors(page) == {"title", "title-1"}
