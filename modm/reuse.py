"""What reusing a cached image costs: the share of its schedule an img2img hit still runs.

A hit that skips the first `k` of `total` denoising steps still runs `1 - k/total` of them;
`kappa` is that share averaged over the hits (MoDM's notation). Exact repeats are not hits:
they run no step at all and are counted apart by whoever needs them, never folded into kappa.
The router's Stats, the monitor's policies and the bench's bound all price hits with this.
"""

from __future__ import annotations

from collections.abc import Mapping


def remaining_share(skipped_steps: int, total_steps: int) -> float:
    """Share of its schedule a hit that skips `skipped_steps` of `total_steps` still runs."""
    return 1.0 - skipped_steps / total_steps


def kappa(hits: Mapping[tuple[int, int], float]) -> float | None:
    """Mean remaining share over hits given as {(k, total steps): count or share}; None
    without a hit (each caller says what an unseen kappa should count as)."""
    weight = sum(hits.values())
    if weight <= 0:
        return None
    return sum(n * remaining_share(k, total) for (k, total), n in hits.items()) / weight
