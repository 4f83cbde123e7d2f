"""The project's own evidence, run as a new user would: each script the docs name, in its
quick form, from a fresh clone under /tmp with a space in its path, as root with no standard
input, from the clone's own directory or from another one. Each exits 0, writes no figure it
did not take ("not measured", "None"), and says what it measured at (commit, machine, date);
a scenario that cannot run fails its run and says why."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WHERE = Path("/tmp/llm supervisor evidence/llm-supervisor")
UNTAKEN = re.compile(r"not measured|\bNone\b|Traceback")


@pytest.fixture(scope="module")
def clone() -> Path:
    shutil.rmtree(WHERE.parent, ignore_errors=True)
    WHERE.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(WHERE)], check=True)
    yield WHERE
    shutil.rmtree(WHERE.parent, ignore_errors=True)


def commit(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()


def run(checkout: Path, argv: list[str], cwd: Path, timeout: float = 900
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(checkout / argv[0]), *argv[1:]], cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


# (the script and its quick form, whether it runs from the clone's directory or from /)
SCRIPTS = [
    (["dev/detection.py"], "clone"),
    (["dev/profile-status.py"], "/"),
    (["dev/profile-checks.py", "--engines", "8", "--seconds", "5"], "clone"),
    (["dev/bench_deb.py", "5"], "/"),
    (["dev/soak.py", "--minutes", "0.5"], "/"),
]


@pytest.mark.parametrize("argv, cwd", SCRIPTS, ids=lambda x: x[0] if isinstance(x, list) else x)
def test_each_evidence_script_runs_from_a_clone_with_a_space_in_its_path(clone, argv, cwd):
    done = run(clone, argv, clone if cwd == "clone" else Path("/"))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert not UNTAKEN.search(done.stdout), done.stdout[-4000:]
    assert "Traceback" not in output


# the project's other tools the docs name: (argv, where it runs from, what its output says)
TOOLS = [
    (["dev/trace_demotion.py"], "/", "modules: "),
    (["dev/bundle_corpus.py"], "clone", " steps x 3 faults: "),
    (["dev/record-llama-server-fixtures"], "/", "/tests/data/llama-server/props.json"),
    (["dev/build-llama-server"], "/", "/bin/llama-server"),
]


@pytest.mark.parametrize("argv, cwd, says", TOOLS, ids=lambda x: x[0] if isinstance(x, list)
                         else "")
def test_each_dev_tool_the_docs_name_runs_from_a_clone(clone, argv, cwd, says):
    try:
        done = run(clone, argv, clone if cwd == "clone" else Path("/"))
    finally:  # the fixtures it records are the clone's files: the evidence after it would
        # say it measured a tree "with uncommitted changes"
        subprocess.run(["git", "-C", str(clone), "checkout", "--", "."], check=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert says in done.stdout and "Traceback" not in output, output[-4000:]
    assert not subprocess.run(["git", "-C", str(clone), "status", "--porcelain", "-uno"],
                              check=True, capture_output=True, text=True).stdout


def test_tinymodel_writes_a_model_from_a_clone(clone, tmp_path):
    model = tmp_path / "a tiny model.gguf"
    done = run(clone, ["dev/tinymodel.py", str(model)], Path("/"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert model.read_bytes()[:4] == b"GGUF" and model.stat().st_size > 100_000


def test_detection_says_what_it_measured_at(clone):
    done = run(clone, ["dev/detection.py"], Path("/"))
    assert done.returncode == 0, done.stderr[-4000:]
    head = done.stdout.split("\n\n")[1]
    assert f"at {commit(clone)}, on " in head and " cores" in head and " UTC" in head, head
    assert done.stdout.count("\n| ") >= 17  # the header, its rule, 16 cases


def test_reliability_writes_only_what_it_measured(clone, tmp_path):
    out = tmp_path / "RELIABILITY.md"
    done = run(clone, ["dev/reliability", "--runs", "0.01", "-o", str(out)], clone)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    table = out.read_text()
    assert f"at {commit(clone)}, on " in table and " cores" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]
    assert rows and not [r for r in rows if UNTAKEN.search(r) and "not covered here" not in r]


def test_a_scenario_that_cannot_run_fails_the_run_and_says_why(clone, tmp_path):
    """hostile.py broken: the socket scenario cannot run; its figures are not measured, the
    run exits 1 and names it."""
    hostile = clone / "dev/hostile.py"
    kept = hostile.read_text()
    hostile.write_text("raise SystemExit('hostile.py: broken on purpose')\n")
    try:
        out = tmp_path / "RELIABILITY.md"
        done = run(clone, ["dev/reliability", "--runs", "0.01", "--only", "socket",
                           "-o", str(out)], Path("/"))
    finally:
        hostile.write_text(kept)
    assert done.returncode == 1, (done.stdout + done.stderr)[-4000:]
    assert "hostile.py socket failed" in done.stderr and "broken on purpose" in done.stderr
    socket_row = next(line for line in out.read_text().splitlines()
                      if line.startswith("| socket abuse"))
    assert "not measured: hostile.py socket failed" in socket_row, socket_row


def test_bench_writes_its_figures_and_what_it_measured_at(clone, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    done = run(clone, ["dev/bench", "--quick", "--engines", "1,8", "--out", str(out)], clone,
               timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    text = out.read_text()
    assert f"at {commit(clone)}, on " in text and " cores" in text, text[:600]
    assert not UNTAKEN.search(text), text
