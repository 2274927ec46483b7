"""The SDK's retry pauses: exponential from `backoff`, capped, and never past the call's deadline."""

from __future__ import annotations

import time

import modm
from modm.client import MAX_BACKOFF_S


def test_pauses_double_up_to_the_cap_and_stop_at_the_retry_count() -> None:
    with modm.Client("127.0.0.1:1", retries=8, backoff=0.5) as client:
        far = time.monotonic() + 3600
        pauses = [client._o.delay(attempt, far) for attempt in range(1, 10)]
    assert pauses[:4] == [0.5, 1.0, 2.0, 4.0]
    assert pauses[4:8] == [MAX_BACKOFF_S] * 4  # a restarting router is tried every few seconds
    assert pauses[8] is None  # retries used up


def test_no_pause_that_would_end_past_the_deadline() -> None:
    with modm.Client("127.0.0.1:1", retries=8, backoff=1.0) as client:
        assert client._o.delay(1, time.monotonic() + 0.5) is None
