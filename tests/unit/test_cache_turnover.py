"""LCBFU turns over: replayed topic drift through the engine (see `replay.py`)."""

from __future__ import annotations

import pytest

from modm.services.cache.policies import FifoPolicy, LcbfuPolicy, lcbfu_defaults
from modm.services.cache.replay import DriftTrace, SkewedTrace, replay

CAPACITY = 20


@pytest.mark.parametrize("seed", [3, 7])
async def test_new_topics_hit_under_lcbfu_as_often_as_under_fifo_within_ten_capacities(seed: int) -> None:
    trace = DriftTrace(topics=15, old_requests=600, new_requests=600, seed=seed)
    fifo = await replay(FifoPolicy(), CAPACITY, trace)
    plain = await replay(LcbfuPolicy(), CAPACITY, trace)
    turning = await replay(LcbfuPolicy(*lcbfu_defaults(CAPACITY)), CAPACITY, trace)
    assert fifo.hit_rate(2 * CAPACITY) > 0.95  # FIFO holds every new topic soon
    # Plain LCBFU: every newcomer is the next victim while the old entries keep their scores.
    assert plain.catches_up_with(fifo) is None and plain.hit_rate() < 0.5
    caught = turning.catches_up_with(fifo)
    assert caught is not None and caught <= 10 * CAPACITY


async def test_grace_and_aging_keep_lcbfu_ahead_where_popularity_is_steady() -> None:
    trace = SkewedTrace(topics=100, length=1500)
    fifo = await replay(FifoPolicy(), CAPACITY, trace)
    plain = await replay(LcbfuPolicy(), CAPACITY, trace)
    turning = await replay(LcbfuPolicy(*lcbfu_defaults(CAPACITY)), CAPACITY, trace)
    assert turning.hit_rate() > fifo.hit_rate() + 0.05
    assert turning.hit_rate() >= plain.hit_rate() - 0.01
