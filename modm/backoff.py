"""Capped exponential back-off: the one rule every retry loop in modm pauses by (the SDK's
retries of an unavailable router, the router's attempts on workers, the monitor's calls to
the Kubernetes API).
"""

from __future__ import annotations

# 2**62 times any sane base is far past any cap; a larger exponent would overflow a float.
_MAX_DOUBLINGS = 62


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Pause before retry `attempt` (1-based): base, 2 base, 4 base ... at most `cap`; 0 before
    the first."""
    if attempt < 1:
        return 0.0
    return min(cap, base * 2 ** min(attempt - 1, _MAX_DOUBLINGS))
