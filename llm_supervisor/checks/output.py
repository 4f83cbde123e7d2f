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

import math

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


# Embeddings: two different inputs, one request. Faulty GPUs answer NaN (llama.cpp #26044),
# all zeros (ollama #12611; on Ollama >= 0.30 a NaN arrives as zeros), or one vector whatever
# the input.
EMBED_INPUTS = ("The cat sat on the mat.", "Stock prices fell sharply on Monday.")
MIN_NORM = 1e-3  # every engine's vectors are normalised or at least of a real length


def bad_embeddings(vectors: object) -> str | None:
    """Why an embedding answer is what a faulted GPU produces, or None when it is sound."""
    if not isinstance(vectors, list) or len(vectors) != len(EMBED_INPUTS):
        got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
        return f"{got} vectors for {len(EMBED_INPUTS)} inputs"
    rows: list[list[float]] = []
    for vector in vectors:
        if not isinstance(vector, list) or not vector:
            return "an empty vector"
        values = [v for v in vector if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(values) != len(vector):
            return "values that are no numbers (null, NaN)"
        if not all(math.isfinite(v) for v in values):
            return "values that are not finite (NaN, Inf)"
        norm = math.sqrt(sum(v * v for v in values))
        if norm < MIN_NORM:
            return f"a vector of norm {norm:.2g} (all zeros)"
        rows.append([float(v) for v in values])
    if rows[0] == rows[1]:
        return "the same vector for two different inputs"
    return None
