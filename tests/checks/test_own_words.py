"""Only the engine's own words are classified, and blocking causes read in a log need a
failed start to act."""

from __future__ import annotations

import pytest
from fakes import started

from llm_supervisor.causes import Cause, Observation
from llm_supervisor.checks.classify import classify, engine_words, rules_for
from llm_supervisor.config import LogsSection
from llm_supervisor.states import EngineState
from llm_supervisor.systemd.systemctl import UnitStatus

ENGINE = rules_for(LogsSection())[0]


@pytest.mark.parametrize("line", [
    # Ollama's debug lines carry the prompt (routes.go: slog.Debug("chat request", ...))
    'time=2026-12-07T08:00:00.000Z level=DEBUG source=routes.go:1520 msg="chat request"'
    ' images=0 prompt="<|im_start|>user\\nWhy does HIP error: invalid device function'
    ' appear?<|im_end|>"',
    'time=2026-12-07T08:00:00.000Z level=DEBUG source=server.go:700 msg="completion request"'
    ' prompt="bind: address already in use, what now?" format=""',
    # vLLM's request logging
    "INFO 12-07 08:00:00 [logger.py:41] Received request cmpl-5f1-0: prompt: 'my GPU says"
    " ROCm error: out of memory', params: SamplingParams(n=1), prompt_token_ids: None",
    # llama-server --verbose
    'srv  log_server_r: request: {"prompt": "HIP error: hipErrorIllegalAddress", "n_predict": 8}',
])
def test_user_text_echoed_in_a_log_is_never_classified(line: str):
    assert classify(ENGINE, line, tier="rocm") is None, engine_words(line)


@pytest.mark.parametrize(("line", "cause"), [
    ('time=2026-12-07T08:00:00.000Z level=ERROR source=server.go:431 msg="llama runner'
     ' terminated" error="ROCm error: unspecified launch failure"', Cause.GPU_FAULT),
    ("Error: listen tcp 127.0.0.1:11434: bind: address already in use", Cause.PORT_IN_USE),
    ("ggml_cuda_compute_forward: HIP error: invalid device function", Cause.GPU_FAULT),
])
def test_the_engines_own_words_still_are(line: str, cause: Cause):
    found = classify(ENGINE, line, tier="rocm")
    assert found is not None and found.cause == cause


async def test_a_blocking_line_on_a_running_engine_does_not_block():
    engine, actuator, api, clock, _ = await started()
    assert engine.state == EngineState.HEALTHY
    engine.intake.finding(Observation.bad("log", Cause.PORT_IN_USE, "address already in use"))
    for _ in range(3):
        await engine.tick()
    assert engine.state == EngineState.HEALTHY and actuator.switches == ["rocm"]
    assert actuator.stops == 0


async def test_a_blocking_line_with_a_failed_start_blocks():
    engine, actuator, api, clock, _ = await started()
    await engine.start_on("rocm", Cause.OPERATOR)  # a restart, whose start fails
    engine.intake.finding(Observation.bad("log", Cause.PERMISSION, "mkdir /srv/models: permission"
                                   " denied", fix="chown it"))
    actuator.unit = UnitStatus("llm-main.service", "activating", "auto-restart", 1, 1, 0)
    await engine.tick()
    assert engine.state == EngineState.BLOCKED and engine.memory.cause == "permission"
    assert engine.memory.fix == "chown it" and actuator.stops == 1
