"""Operator actions over the control socket: restart, demote, promote, pin, unpin.

Each accepted request is recorded as an event naming the uid that asked, once it has been
validated, with only the fields that matter (the tier of a pin), never the request body; a
pin freezes the tier (and survives restarts, in state.json) until unpinned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor import policy
from supervisor.causes import Cause
from supervisor.control import HTTPError

if TYPE_CHECKING:
    from supervisor.daemon import Supervisor
    from supervisor.engine import Engine


async def operator_action(sup: Supervisor, engine: Engine, verb: str, method: str,
                          body: dict[str, Any], uid: int) -> str:
    def accepted(**evidence: Any) -> None:
        sup.event("operator", engine=engine.name, cause=Cause.OPERATOR.value,
                  reason=f"{verb} by uid {uid}", evidence=evidence or None)

    async with engine.lock:
        usable = sup.usable(engine)
        if verb == "pin" and method == "DELETE":
            accepted()
            engine.memory.pinned = None
            sup.record(engine, "unpin", cause=Cause.OPERATOR.value, reason=f"unpinned by uid {uid}")
            return "unpinned"
        if verb == "pin":
            tier = body.get("tier")
            if tier not in engine.chain:
                raise HTTPError(400, f"tier must be one of {list(engine.chain)}",
                                {"tier": tier})
            if tier not in usable:
                raise HTTPError(409, f"{tier} is not usable for {engine.name}",
                                {c.tier: c.reason for c in sup.choices(engine)})
            accepted(tier=tier)
            engine.memory.pinned = tier
            engine.memory.next_promotion_at = None
            sup.record(engine, "pin", to=tier, cause=Cause.OPERATOR.value,
                       reason=f"pinned to {tier} by uid {uid}")
            if engine.tier != tier:
                await engine.start_on(tier, Cause.OPERATOR, f"pinned to {tier} by uid {uid}")
            return f"pinned to {tier}"
        if engine.memory.pinned and verb in ("demote", "promote"):
            raise HTTPError(409, f"{engine.name} is pinned to {engine.memory.pinned};"
                            " unpin it first")
        if verb == "restart":
            tier = policy.start_tier(engine.chain, usable, pinned=engine.memory.pinned,
                                     current=engine.tier)
            if tier is None:
                raise HTTPError(409, f"no usable tier for {engine.name}",
                                {c.tier: c.reason for c in sup.choices(engine)})
            accepted(tier=tier)
            await engine.start_on(tier, Cause.OPERATOR, f"restarted by uid {uid}")
            return "restarted"
        if verb == "demote":
            target = policy.tier_below(engine.chain, usable, engine.tier)
            if target is None:
                raise HTTPError(409, f"no usable tier below {engine.tier}")
            accepted(tier=target)
            await engine.start_on(target, Cause.OPERATOR, f"demoted from {engine.tier} by uid"
                                  f" {uid}")
            return f"demoted to {target}"
        if verb == "promote":
            await sup.reprobe()
            usable = sup.usable(engine)
            best = policy.best_tier(engine.chain, usable)
            if best is None or best == engine.tier:
                raise HTTPError(409, f"{engine.name} is already on its best usable tier")
            accepted(tier=best)
            await engine.promote(best, f"asked by uid {uid}")
            return f"promoting to {best}"
    raise HTTPError(404, f"unknown action {verb}")
