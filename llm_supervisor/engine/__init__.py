"""One engine: ``core`` (what it is, its memory, its few moves: transition, record, start_on,
fail, block), ``acts`` (a decision carried out), ``machine`` (its loop: observe -> decide ->
act), ``intake`` (what the engine's own log said since this run of it began: one rule for
which lines belong to it), ``outbox`` (the events of the check under way, committed at once)."""

from llm_supervisor.engine.core import WHILE_RUNNING, Actuator, reason_of
from llm_supervisor.engine.machine import Engine

__all__ = ["WHILE_RUNNING", "Actuator", "Engine", "reason_of"]
