"""The canary's text judged (checks/output.py): garbage as a faulted GPU produces it is
degenerate, and the answers healthy models give are not."""

from __future__ import annotations

import pytest

from llm_supervisor.checks.output import degenerate


@pytest.mark.parametrize("text", [
    " five, six, seven, eight",
    "\n5, 6, 7, 8",
    "Hello! I am a simulated engine,",
    " one, two, three, four, five",
    "ok ok ok",            # three words: too short to call a repetition
    "Ça fait cinq, six…",  # non-ASCII text is text
])
def test_text_a_healthy_model_answers_is_not_degenerate(text: str) -> None:
    assert degenerate(text, 8) is None


@pytest.mark.parametrize(("text", "tokens", "says"), [
    ("GGGGGGGG", 8, "one character repeated 8 times"),
    ("G G G G G G", 6, "one character repeated 6 times"),
    (" the the the the the", 5, "one word repeated 5 times"),
    ("\ufffd\ufffd\ufffd\ufffdab", 6, "4 of 6 characters are not text"),
    ("", 8, "8 tokens but no text"),
    ("\n\n \n", 4, "4 tokens but no text"),
])
def test_garbage_is_degenerate_with_the_text_as_evidence(text: str, tokens: int,
                                                         says: str) -> None:
    why = degenerate(text, tokens)
    assert why is not None and why.startswith(says), why


def test_no_text_and_no_tokens_is_not_judged() -> None:
    assert degenerate("", 0) is None and degenerate("", None) is None
