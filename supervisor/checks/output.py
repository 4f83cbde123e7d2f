"""Is a canary's answer text, or what a faulted GPU produces (pure)?

After a ROCm fault an engine can answer at full speed with garbage until it is restarted:
"GGGGGGGG…" (ollama #12512), one token over and over, or bytes that are no text (llama.cpp
#5355). The canary asks for a few tokens with a fixed seed at temperature 0 (``PROMPT``, a
sequence any model continues), so a healthy engine answers the same words every time. The
answer is degenerate when:

- tokens were counted but the text is empty (or only whitespace);
- it is one character repeated (at least ``MIN_RUN`` of them, whitespace aside);
- it is one word repeated (at least ``MIN_RUN`` words);
- half or more of its characters are U+FFFD, the replacement character: bytes that are no
  UTF-8 text.
"""

from __future__ import annotations

PROMPT = "Count with me: one, two, three, four,"
TOKENS = 8      # asked of every engine: enough to see a repetition, cheap on any tier
SEED = 42
MIN_RUN = 4


def degenerate(text: str, tokens: int | None) -> str | None:
    """Why the answer is garbage, or None when it reads as text."""
    shown = repr(text[:40]) + ("…" if len(text) > 40 else "")
    solid = "".join(text.split())
    if not solid:
        return f"{tokens} tokens but no text" if tokens else None
    replaced = solid.count("\ufffd")
    if replaced and replaced * 2 >= len(solid):
        return f"{replaced} of {len(solid)} characters are not text (U+FFFD): {shown}"
    if len(solid) >= MIN_RUN and len(set(solid)) == 1:
        return f"one character repeated {len(solid)} times: {shown}"
    words = text.split()
    if len(words) >= MIN_RUN and len(set(words)) == 1:
        return f"one word repeated {len(words)} times: {shown}"
    return None
