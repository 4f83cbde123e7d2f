"""Operator actions record an event only once validated, with only the fields that matter."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from supervisor.actions import operator_action
from supervisor.control import HTTPError


def fakes() -> tuple[Any, Any, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []

    async def start_on(tier: str, cause: object, why: str = "") -> None:
        engine.tier = tier

    sup = SimpleNamespace(
        event=lambda type, **fields: events.append((type, fields)),
        record=lambda engine, type, **fields: events.append((type, fields)),
        usable=lambda engine: ["rocm", "cpu"],
        choices=lambda engine: [],
    )
    engine = SimpleNamespace(name="main", lock=asyncio.Lock(), chain=("rocm", "vulkan", "cpu"),
                             tier="rocm", memory=SimpleNamespace(pinned=None,
                                                                 next_promotion_at=None),
                             start_on=start_on)
    return sup, engine, events


async def test_a_rejected_pin_records_nothing() -> None:
    sup, engine, events = fakes()
    body = {"tier": "metal", "note": "x" * 10_000}
    with pytest.raises(HTTPError) as exc:
        await operator_action(sup, engine, "pin", "POST", body, 0)
    assert exc.value.status == 400 and events == []
    with pytest.raises(HTTPError) as exc:
        await operator_action(sup, engine, "pin", "POST", {"tier": "vulkan"}, 0)  # not usable
    assert exc.value.status == 409 and events == []


async def test_an_accepted_pin_records_only_the_tier() -> None:
    sup, engine, events = fakes()
    done = await operator_action(sup, engine, "pin", "POST",
                                 {"tier": "cpu", "note": "y" * 10_000}, 0)
    assert done == "pinned to cpu" and engine.tier == "cpu"
    assert events[0] == ("operator", {"engine": "main", "cause": "operator", "reason": "pin by uid 0",
                                      "evidence": {"tier": "cpu"}})
    assert all("y" * 100 not in repr(fields) for _, fields in events)
