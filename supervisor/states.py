"""Engine states. No dependencies, so anything may import it."""

from __future__ import annotations

from enum import StrEnum


class EngineState(StrEnum):
    STOPPED = "stopped"    # not started by us (yet), or stopped on purpose
    STARTING = "starting"  # (re)started on a tier; within its start-up grace no verdict is given
    HEALTHY = "healthy"    # serving on its tier
    DEGRADED = "degraded"  # up, but failing checks: an action is being taken
    FAILED = "failed"      # every usable tier exhausted; retried from the bottom with backoff


# What a check can conclude, and how strongly.
CHECK = "check"            # counts toward `failures` consecutive failed checks
FAULT = "fault"            # a GPU fault or a silent CPU fallback: demote without restarting
RESET = "reset"            # the kernel reset the GPU: restart on the same tier
FATAL_RESET = "fatal"      # the reset failed: reboot required, every GPU tier is skipped
