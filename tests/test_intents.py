"""Operator intents: validated against a plain view (nothing queued, nothing recorded when
refused), applied by the engine's own loop, acknowledged to the asker; one ``operator`` event
with only the fields that matter."""

from __future__ import annotations

import asyncio

import pytest
from fakes import started

from llm_supervisor.causes import Cause
from llm_supervisor.control import handlers
from llm_supervisor.errors import HTTPError, Refused, SupervisorError
from llm_supervisor.intents import Intent, Verb, View, check, validate

VIEW = View("main", ("rocm", "vulkan", "cpu"), "rocm", None, ["rocm", "cpu"],
            {"vulkan": "vulkaninfo lists no GPU"})


@pytest.mark.parametrize(("verb", "method", "body", "status"), [
    ("pin", "POST", {"tier": "metal", "note": "x" * 10_000}, 400),
    ("pin", "POST", {"tier": "vulkan"}, 409),        # not usable here
    ("frobnicate", "POST", {}, 404),
])
def test_a_refused_request_is_no_intent(verb, method, body, status):
    with pytest.raises(Refused) as exc:
        validate(VIEW, verb, method, body, 0)
    assert exc.value.status == status


def test_requests_become_intents_with_only_what_matters():
    assert validate(VIEW, "pin", "POST", {"tier": "cpu", "note": "y" * 10_000}, 7) == \
        Intent("pin", 7, "cpu")
    assert validate(VIEW, "pin", "DELETE", {}, 0) == Intent("unpin", 0)
    assert validate(VIEW, "restart", "POST", {}, 0) == Intent("restart", 0)
    pinned = View("main", VIEW.chain, "cpu", "cpu", ["rocm", "cpu"], {})
    for verb in ("demote", "promote"):
        with pytest.raises(Refused) as exc:
            validate(pinned, verb, "POST", {}, 0)
        assert exc.value.status == 409 and "unpin it first" in exc.value.message
    bottom = View("main", VIEW.chain, "cpu", None, ["cpu"], {})
    with pytest.raises(Refused, match="no usable tier below cpu"):
        validate(bottom, "demote", "POST", {}, 0)
    nothing = View("main", VIEW.chain, None, None, [], {"rocm": "no /dev/kfd"})
    with pytest.raises(Refused) as exc:
        validate(nothing, "restart", "POST", {}, 0)
    assert exc.value.detail == {"rocm": "no /dev/kfd"}


async def test_the_engine_applies_intents_in_its_own_loop_and_acknowledges():
    engine, actuator, api, clock, wall = await started()
    loop = asyncio.create_task(engine.run())
    try:
        done = await handlers.acknowledged(engine, Intent("pin", 0, "cpu"))
        assert done == "pinned to cpu" and engine.memory.pinned == "cpu"
        assert actuator.switches[-1] == "cpu" and engine.tier == "cpu"
        operator = [e for e in actuator.events if e["type"] == "operator"]
        assert operator == [{"type": "operator", "cause": "operator", "reason": "pin by uid 0",
                             "evidence": {"tier": "cpu"}}]
        with pytest.raises(Refused, match="pinned to cpu; unpin it first"):
            await handlers.acknowledged(engine, Intent("demote", 0))
        assert await handlers.acknowledged(engine, Intent("unpin", 0)) == "unpinned"
        assert engine.memory.pinned is None
        assert await handlers.acknowledged(engine, Intent("restart", 5)) == "restarted"
        assert actuator.switches[-1] == "cpu"
        assert "restarted by uid 5" in [h["reason"] for h in engine.memory.history]
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_a_tier_gone_between_validation_and_application_is_refused_there():
    engine, actuator, api, clock, wall = await started()
    actuator.tiers = ["rocm"]  # vulkan and cpu went away after the handler validated
    engine.submit(Intent("pin", 0, "cpu"))
    pending = engine.queued[0][1]
    await engine.tick()
    with pytest.raises(Refused) as exc:
        pending.result()
    assert exc.value.status == 409 and engine.memory.pinned is None
    assert not [e for e in actuator.events if e["type"] in ("operator", "pin")]


async def test_an_intent_not_taken_in_time_is_withdrawn_not_half_done(monkeypatch):
    engine, actuator, api, clock, wall = await started()
    monkeypatch.setattr(handlers, "ACK_TIMEOUT", 0.05)
    async with engine.lock:  # the loop is busy (a long check): nothing takes the intent
        with pytest.raises(HTTPError) as exc:
            await handlers.acknowledged(engine, Intent("restart", 0))
    assert exc.value.status == 504 and "nothing was done" in exc.value.error
    switches = list(actuator.switches)
    await engine.tick()  # the withdrawn intent is skipped
    assert actuator.switches == switches and not engine.queued
    assert not [e for e in actuator.events if e["type"] == "operator"]


def test_the_control_plane_reads_no_cli_and_writes_no_engine_state():
    import inspect

    source = inspect.getsource(handlers)
    assert "llm_supervisor.control.cli" not in source and "llm_supervisor.daemon" not in source
    assert "engine.memory.pinned =" not in source
    assert "start_on(" not in source and issubclass(Refused, SupervisorError)
    assert Cause.OPERATOR.value == "operator"


def test_the_verbs_are_one_list_the_api_and_the_cli_are_made_from(monkeypatch):
    """``Verb`` is the only list of the operator's verbs: the control API routes each one the
    way ``Verb.route`` says, the CLI has a command for each that asks it that way, and the
    completion offers engine names after each."""
    from llm_supervisor.control import cli, completion

    assert {v.value for v in Verb} == {"restart", "demote", "promote", "pin", "unpin", "stop",
                                       "start"}
    routed = {(method, pattern[3]) for method, pattern, _, write in handlers.routes(
        None).routes if pattern[:3] == ["v1", "engines", "{name}"] and len(pattern) == 4}
    assert routed == {v.route for v in Verb}
    for verb in Verb:
        assert Verb.asked(*verb.route) is verb
    with pytest.raises(Refused) as exc:
        Verb.asked("POST", "unpin")  # unpin is DELETE .../pin, nothing else
    assert exc.value.status == 404

    commands = {name: sub for action in cli.parser()._actions
                if isinstance(action, cli.argparse._SubParsersAction)
                for name, sub in action.choices.items()}
    helps = {a.dest: a.help for action in cli.parser()._actions
             if isinstance(action, cli.argparse._SubParsersAction)
             for a in action._choices_actions}
    sent = []
    monkeypatch.setattr(cli, "_call", lambda args, method, target, body=None: sent.append(
        (method, target, body)) or {"result": "done"})
    for verb in Verb:
        positional = [a.dest for a in commands[verb.value]._actions if not a.option_strings]
        assert positional == ["engine", "tier"] if verb.takes_tier else ["engine"]
        assert helps[verb.value] == verb.help
        assert cli.cli([verb.value, "main", *(["cpu"] if verb.takes_tier else [])]) == 0
        method, part = verb.route
        assert sent[-1] == (method, f"/v1/engines/main/{part}",
                            {"tier": "cpu"} if verb.takes_tier else None)
    assert set(Verb) <= set(completion.engine_commands(cli.parser()))


def test_a_request_is_checked_by_the_rules_the_engine_applies_it_with():
    """The handler's ``validate`` is ``check`` on what it reads; a promote's want of a better
    tier is left to the engine, which probes again first."""
    on_best = View("main", ("rocm", "cpu"), "rocm", None, ["rocm", "cpu"])
    assert validate(on_best, "promote", "POST", {}, 0) == Intent(Verb.PROMOTE, 0)
    with pytest.raises(Refused, match="main is already on its best usable tier"):
        check(on_best, Verb.PROMOTE)
    assert check(on_best, Verb.DEMOTE) == "cpu" and check(on_best, Verb.RESTART) == "rocm"
    assert check(on_best, Verb.PIN, "cpu") == "cpu" and check(on_best, Verb.UNPIN) is None
    with pytest.raises(ValueError):
        Intent("frobnicate", 0)  # an intent is one of the verbs


async def refused_by_the_engine(engine, intent: Intent) -> Refused:
    engine.submit(intent)
    pending = engine.queued[-1][1]
    await engine.tick()
    with pytest.raises(Refused) as exc:
        pending.result()
    return exc.value


@pytest.mark.parametrize(("usable", "pinned", "tier", "verb", "asked"), [
    (["rocm"], None, "rocm", Verb.PIN, "cpu"),            # not usable
    (["rocm", "cpu"], "cpu", "cpu", Verb.DEMOTE, None),   # pinned
    (["rocm", "cpu"], "cpu", "cpu", Verb.PROMOTE, None),  # pinned
    (["rocm"], None, "rocm", Verb.DEMOTE, None),          # nothing below
    ([], None, "rocm", Verb.RESTART, None),               # nothing usable
])
async def test_the_handler_and_the_engine_refuse_with_the_same_words(
        usable, pinned, tier, verb, asked):
    """Whoever applies an intent refuses it as the handler does: same status, same message
    (one rule, ``intents.check``, not a copy that drifts)."""
    engine, actuator, api, clock, wall = await started(tier)
    engine.memory.pinned = pinned
    actuator.tiers = usable
    view = engine.intent_view(engine.usable())
    method, part = verb.route
    with pytest.raises(Refused) as handler:
        validate(view, part, method, {"tier": asked}, 0)
    by_engine = await refused_by_the_engine(engine, Intent(verb, 0, asked))
    assert (by_engine.status, by_engine.message) == (handler.value.status,
                                                     handler.value.message)
