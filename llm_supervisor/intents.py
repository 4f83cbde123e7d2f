"""Operator intents: restart, demote, promote, pin, unpin, stop, start — asked over the
control socket, applied by the engine's own loop.

The verbs are ``Verb``: the one list the control API's routes, the CLI's commands (and so its
bash completion) are made from, with how each is asked over HTTP (``Verb.route``) and what the
CLI says of it (``Verb.help``). A verb's rules are ``check``, the one function both sides call:
the handler, against what it can read when the request arrives (``validate``: the tier
names, what is usable now, the pin), and the engine's loop, against what is usable when it
applies the intent (``apply``), so both refuse with the same ``Refused`` and the same words.

A handler queues the ``Intent`` on the engine (``Engine.submit``), which wakes the engine's
loop, and awaits the acknowledgement (gunicorn's ``ctl/`` handlers with
``arbiter.wakeup()``). The engine applies intents at the start of its next check, under its
own lock, and is the only writer of its state; the control plane never is. What changed
between validation and application (a tier no longer usable) refuses the intent there. Each
applied intent is recorded as an ``operator`` event naming the uid that asked and only the
fields that matter (the tier), never the request body; a pin or an unpin adds its own
``pin``/``unpin`` event, and a move to another tier its ``tier`` event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, assert_never

from llm_supervisor import policy
from llm_supervisor.errors import Refused


class Verb(StrEnum):
    """What an operator can ask of an engine. Everything else that names the verbs (the
    control API's routes, the CLI's commands, their help, the completion) is derived from
    this enum, never spelled again."""

    RESTART = "restart"
    DEMOTE = "demote"
    PROMOTE = "promote"
    PIN = "pin"
    UNPIN = "unpin"
    STOP = "stop"
    START = "start"

    @property
    def route(self) -> tuple[str, str]:
        """(HTTP method, last part of ``/v1/engines/{name}/…``) that asks for it: unpin is
        ``DELETE …/pin``, every other verb a ``POST`` of its own name."""
        return ("DELETE", Verb.PIN.value) if self is Verb.UNPIN else ("POST", self.value)

    @property
    def takes_tier(self) -> bool:
        """Whether the request names a tier (``{"tier": …}``, the CLI's ``TIER``)."""
        return self is Verb.PIN

    @property
    def help(self) -> str:
        """What it does, in the CLI's words (``llm-supervisorctl --help``)."""
        match self:
            case Verb.RESTART:
                return "restart an engine on its tier"
            case Verb.DEMOTE:
                return "move an engine one usable tier down"
            case Verb.PROMOTE:
                return "try the best usable tier now"
            case Verb.PIN:
                return "freeze an engine on a tier until unpinned"
            case Verb.UNPIN:
                return "release a pinned tier"
            case Verb.STOP:
                return "stop an engine and hold it stopped (kept across daemon restarts)"
            case Verb.START:
                return "start a stopped engine and supervise it again"
            case _:
                assert_never(self)

    @classmethod
    def asked(cls, method: str, part: str) -> Verb:
        """The verb a request asks for (the inverse of ``route``), or ``Refused`` 404."""
        for verb in cls:
            if verb.route == (method, part):
                return verb
        raise Refused(404, f"unknown action {part}")


@dataclass(frozen=True)
class Intent:
    verb: Verb
    uid: int
    tier: str | None = None  # pin: the tier asked for

    def __post_init__(self) -> None:
        object.__setattr__(self, "verb", Verb(self.verb))  # "pin" is Verb.PIN; no other

    @property
    def reason(self) -> str:
        return f"{self.verb} by uid {self.uid}"


@dataclass(frozen=True)
class View:
    """What the rules read of one engine: plain data, taken when the request arrives (the
    handler) or when the intent is applied (the engine's loop)."""

    name: str
    chain: Sequence[str]
    tier: str | None
    pinned: str | None
    usable: Sequence[str]
    why_not: Mapping[str, str] = field(default_factory=dict)  # unusable tier -> why
    stopped_by: str | None = None  # held stopped by the operator (outside or asked)


def check(view: View, verb: Verb, tier: object = None, *, probed: bool = True) -> str | None:
    """The rules of an intent, the one place they are written: the tier it goes to (pin: the
    tier asked for; restart and start: where it (re)starts; demote: the tier below; promote:
    the best usable one; unpin and stop: None), or ``Refused`` with why not. An engine held
    stopped takes start and unpin only.

    ``probed``: ``view.usable`` is what the host has now. The engine probes again before a
    promote, so the handler, whose view is older, leaves the want of a better tier to it."""
    if verb is Verb.UNPIN:
        return None
    check_held(view, verb)
    if verb is Verb.STOP:
        return None
    if verb is Verb.PIN:
        if tier not in view.chain:
            raise Refused(400, f"tier must be one of {list(view.chain)}", {"tier": tier})
        check_usable(view.name, str(tier), view.usable, view.why_not)
        return str(tier)
    if view.pinned and verb in (Verb.DEMOTE, Verb.PROMOTE):
        raise Refused(409, f"{view.name} is pinned to {view.pinned}; unpin it first")
    if verb is Verb.DEMOTE:
        below = policy.tier_below(view.chain, view.usable, view.tier)
        if below is None:
            raise Refused(409, f"no usable tier below {view.tier}")
        return below
    if verb in (Verb.RESTART, Verb.START):
        target = policy.start_tier(view.chain, view.usable, pinned=view.pinned,
                                   current=view.tier)
        if target is None:
            raise Refused(409, f"no usable tier for {view.name}", dict(view.why_not) or None)
        return target
    best = policy.best_tier(view.chain, view.usable)
    if probed and (best is None or best == view.tier):
        raise Refused(409, f"{view.name} is already on its best usable tier")
    return best


def check_held(view: View, verb: Verb) -> None:
    """An engine held stopped takes start (and unpin); start is for a held engine only."""
    if verb is Verb.STOP and view.stopped_by:
        raise Refused(409, f"{view.name} is already stopped ({view.stopped_by})")
    if view.stopped_by and verb not in (Verb.START, Verb.STOP):
        raise Refused(409, f"{view.name} is stopped ({view.stopped_by}); start it first")
    if verb is Verb.START and not view.stopped_by:
        raise Refused(409, f"{view.name} is not stopped; restart it instead")


def check_usable(name: str, tier: str, usable: Sequence[str], why_not: Mapping[str, str]
                 ) -> None:
    """``check``'s rule for a tier to go to (a pin's): it must be usable now."""
    if tier not in usable:
        raise Refused(409, f"{tier} is not usable for {name}", dict(why_not) or None)


def validate(view: View, part: str, method: str, body: Mapping[str, Any], uid: int) -> Intent:
    """The intent a request (``method`` on ``/v1/engines/{name}/{part}``) asks for, or
    ``Refused`` (nothing is queued, nothing recorded). Only what matters of the body is kept:
    the tier of a pin."""
    verb = Verb.asked(method, part)
    tier = check(view, verb, body.get("tier") if verb.takes_tier else None, probed=False)
    return Intent(verb, uid, tier if verb.takes_tier else None)
