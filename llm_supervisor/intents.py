"""Operator intents: restart, demote, promote, pin, unpin — asked over the control socket,
applied by the engine's own loop.

A handler validates the request against what it can read (``validate``: the tier names, what
is usable now, the pin), queues the ``Intent`` on the engine (``Engine.submit``), which wakes
the engine's loop, and awaits the acknowledgement (gunicorn's ``ctl/`` handlers with
``arbiter.wakeup()``). The engine applies intents at the start of its next check, under its
own lock, and is the only writer of its state; the control plane never is. What changed
between validation and application (a tier no longer usable) refuses the intent there, with
the same ``Refused`` error. Each applied intent is recorded once, as an ``operator`` event
naming the uid that asked and only the fields that matter (the tier), never the request body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llm_supervisor import policy
from llm_supervisor.causes import Cause
from llm_supervisor.errors import Refused

if TYPE_CHECKING:
    from llm_supervisor.engine import Engine

Verb = Literal["restart", "demote", "promote", "pin", "unpin"]
VERBS: tuple[str, ...] = ("restart", "demote", "promote", "pin")


@dataclass(frozen=True)
class Intent:
    verb: Verb
    uid: int
    tier: str | None = None  # pin: the tier asked for

    @property
    def reason(self) -> str:
        return f"{self.verb} by uid {self.uid}"


@dataclass(frozen=True)
class View:
    """What validation reads of one engine: plain data, taken when the request arrives."""

    name: str
    chain: Sequence[str]
    tier: str | None
    pinned: str | None
    usable: Sequence[str]
    why_not: Mapping[str, str]  # unusable tier -> why


def validate(view: View, verb: str, method: str, body: Mapping[str, Any], uid: int
             ) -> Intent:
    """The intent a request asks for, or ``Refused`` (nothing is queued, nothing recorded)."""
    if verb == "pin" and method == "DELETE":
        return Intent("unpin", uid)
    if verb == "pin":
        tier = body.get("tier")
        if tier not in view.chain:
            raise Refused(400, f"tier must be one of {list(view.chain)}", {"tier": tier})
        check_usable(view.name, str(tier), view.usable, view.why_not)
        return Intent("pin", uid, str(tier))
    if verb not in VERBS:
        raise Refused(404, f"unknown action {verb}")
    if view.pinned and verb in ("demote", "promote"):
        raise Refused(409, f"{view.name} is pinned to {view.pinned}; unpin it first")
    if verb == "demote" and policy.tier_below(view.chain, view.usable, view.tier) is None:
        raise Refused(409, f"no usable tier below {view.tier}")
    if verb == "restart" and policy.start_tier(view.chain, view.usable, pinned=view.pinned,
                                               current=view.tier) is None:
        raise Refused(409, f"no usable tier for {view.name}", dict(view.why_not))
    return Intent(verb, uid)  # type: ignore[arg-type]  # one of VERBS


def check_usable(name: str, tier: str, usable: Sequence[str], why_not: Mapping[str, str]
                 ) -> None:
    if tier not in usable:
        raise Refused(409, f"{tier} is not usable for {name}", dict(why_not))


async def apply(engine: Engine, intent: Intent) -> str:
    """Carry out one intent, from the engine's own loop and under its lock: the only place
    the operator changes an engine."""
    usable = engine.actuator.usable(engine)
    record = {"cause": Cause.OPERATOR.value, "reason": intent.reason}
    if intent.verb == "unpin":
        engine.record("operator", **record, evidence=None)
        engine.memory.pinned = None
        engine.record("unpin", cause=Cause.OPERATOR.value,
                      reason=f"unpinned by uid {intent.uid}")
        return "unpinned"
    if intent.verb == "pin":
        tier = intent.tier
        assert tier is not None
        check_usable(engine.name, tier, usable, {})
        engine.record("operator", **record, evidence={"tier": tier})
        engine.memory.pinned = tier
        engine.memory.next_promotion_at = None
        engine.record("pin", to=tier, cause=Cause.OPERATOR.value,
                      reason=f"pinned to {tier} by uid {intent.uid}")
        if engine.tier != tier:
            await engine.start_on(tier, Cause.OPERATOR, f"pinned to {tier} by uid {intent.uid}")
        return f"pinned to {tier}"
    if engine.memory.pinned and intent.verb in ("demote", "promote"):
        raise Refused(409, f"{engine.name} is pinned to {engine.memory.pinned}; unpin it first")
    if intent.verb == "restart":
        target = policy.start_tier(engine.chain, usable, pinned=engine.memory.pinned,
                                   current=engine.tier)
        if target is None:
            raise Refused(409, f"no usable tier for {engine.name}")
        engine.record("operator", **record, evidence={"tier": target})
        await engine.start_on(target, Cause.OPERATOR, f"restarted by uid {intent.uid}")
        return "restarted"
    if intent.verb == "demote":
        below = policy.tier_below(engine.chain, usable, engine.tier)
        if below is None:
            raise Refused(409, f"no usable tier below {engine.tier}")
        engine.record("operator", **record, evidence={"tier": below})
        await engine.start_on(below, Cause.OPERATOR,
                              f"demoted from {engine.tier} by uid {intent.uid}")
        return f"demoted to {below}"
    await engine.actuator.reprobe()  # promote: with what the host has now
    best = policy.best_tier(engine.chain, engine.actuator.usable(engine))
    if best is None or best == engine.tier:
        raise Refused(409, f"{engine.name} is already on its best usable tier")
    engine.record("operator", **record, evidence={"tier": best})
    await engine.promote(best, f"asked by uid {intent.uid}")
    return f"promoting to {best}"
