#!/usr/bin/env python3
"""Write the KEYS section of packaging/man/supervisor.toml.5 from the config schema
(``llm_supervisor.config.reference``): ``dev/manpage.py`` rewrites it in place,
``dev/manpage.py --check`` exits 1 when the page and the schema differ."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from llm_supervisor.config import reference  # noqa: E402

PAGE = HERE / "packaging" / "man" / "supervisor.toml.5"


def rendered(text: str) -> str:
    """The page with its KEYS section as the schema says (added before SEE ALSO if none)."""
    block = reference.roff()
    if reference.BEGIN in text:
        head, rest = text.split(reference.BEGIN, 1)
        tail = rest.split(reference.END + "\n", 1)[1]
        return head + block + tail
    head, sep, tail = text.partition(".SH SEE ALSO")
    return head + block + sep + tail


def main() -> int:
    text = PAGE.read_text()
    new = rendered(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            print(f"{PAGE}: its KEYS section differs from the config schema; run dev/manpage.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
