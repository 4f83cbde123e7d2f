#!/usr/bin/env python3
"""Write the generated sections of the man pages: supervisor.toml(5)'s KEYS from the config
schema (``llm_supervisor.config.reference``) and llm-supervisorctl(1)'s OPTIONS from the
CLI's parser (``llm_supervisor.control.manual``). ``dev/manpage.py`` rewrites them in place;
``dev/manpage.py --check`` exits 1 when a page and its source differ."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from llm_supervisor.config import reference  # noqa: E402
from llm_supervisor.control import manual  # noqa: E402

MAN = HERE / "packaging" / "man"
PAGE = MAN / "supervisor.toml.5"
# page -> (its generated section's first and last lines, the section)
SOURCES = {"supervisor.toml.5": (reference.BEGIN, reference.END, reference.roff),
           "llm-supervisorctl.1": (manual.BEGIN, manual.END, manual.roff)}


def rendered(text: str, page: str = "supervisor.toml.5") -> str:
    """The page with its generated section as its source says (before EXIT STATUS, or
    SEE ALSO, when it has none yet)."""
    begin, end, build = SOURCES[page]
    block = build()
    if begin in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end + "\n", 1)[1]
        return head + block + tail
    anchor = ".SH EXIT STATUS" if ".SH EXIT STATUS" in text else ".SH SEE ALSO"
    head, sep, tail = text.partition(anchor)
    return head + block + sep + tail


def main() -> int:
    stale = []
    for page in SOURCES:
        path = MAN / page
        text = path.read_text()
        new = rendered(text, page)
        if new != text:
            stale.append(path)
            if "--check" not in sys.argv[1:]:
                path.write_text(new)
    if "--check" in sys.argv[1:] and stale:
        for path in stale:
            print(f"{path}: its generated section differs from its source; run"
                  " dev/manpage.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
