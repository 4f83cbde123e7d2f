"""One rule, one place: the operator's verbs and their rules (``intents``), the UTC time format
(``timefmt``), the CLI's exit codes (``errors.Exit``) and Ollama's model names (``names``) are
each written once. These tests read the sources and fail on a new copy.

``STILL_COPIED`` lists the copies in modules others own for now. It may only shrink: a new copy
fails, and so does one that is gone but still listed (take it off the list).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from llm_supervisor.intents import Verb

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llm_supervisor"
# the simulated engine is a program of its own (it writes other programs' log formats, and
# mirrors Ollama's names on purpose); tools/models/format.py checks the names it writes
OWN_PROGRAM = PACKAGE / "simengine"

# (rule, module relative to the repository): copies in files being changed by others
STILL_COPIED: set[tuple[str, str]] = set()


def sources(*roots: Path, but: tuple[Path, ...] = ()) -> Iterator[tuple[str, str]]:
    """(path relative to the repository, text) of each Python file under ``roots``, except
    the files and directories in ``but``."""
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path in but or any(path.is_relative_to(b) for b in but if b.is_dir()):
                continue
            yield str(path.relative_to(REPO)), path.read_text()


def copies(rule: str, found: set[str]) -> None:
    known = {module for r, module in STILL_COPIED if r == rule}
    assert found - known == set(), f"{rule} copied into {sorted(found - known)}"
    assert known - found == set(), f"no longer copied, take off STILL_COPIED: {known - found}"


def test_the_verbs_and_their_rules_are_written_in_intents_only():
    """No list of verbs (two or more in one tuple, list or set) outside ``intents.Verb``, no
    verb spelled at all in the control plane and the CLI, and no refusal of ``intents.check``
    raised elsewhere."""
    verbs = {v.value for v in Verb}
    words = ("unpin it first", "no usable tier below", "already on its best usable tier",
             "is not usable for", "no usable tier for")
    found = set()
    for name, text in sources(PACKAGE, but=(PACKAGE / "intents.py",)):
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                listed = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if len(listed & verbs) >= 2:
                    found.add(name)
            if name.startswith("llm_supervisor/control/") and isinstance(node, ast.Constant) \
                    and node.value in verbs:
                found.add(name)
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                    node.func, "attr", None)) in ("Refused", "HTTPError"):
                said = " ".join(c.value for c in ast.walk(node)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if any(w in said for w in words):
                    found.add(name)
    copies("intents", found)


def test_utc_times_are_written_and_read_by_timefmt_only():
    """No ISO-8601 format string nor parser of one outside ``timefmt`` (the package and the
    dev tools); the events' ``ts`` is timefmt's."""
    from llm_supervisor import timefmt
    from llm_supervisor.records import history

    patterns = ("%Y-%m-%dT", "%Y%m%dT", "%H:%M:%SZ", "strptime(", "fromisoformat(",
                "isoformat(")
    found = {name for name, text in sources(PACKAGE, REPO / "dev",
                                            but=(PACKAGE / "timefmt.py", OWN_PROGRAM))
             if any(p in text for p in patterns)}
    copies("time", found)
    assert history.utc is timefmt.utc
    assert timefmt.utc(0) == "1970-01-01T00:00:00Z" and timefmt.compact(0) == "19700101T000000Z"
    assert timefmt.normalise("2026-11-22T17:00:00+01:00") == "2026-11-22T16:00:00Z"
    assert timefmt.normalise("2026-11-22") == "2026-11-22T00:00:00Z"
    assert timefmt.epoch(timefmt.utc(1_795_000_000)) == 1_795_000_000


def test_exit_codes_are_defined_once():
    """The exit codes are ``errors.Exit``'s: no other module names one, and no command of the
    CLI or the tools returns a bare number."""
    from llm_supervisor.errors import Exit, Failure

    assert (Exit.OK, Exit.ERROR, Exit.USAGE, Exit.UNHEALTHY, Exit.UNREACHABLE) == (0, 1, 2, 3, 4)
    assert Failure("x").code == Exit.ERROR
    names = {"OK", "ERROR", "USAGE", "UNHEALTHY", "UNREACHABLE"}
    found = set()
    for name, text in sources(PACKAGE, but=(PACKAGE / "errors.py", OWN_PROGRAM)):
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(
                    node.value, ast.Constant | ast.Tuple):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                named = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                values = [c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)]
                if named & names and any(type(v) is int for v in values):
                    found.add(name)
            if name.startswith(("llm_supervisor/control/", "llm_supervisor/tools/")) \
                    and isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) \
                    and type(node.value.value) is int:
                found.add(name)
    copies("exit codes", found)


def test_model_names_are_split_by_names_only():
    """Ollama's defaults and the splitting of a name are ``names``' (``tools/models/format``
    checks the names a bundle writes with it; the simulated engine mirrors it on purpose)."""
    patterns = ('"latest"', "registry.ollama.ai", 'rsplit(":"', 'split("@"')
    found = {name for name, text in sources(
        PACKAGE, REPO / "dev", but=(PACKAGE / "names.py", PACKAGE / "tools/models/format.py",
                                    OWN_PROGRAM))
        if any(p in text for p in patterns)}
    copies("names", found)
