"""supervisor.toml(5) lists every key the schema takes, its type and default: generated from
the schema, and a test fails when the page and the schema drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llm_supervisor.config import reference, schema

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "packaging" / "man" / "supervisor.toml.5"


def test_the_page_says_what_the_schema_takes() -> None:
    text = PAGE.read_text()
    assert reference.roff() in text, "run dev/manpage.py: supervisor.toml(5) drifted"
    done = subprocess.run([sys.executable, str(REPO / "dev" / "manpage.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_key_of_every_table_is_listed_with_its_type_and_default() -> None:
    listed = {(section, key) for section, key, _, _ in reference.entries()}
    for section, model in reference.SECTIONS:
        for name, field in model.model_fields.items():
            if model is schema.EngineConfig and name in reference.NESTED:
                continue
            assert (section, field.alias or name) in listed, (section, name)
    rows = {(s, k): (t, d) for s, k, t, d in reference.entries()}
    assert rows[("[health]", "interval")] == ("duration above 0", '"5s"')
    assert rows[("[health]", "failures")] == ("integer from 1 to 1000", "3")
    assert rows[("[[engine]]", "name")][1] == "required"
    assert rows[("[[engine]]", "exec")][1].startswith('by kind: ollama "/usr/local/bin/ollama')
    assert rows[("[engine.health]", "interval")][1] == "as in [health]"


def test_a_stale_page_is_caught(tmp_path: Path) -> None:
    """The drift check itself: a page whose KEYS section lost a key fails --check."""
    stale = PAGE.read_text().replace(".B probe_timeout\n", "", 1)
    assert stale != PAGE.read_text()
    sys.path.insert(0, str(REPO / "dev"))
    try:
        import manpage
    finally:
        sys.path.pop(0)
    assert manpage.rendered(stale) != stale and manpage.rendered(stale) == PAGE.read_text()
