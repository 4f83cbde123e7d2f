"""The progress rule: the engines' own words parsed as data, and the verdict on a waiting canary
over recorded sequences of readings."""

from __future__ import annotations

import pytest

from llm_supervisor.checks.progress import (
    Kind,
    Reading,
    Watch,
    completed_request,
    judge,
    parse_llama_metrics,
    parse_slots,
    parse_vllm_metrics,
)
from llm_supervisor.checks.runners import parse_start

DEADLINE, STALL, BLIND = 30.0, 60.0, 300.0

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 1.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="Qwen/Qwen2.5-7B-Instruct"} 1234.0
vllm:generation_tokens_total{engine="1",model_name="Qwen/Qwen2.5-7B-Instruct"} 100.0
"""
LLAMA = """# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 4000
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 1.23457e+06
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
"""


def test_metrics_are_read_as_data():
    v = parse_vllm_metrics(VLLM)
    assert v == Reading(tokens=1334.0, in_flight=2, waiting=1, source="/metrics")
    llama = parse_llama_metrics(LLAMA)
    assert llama is not None and llama.tokens == 1234570.0  # decode steps, not finished ones
    assert (llama.in_flight, llama.waiting) == (1, 2)
    assert parse_vllm_metrics(LLAMA) is None and parse_llama_metrics("garbage{") is None


def test_slots_as_llama_server_serves_them():
    doc = [{"id": 0, "id_task": 7, "is_processing": True, "n_prompt_tokens_processed": 11,
            "next_token": [{"has_next_token": True, "n_remain": -1, "n_decoded": 64}]},
           {"id": 1, "n_ctx": 4096, "speculative": False, "is_processing": False}]
    reading = parse_slots(doc)
    assert reading is not None and reading.in_flight == 1
    assert reading.slots == ((0, 7, 75, True), (1, -1, 0, False))
    for bad in ([], {"slots": []}, [{"id": 0}], [1, 2], "x"):
        assert parse_slots(bad) is None


@pytest.mark.parametrize(("line", "done"), [
    ('[GIN] 2026/12/03 - 08:51:00 | 200 |   41.2345678s |       127.0.0.1 | POST     "/api/chat"',
     True),
    ('[GIN] 2026/12/03 - 08:51:00 | 200 |        1m2s |       127.0.0.1 | POST     '
     '"/v1/chat/completions"', True),
    ('[GIN] 2026/12/03 - 08:51:00 |\x1b[97;42m 200 \x1b[0m|  350.215µs |  127.0.0.1 |\x1b[97;46m'
     ' POST    \x1b[0m "/api/generate"', True),
    ('[GIN] 2026/12/03 - 08:51:00 | 200 |     850ns |       127.0.0.1 | GET      "/"', False),
    ('[GIN] 2026/12/03 - 08:51:00 | 500 |   2.1s |       127.0.0.1 | POST     "/api/chat"',
     False),
    ('[GIN] 2026/12/03 - 08:51:00 | 200 |   1.1s |       127.0.0.1 | POST     "/api/pull"',
     False),
    ('(APIServer pid=8) INFO:     127.0.0.1:50132 - "POST /v1/completions HTTP/1.1" 200 OK',
     True),
    ('(APIServer pid=8) INFO:     127.0.0.1:50132 - "GET /metrics HTTP/1.1" 200 OK', False),
    ('time=2026 level=INFO msg="inference compute" library=ROCm', False),
])
def test_completed_requests_from_access_lines(line, done):
    assert completed_request(line) is done


def port_of(line: str) -> int | None:
    runner = parse_start(line)
    return runner.port if runner else None


def test_the_runner_port_from_ollamas_line():
    line = ('time=2026-12-03T08:00:00.000Z level=INFO source=llama_server.go:431 msg="starting'
            ' llama-server" cmd="/usr/lib/ollama/llama-server --model /var/lib/ollama/blobs/'
            'sha256-1 --port 41234 --host 127.0.0.1 --no-webui -c 8192 -np 1"')
    assert port_of(line) == 41234
    assert port_of(line.replace("--port 41234", "--port=41235")) == 41235
    assert port_of('msg="starting runner" cmd="/x/ollama runner --port 39001"') == 39001
    assert port_of('msg="starting llama-server" cmd="/x --port 99999"') is None
    assert port_of("starting llama-server, nothing else") is None


def tokens(t: float) -> Reading:
    return Reading(tokens=t, in_flight=1, waiting=0, source="/metrics")


def play(samples: list[tuple[float, Reading | None]], phase: str = "generate",
         start: float = 0.0) -> list[Kind]:
    """Feed readings at their times; the verdict after each."""
    watch = Watch(start, phase)
    verdicts = []
    for at, reading in samples:
        watch.add(at, reading)
        verdicts.append(judge(watch, at, DEADLINE, STALL, BLIND).kind)
    return verdicts


def test_a_canary_within_its_deadline_has_no_verdict():
    assert play([(0, tokens(0)), (10, tokens(0)), (29, tokens(0))]) == [Kind.PENDING] * 3


def test_an_idle_engine_that_stops_is_a_hang_at_the_deadline():
    idle = Reading(tokens=50, in_flight=1, waiting=0, source="/metrics")  # only the canary
    assert play([(0, idle), (15, idle), (30, idle)])[-1] == Kind.HANG


def test_tokens_flowing_make_a_queued_canary_busy_however_long_it_waits():
    samples = [(float(t), tokens(t * 20)) for t in range(0, 600, 5)]
    verdicts = play(samples)
    assert Kind.HANG not in verdicts and Kind.STALL not in verdicts
    assert verdicts[-1] == Kind.BUSY


def test_one_quiet_sample_among_busy_ones_changes_nothing():
    samples = [(0.0, tokens(0)), (10.0, tokens(100)), (20.0, tokens(200)), (40.0, tokens(200)),
               (50.0, tokens(300))]
    assert play(samples)[-2:] == [Kind.BUSY, Kind.BUSY]


def test_tokens_that_stop_with_requests_in_flight_are_a_stall_after_stall_after():
    busy = [(float(t), Reading(tokens=t * 10, in_flight=3, waiting=2, source="/metrics"))
            for t in range(0, 40, 5)]
    stuck = Reading(tokens=350, in_flight=3, waiting=2, source="/metrics")
    quiet = [(float(t), stuck) for t in range(40, 120, 5)]
    verdicts = play(busy + quiet)
    kinds = dict(zip([t for t, _ in busy + quiet], verdicts, strict=True))
    assert kinds[95.0] in (Kind.BUSY, Kind.WAITING)  # 60 s after the last token at 35 s
    assert kinds[100.0] == Kind.STALL and kinds[115.0] == Kind.STALL


def test_a_restarted_engine_resets_its_counter_without_a_false_verdict():
    samples = [(0.0, tokens(5000)), (10.0, tokens(5100)), (20.0, tokens(40)),
               (35.0, tokens(120))]
    assert play(samples)[-1] == Kind.BUSY


def test_without_a_token_signal_completions_keep_it_busy_then_the_blind_bound():
    watch = Watch(0.0, "generate")
    for t in (10.0, 70.0, 130.0):
        watch.completed(t)
    assert judge(watch, 140.0, DEADLINE, STALL, BLIND).kind == Kind.BUSY
    assert judge(watch, 200.0, DEADLINE, STALL, BLIND).kind == Kind.WAITING
    verdict = judge(watch, 300.0, DEADLINE, STALL, BLIND)
    assert verdict.kind == Kind.HANG and "no request completed" in verdict.detail
    watch.completed(-5.0)  # before the canary began: not progress it can claim
    assert watch.since(-10.0) == (0, 3, 0, 0)


def test_at_load_without_a_signal_the_load_deadline_decides():
    watch = Watch(0.0, "load")
    assert judge(watch, 29.0, DEADLINE, STALL, BLIND).kind == Kind.PENDING
    verdict = judge(watch, 30.0, DEADLINE, STALL, BLIND)
    assert verdict.kind == Kind.HANG and "loading the model" in verdict.detail


def test_slots_the_canary_holds_are_not_someone_elses_work():
    before = Reading(slots=((0, 3, 40, False), (1, -1, 0, False)), in_flight=0,
                     source="/slots")
    ours = Reading(slots=((0, 4, 1, True), (1, -1, 0, False)), in_flight=1, source="/slots")
    watch = Watch(0.0, "generate")
    watch.add(0.0, before)
    watch.add(31.0, ours)
    assert watch.others == 0
    # an idle slot took the canary's task: nothing finished (task 3 was done before the
    # canary was sent), and the one token it decoded before it stuck is no one's work
    verdict = judge(watch, 31.0, DEADLINE, STALL, BLIND)
    assert verdict.kind == Kind.HANG, verdict
    moving = Reading(slots=((0, 4, 6, True), (1, -1, 0, False)), in_flight=1, source="/slots")
    watch.add(45.0, moving)  # the same task decodes on: busy (a slow tier), within STALL
    assert judge(watch, 45.0, DEADLINE, STALL, BLIND).kind == Kind.BUSY
    watch.add(106.0, moving)  # then nothing for longer than STALL
    assert judge(watch, 106.0, DEADLINE, STALL, BLIND).kind == Kind.HANG
    # a user's request held the only slot before the canary: it is someone else's
    user = Reading(slots=((0, 9, 500, True),), in_flight=1, source="/slots")
    watch = Watch(0.0, "generate")
    watch.add(0.0, user)
    watch.add(31.0, user)
    assert watch.others == 1
    assert judge(watch, 31.0, DEADLINE, STALL, BLIND).kind == Kind.WAITING
    watch.add(60.0, user)
    assert judge(watch, 60.0, DEADLINE, STALL, BLIND).kind == Kind.STALL


def test_the_simulated_engines_access_lines_read_as_completions():
    import io

    from llm_supervisor.simengine.logs import Log

    for kind, path, done in (("ollama", "/api/chat", True), ("ollama", "/", False),
                             ("vllm", "/v1/completions", True)):
        stream = io.StringIO()
        Log(kind, stream).access(200, 75.3, ("127.0.0.1", 50132), "GET" if path == "/"
                                 else "POST", path, "HTTP/1.1")
        assert completed_request(stream.getvalue()) is done, stream.getvalue()
    stream = io.StringIO()
    Log("ollama", stream).gin(200, 75.3, "127.0.0.1", "POST", "/api/chat")
    assert "| " + "1m15s".rjust(13) + " |" in stream.getvalue()  # truncated past a minute


def tcp(*sent: int) -> Reading:
    """The kernel's view: one other client per byte count (what it was sent so far)."""
    from llm_supervisor.checks.progress import from_clients
    from llm_supervisor.host.clients import Clients, Connection
    reading = from_clients(Clients(tuple(Connection(f"127.0.0.1:{5000 + i}", n, 10, 100 + i)
                                         for i, n in enumerate(sent))))
    assert reading is not None
    return reading


def test_without_tokens_nobody_else_connected_is_a_hang_at_the_deadline():
    """An Ollama before 0.30: the kernel shows no other client, so nothing can be ahead of
    the canary — a hang at its deadline, not at the blind bound."""
    watch = Watch(0.0, "generate")
    watch.add(0.0, tcp())
    watch.add(DEADLINE + 1, tcp())
    verdict = judge(watch, DEADLINE + 1, DEADLINE, STALL, BLIND)
    assert verdict.kind == Kind.HANG and "nobody else connected" in verdict.detail


def test_without_tokens_a_streamed_answer_to_another_client_is_busy():
    watch = Watch(0.0, "generate")
    watch.add(0.0, tcp(1000))
    watch.add(DEADLINE + 1, tcp(9000))  # the user's answer flows
    assert judge(watch, DEADLINE + 1, DEADLINE, STALL, BLIND).kind == Kind.BUSY
    watch.add(DEADLINE + STALL + 2, tcp(9000))  # connected, nothing flows: only the blind
    assert judge(watch, DEADLINE + STALL + 2, DEADLINE, STALL, BLIND).kind == Kind.WAITING
    assert judge(watch, BLIND + 1, DEADLINE, STALL, BLIND).kind == Kind.HANG


def slot(task: int, processed: int, decoded: int, busy: bool = True) -> dict:
    return {"id": 0, "id_task": task, "is_processing": busy, "n_prompt_tokens": 30000,
            "n_prompt_tokens_processed": processed,
            "next_token": [{"n_decoded": decoded}]}


def test_a_long_prompts_prefill_on_the_only_slot_is_busy_not_a_stall():
    """A user's 30,000-token prompt on llama-server's only slot: no token is decoded for a
    long while, but the prompt is processed batch by batch — progress, never a stall."""
    from llm_supervisor.checks.progress import parse_slots
    watch = Watch(0.0, "generate")
    watch.add(0.0, parse_slots([slot(7, 0, 0)]))
    for t, done in ((STALL, 2048), (2 * STALL, 4096), (3 * STALL, 6144)):
        watch.add(t, parse_slots([slot(7, done, 0)]))
        verdict = judge(watch, t, DEADLINE, STALL, BLIND)
        assert verdict.kind == Kind.BUSY, verdict
    watch.add(5 * STALL, parse_slots([slot(7, 6144, 0)]))  # then nothing for 2 x S: a stall
    assert judge(watch, 5 * STALL, DEADLINE, STALL, BLIND).kind == Kind.STALL
