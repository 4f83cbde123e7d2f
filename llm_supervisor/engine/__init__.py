"""One engine: ``machine`` (its state machine, its loop, the decisions it carries out),
``intake`` (what the engine's own log said since this run of it began: one rule for which
lines belong to it), ``outbox`` (the events of the check under way, committed at once)."""

from llm_supervisor.engine.machine import WHILE_RUNNING, Actuator, Engine, reason_of

__all__ = ["WHILE_RUNNING", "Actuator", "Engine", "reason_of"]
