#!/usr/bin/env python3
"""Model bundles as root, measured: the hostile corpus's outcome table (each bundle's line,
bytes written under the models directory, peak memory), the largest refused bundles against
the reference (an honest import of a model as large), and the failure-point matrix (each disk
step of an import x EIO, ENOSPC, SIGTERM -> old tree or new tree).

    sudo ./dev/bundle_corpus.py        # as root: the engine user is uid 4242

Every figure is measured in this run; nothing is compared with a stored number.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "dev")]

import checkout  # noqa: E402

checkout.use_venv()

import hostile_bundles as hb  # noqa: E402

from llm_supervisor.control import cli  # noqa: E402
from llm_supervisor.tools.models import beneath, export, install  # noqa: E402
from llm_supervisor.tools.models import format as bundle  # noqa: E402

ENGINE = beneath.Owner(4242, 4242)
OLD = hb.model(b"old weights " * 100)
NEW = hb.model(b"new weights " * 100)

CHILD = """
import io, json, sys
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak starts here, not at the fork from a parent holding big bundles
sys.path[:0] = {paths!r}
from llm_supervisor.tools.models import beneath, export, install
written = [0]
real = beneath.write_all
def counting(fd, data, where):
    written[0] += len(data)
    real(fd, data, where)
beneath.write_all = counting
try:
    if sys.argv[3] == "file":
        install.import_file(sys.argv[1], sys.argv[2], beneath.Owner(4242, 4242))
    else:  # a pipe: the size unknown
        with open(sys.argv[1], "rb") as raw:
            install.import_stream(raw, None, "stdin", sys.argv[2], beneath.Owner(4242, 4242))
    line = "installed"
except install.NotImported as failed:
    line = str(failed.cause)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({{"line": line, "written": written[0], "peak_kib": peak}}))
"""


def measure(path: Path, models: Path, how: str = "file") -> dict[str, object]:
    """One import in a fresh interpreter: its line, bytes written, peak RSS."""
    code = CHILD.format(paths=[str(ROOT), str(ROOT / "tests")])
    done = subprocess.run([sys.executable, "-c", code, str(path), str(models), how],
                          capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def fresh(tmp: Path) -> Path:
    models = tmp / "models"
    if models.exists():
        import shutil
        shutil.rmtree(models)
    OLD.install(models)
    for path in [models, *models.rglob("*")]:
        os.lchown(path, ENGINE.uid, ENGINE.gid)
    return models


def main() -> int:
    if os.geteuid() != 0:
        print("run as root: the engine user's tree is uid 4242's", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        print("## The hostile corpus\n")
        print("| bundle | size | outcome | written | peak RSS |")
        print("| --- | ---: | --- | ---: | ---: |")
        rows = []
        for case in hb.corpus():
            data = case.data(NEW)
            path = tmp / "b.tar.zst"
            path.write_bytes(data)
            models = fresh(tmp)
            before = hb.tree(models)
            result = measure(path, models)
            unchanged = hb.tree(models) == before
            outcome = "refused" if result["line"] != "installed" and unchanged else "**WRONG**"
            rows.append((case.name, len(data), result))
            print(f"| {case.name} | {len(data):,} B | {outcome}: {str(result['line'])[:70]} |"
                  f" {result['written']:,} B | {int(str(result['peak_kib'])) / 1024:.1f} MiB |")
        print(f"\n{len(rows)} bundles, {sum(1 for r in rows if r[2]['line'] != 'installed')}"
              " refused, the models directory unchanged after each.\n")

        print("## The largest refused bundles, and the reference\n")
        print("| import | bundle | outcome | written | peak RSS |")
        print("| --- | ---: | --- | ---: | ---: |")
        cases = [
            ("bomb, a file: 172 MB listed", hb.bomb(NEW, 172_000_000), "file"),
            ("bomb from a pipe (size unknown): 172 MB listed", hb.bomb(NEW, 172_000_000),
             "pipe"),
            ("listing of 150 MiB", hb.forge([*NEW.members(), hb.Member(
                bundle.BUNDLE_MANIFEST, b" " * (150 * 2**20))], level=1), "file"),
            ("pax header of 32 MiB", hb.forge([hb.Member(hb.MANIFEST, NEW.manifest, pax={
                "comment": "x" * (32 * 2**20)})], level=1), "file"),
        ]
        weights = os.urandom(172_000_000)
        honest = hb.model(weights)
        cases.append(("reference: an honest 172 MB model", hb.forge(honest.honest(), level=1),
                      "file"))
        for name, data, how in cases:
            path = tmp / "big.tar.zst"
            path.write_bytes(data)
            result = measure(path, fresh(tmp), how)
            print(f"| {name} | {len(data):,} B | {str(result['line'])[:60]} |"
                  f" {result['written']:,} B | {int(str(result['peak_kib'])) / 1024:.1f} MiB |")
        del weights

        print("\n## Every failure point of an import\n")
        models = fresh(tmp)
        old = hb.tree(models)
        path = tmp / "new.tar.zst"
        path.write_bytes(hb.forge(NEW.honest()))
        clean = hb.Faults()
        run(clean, path, models)
        new = hb.tree(models)
        table: dict[str, Counter[str]] = {}
        for at in range(clean.count):
            step = f"{at:2d} {clean.calls[at]}"
            table[step] = Counter()
            for how in ("EIO", "ENOSPC", "SIGTERM"):
                hb.restore(models, old, ENGINE)
                code = run(hb.Faults(at, how), path, models)
                after = {k: v for k, v in hb.tree(models).items()
                         if ".llm-supervisor-import-" not in k}
                state = "old" if after == old else "new" if after == new else "**MIXED**"
                table[step][f"{how}->{state} (exit {code})"] += 1
        print("| step | EIO | ENOSPC | SIGTERM after it |")
        print("| --- | --- | --- | --- |")
        for step, outcomes in table.items():
            cells = {k.split("->")[0]: k.split("->")[1] for k in outcomes}
            print(f"| {step} | {cells['EIO']} | {cells['ENOSPC']} | {cells['SIGTERM']} |")
        totals = Counter(k.split(" (")[0] for c in table.values() for k in c)
        print(f"\n{clean.count} steps x 3 faults: " + ", ".join(
            f"{k} {v}" for k, v in sorted(totals.items())))
    return 0


def run(faults: hb.Faults, path: Path, models: Path) -> int:
    from llm_supervisor.tools.models import format as format_
    saved = {m: m.os for m in (beneath, export, install, format_)}  # type: ignore[attr-defined]
    out, err = sys.stdout, sys.stderr
    try:
        for module in saved:
            module.os = faults  # type: ignore[attr-defined]
        sys.stdout = sys.stderr = io.StringIO()
        return cli.cli(["models", "import", str(path), "--models-dir", str(models), "-q"])
    finally:
        for module, real in saved.items():
            module.os = real  # type: ignore[attr-defined]
        sys.stdout, sys.stderr = out, err


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
