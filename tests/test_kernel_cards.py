"""Kernel lines charged to their card (``Supervision.kernel_line``): an addressed amdgpu line
reaches the engines of its card and those that name none; an older kernel's line without the
address belongs to the card of the addressed lines of the same reset, before or just after it;
alone, it concerns every engine, as it always did."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from llm_supervisor import config, supervision
from llm_supervisor.supervision import Supervision

OWN, OTHER = "0000:43:00.0", "0000:83:00.0"
TIMEOUT = ("[drm:amdgpu_job_timedout [amdgpu]] *ERROR* ring gfx timeout, signaled"
           " seq=1081, emitted seq=1083")  # DRM_ERROR: no address
BEGIN = "amdgpu {card}: amdgpu: GPU reset begin!"
FAILED = "[drm:amdgpu_device_gpu_recover [amdgpu]] *ERROR* GPU Recovery Failed: -22"


class Intake:
    def __init__(self) -> None:
        self.found: list[tuple[str, str | None]] = []  # (cause, card)

    def finding(self, found: Any, at: float | None) -> None:
        self.found.append((found.finding.cause.value, found.finding.facts.get("card")))


def world() -> tuple[Supervision, dict[str, Intake]]:
    cfg = config.loads('[[engine]]\nname = "a"\nlisten = "127.0.0.1:11401"\ngpus = ["43:00.0"]\n'
                       '[[engine]]\nname = "b"\nlisten = "127.0.0.1:11402"\ngpus = ["83:00.0"]\n'
                       '[[engine]]\nname = "any"\nlisten = "127.0.0.1:11403"\n')
    cards = {"a": (OWN,), "b": (OTHER,), "any": None}
    actuator = SimpleNamespace(cards=lambda e: cards[e.name])
    sup = Supervision.__new__(Supervision)
    sup.config, sup.actuator, sup.last_card, sup.held = (lambda: cfg), actuator, None, []
    intakes = {e.name: Intake() for e in cfg.engines}
    sup.engines = {e.name: SimpleNamespace(cfg=e, tier="rocm", intake=intakes[e.name])
                   for e in cfg.engines}  # type: ignore[misc]
    return sup, intakes


async def test_an_addressed_reset_reaches_its_cards_engines_and_those_naming_none():
    sup, seen = world()
    sup.kernel_line(BEGIN.format(card=OTHER), "c", 100.0)
    assert seen["a"].found == [] and seen["b"].found == [("reset", OTHER)]
    assert seen["any"].found == [("reset", OTHER)]


async def test_a_timeout_without_address_waits_for_the_reset_that_names_its_card():
    sup, seen = world()
    sup.kernel_line(TIMEOUT, "c", 100.0)
    assert all(i.found == [] for i in seen.values())  # held: which card is it?
    sup.kernel_line(BEGIN.format(card=OWN), "c", 100.2)
    assert seen["a"].found == [("reset", OWN), ("reset", OWN)] and seen["b"].found == []
    sup.kernel_line(FAILED, "c", 103.0)  # the same reset, a moment later: card 43's
    assert seen["a"].found[-1] == ("fatal_reset", OWN) and seen["b"].found == []
    await asyncio.sleep(supervision.HOLD + 0.1)
    assert seen["b"].found == []  # nothing held is let go later


async def test_a_line_without_address_and_no_card_near_it_concerns_every_engine():
    sup, seen = world()
    sup.kernel_line(BEGIN.format(card=OWN), "c", 100.0)
    sup.kernel_line(FAILED, "c", 100.0 + supervision.BURST + 5)  # long after: not that one's
    assert seen["b"].found == []
    await asyncio.sleep(supervision.HOLD + 0.1)
    assert seen["b"].found == [("fatal_reset", None)]
    assert seen["a"].found[-1] == ("fatal_reset", None)
