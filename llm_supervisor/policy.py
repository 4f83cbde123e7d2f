"""Pure decision helpers: where to go down, where to go back up, how long to wait."""

from __future__ import annotations

from collections.abc import Sequence

PROMOTE_WAIT_CAP = 24 * 3600.0
RETRY_WAIT_CAP = 3600.0


def tier_below(chain: Sequence[str], usable: Sequence[str], current: str | None) -> str | None:
    """The next usable tier after ``current`` in the chain, or None at the end."""
    start = chain.index(current) + 1 if current in chain else 0
    return next((t for t in chain[start:] if t in usable), None)


def best_tier(chain: Sequence[str], usable: Sequence[str]) -> str | None:
    return next((t for t in chain if t in usable), None)


def start_tier(chain: Sequence[str], usable: Sequence[str], *, pinned: str | None = None,
               current: str | None = None) -> str | None:
    """The one rule for where an engine (re)starts: the operator's pin, else the tier it is
    on, else the best usable one — each only while usable; None when no tier is usable."""
    for tier in (pinned, current):
        if tier is not None and tier in usable:
            return tier
    return best_tier(chain, usable)


def bottom_tier(chain: Sequence[str], usable: Sequence[str]) -> str | None:
    return next((t for t in reversed(chain) if t in usable), None)


def is_above(chain: Sequence[str], tier: str, other: str) -> bool:
    """``tier`` comes before ``other`` in the chain (is a better tier)."""
    return tier in chain and other in chain and chain.index(tier) < chain.index(other)


def retry_wait(attempt: int, base: float) -> float:
    """Wait before retry number ``attempt`` (1, 2, ...) of a failed engine: doubling, capped."""
    return min(RETRY_WAIT_CAP, max(base, 1.0) * 2.0 ** max(0, attempt - 1))


def next_promotion_wait(current: float, backoff: float) -> float:
    return min(PROMOTE_WAIT_CAP, current * backoff)


BLOCKED_WAIT_CAP = 300.0


def blocked_wait(attempt: int, base: float) -> float:
    """Wait before re-trying a blocked engine: doubling, capped low (the fix is often quick)."""
    return min(BLOCKED_WAIT_CAP, max(base, 1.0) * 2.0 ** max(0, attempt - 1))
