"""Engine states. No dependencies, so anything may import it."""

from __future__ import annotations

from enum import StrEnum


class EngineState(StrEnum):
    STOPPED = "stopped"    # not started by us (yet), or stopped on purpose
    STARTING = "starting"  # (re)started on a tier; within its start-up grace no verdict is given
    HEALTHY = "healthy"    # serving on its tier
    DEGRADED = "degraded"  # up, but failing checks: an action is being taken
    BLOCKED = "blocked"    # a cause no tier change can fix; retried with backoff until it clears
    FAILED = "failed"      # every usable tier exhausted; retried from the bottom with backoff
