"""The speed rule (checks/speed.py) on recorded sequences of canary rates: steady, one slow
outlier, a busy engine, a real drop, a drop to the CPU's speed, a model change, and what a
restarted daemon keeps."""

from __future__ import annotations

import json

from llm_supervisor.checks.speed import LEARN, LOW_RUN, Kind, SpeedBook

STEADY = [44.8, 45.3, 45.1, 44.2, 46.0, 45.5, 44.9, 45.2, 45.0, 45.4]


def run(book: SpeedBook, rates: list[float], *, tier: str = "rocm", busy: bool = False,
        gpu: bool = True) -> list[Kind]:
    return [book.judge(tier, r, busy=busy, gpu=gpu).kind for r in rates]


def test_learns_then_judges_a_steady_engine_ok() -> None:
    book = SpeedBook({}, "k")
    kinds = run(book, STEADY)
    assert kinds[:LEARN] == [Kind.LEARNING] * LEARN
    assert set(kinds[LEARN:]) == {Kind.OK}
    assert 44.9 <= (book.reference("rocm") or 0) <= 45.3


def test_one_slow_outlier_decides_nothing() -> None:
    book = SpeedBook({}, "k")
    run(book, STEADY)
    kinds = run(book, [12.0, 45.0, 11.0, 44.0, 10.0, 45.2])
    assert Kind.SLOW not in kinds and Kind.CPU not in kinds
    assert kinds.count(Kind.LOW) == 3
    assert 44.9 <= (book.reference("rocm") or 0) <= 45.3  # outliers are never learned


def test_a_busy_engine_is_neither_judged_nor_learned() -> None:
    book = SpeedBook({}, "k")
    run(book, STEADY)
    assert set(run(book, [9.0] * 10, busy=True)) == {Kind.BUSY}
    assert 44.9 <= (book.reference("rocm") or 0) <= 45.3
    # and busy canaries in the middle neither start nor end a run of low ones
    kinds = run(book, [20.0, 20.0])
    kinds += run(book, [45.0], busy=True)
    kinds += run(book, [20.0])
    assert kinds == [Kind.LOW, Kind.LOW, Kind.BUSY, Kind.SLOW]


def test_a_real_drop_is_slow_after_a_run_of_low_canaries() -> None:
    book = SpeedBook({}, "k")
    run(book, STEADY)
    verdicts = [book.judge("rocm", r, busy=False, gpu=True) for r in [20.0, 19.0, 21.0, 20.0]]
    assert [v.kind for v in verdicts] == [Kind.LOW] * (LOW_RUN - 1) + [Kind.SLOW] * 2
    assert "20.0 tokens/s" in verdicts[LOW_RUN - 1].detail and "45.2" in \
        verdicts[LOW_RUN - 1].detail
    assert run(book, [45.0]) == [Kind.OK]  # a normal canary ends the run
    assert run(book, [20.0]) == [Kind.LOW]


def test_on_a_gpu_tier_a_drop_to_the_cpus_speed_is_cpu() -> None:
    book = SpeedBook({}, "k")
    run(book, STEADY)
    assert run(book, [8.0] * LOW_RUN) == [Kind.LOW, Kind.LOW, Kind.CPU]
    # on the cpu tier itself (or any tier judged not a GPU's) the same drop is only slow
    cpu = SpeedBook({}, "k")
    run(cpu, STEADY, tier="cpu", gpu=False)
    assert run(cpu, [8.0] * LOW_RUN, tier="cpu", gpu=False)[-1] == Kind.SLOW


def test_the_engines_own_cpu_speed_names_a_milder_drop_as_the_cpus() -> None:
    book = SpeedBook({}, "k")
    run(book, [12.0] * LEARN, tier="cpu", gpu=False)  # it once ran on the CPU: 12 t/s
    run(book, STEADY)
    assert run(book, [16.0] * LOW_RUN)[-1] == Kind.CPU  # 16 <= 1.5 x 12, though > 45/4
    assert run(book, [20.0] * LOW_RUN)[-1] == Kind.SLOW


def test_another_model_or_config_starts_learning_afresh() -> None:
    data: dict[str, object] = {}
    run(SpeedBook(data, "qwen-config-1"), STEADY)
    assert SpeedBook(data, "qwen-config-1").reference("rocm") is not None
    again = SpeedBook(data, "llama-config-1")  # the key is the model and the settings
    assert again.reference("rocm") is None
    assert run(again, [8.0]) == [Kind.LEARNING]


def test_what_is_learned_survives_a_daemon_restart_and_a_hostile_record() -> None:
    data: dict[str, object] = {}
    run(SpeedBook(data, "k"), STEADY)
    restored = json.loads(json.dumps(data))  # state.json
    assert SpeedBook(restored, "k").reference("rocm") == SpeedBook(data, "k").reference("rocm")
    hostile = {"key": "k", "tiers": {"rocm": {"samples": [1e309, -1, "x", True, None, 40.0],
                                              "low": "nope"}, "vulkan": 7}}
    book = SpeedBook(hostile, "k")
    assert book.reference("rocm") is None and book.reference("vulkan") is None
    summary = book.summary("rocm")
    assert summary is not None and summary["learned"] == 1 and summary["reference"] is None


def test_a_load_is_judged_against_the_engines_own_loads():
    """Between a floor and load_timeout: 3 x the learned load time once one was seen."""
    from llm_supervisor.checks.speed import LOAD_FLOOR, SpeedBook
    book = SpeedBook({}, "k")
    assert book.load_deadline("rocm", 120.0) == 120.0  # nothing learned: load_timeout
    book.learn_load("rocm", 4.0)
    assert book.load_deadline("rocm", 120.0) == LOAD_FLOOR  # 12 s is below the floor
    book.learn_load("rocm", 30.0)
    book.learn_load("rocm", 30.0)
    assert book.load_deadline("rocm", 120.0) == 90.0
    for _ in range(3):
        book.learn_load("rocm", 100.0)
    assert book.load_deadline("rocm", 120.0) == 120.0  # never past load_timeout
    assert book.load_deadline("vulkan", 120.0) == 120.0  # per tier
    assert book.load_deadline("rocm", 6.0) == 6.0  # a floor above the ceiling: the ceiling


def test_a_growing_memory_is_a_load_in_progress():
    from llm_supervisor.checks.progress import LOAD_STEP, Kind, Watch, judge
    watch = Watch(0.0, "load")
    watch.grew(0.0, 100 * 2**20)
    watch.grew(50.0, 100 * 2**20 + LOAD_STEP)
    verdict = judge(watch, 50.0, 40.0, 20.0, 300.0)
    assert verdict.kind == Kind.BUSY and "memory grew" in verdict.detail
    watch.grew(80.0, 100 * 2**20 + LOAD_STEP + 1000)  # stopped growing: the load hangs
    assert judge(watch, 80.0, 40.0, 20.0, 300.0).kind == Kind.HANG


async def test_a_slow_rate_a_restart_did_not_change_is_adopted():
    """The speed fell by 60 % (a new driver, a larger context): the slow run restarts the
    engine on its tier; the same rate after the restart is the engine's speed now — adopted,
    never a demotion. A rate like the CPU's on a GPU tier is never adopted."""
    from test_engine import settle, started

    engine, actuator, api, clock, _ = await started()
    engine.speedbook.data["tiers"]["rocm"]["samples"] = [40.0] * 5
    api.eval_rate = 16.0  # below half, above a quarter: slow, not the CPU's
    for _ in range(20):
        await settle(engine)
        clock.now += 11
        if len(actuator.switches) > 1:
            break
    assert actuator.switches == ["rocm", "rocm"], engine.memory.reason  # restarted
    for _ in range(12):
        await settle(engine)
    assert actuator.switches == ["rocm", "rocm"], engine.memory.reason  # not demoted
    assert any(e["type"] == "speed" and e["to"] == "adopted" for e in actuator.events)
    assert engine.state.value == "healthy"
    assert engine.speedbook.data["tiers"]["rocm"]["samples"][:3] == [16.0] * 3
