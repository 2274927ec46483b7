"""The one back-off rule the SDK, the router and the monitor retry by."""

from __future__ import annotations

from modm.backoff import backoff_seconds


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n, base=0.2, cap=1.0) for n in range(0, 6)] == [0.0, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_huge_attempt_number_is_the_cap_not_an_overflow() -> None:
    assert backoff_seconds(5000, base=0.5, cap=5.0) == 5.0
