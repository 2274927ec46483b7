"""`modm bench --start`: each mode's stack has the same slots, split the way the mode needs."""

from __future__ import annotations

from modm.bench.stack import counters_of, scrape_counters, up_args


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_baselines_put_every_slot_on_their_model_without_a_monitor() -> None:
    large = up_args("large-only", workers=4, monitor=True)
    assert _flag(large, "--workers") == "4" and _flag(large, "--large-slots") == "4"
    small = up_args("small-only", workers=4, monitor=True)
    assert _flag(small, "--workers") == "4" and _flag(small, "--large-slots") == "0"
    assert "--no-monitor" in large and "--no-monitor" in small


def test_modm_keeps_the_default_split_and_the_monitor_if_asked() -> None:
    watched = up_args("modm", workers=2, monitor=True)
    assert "--large-slots" not in watched and "--monitor" in watched
    assert "--no-monitor" in up_args("modm", workers=2, monitor=False)


def test_modm_can_start_from_another_split_and_the_baselines_ignore_it() -> None:
    assert _flag(up_args("modm", workers=16, monitor=True, large_slots=16), "--large-slots") == "16"
    assert _flag(up_args("nirvana", workers=16, monitor=True, large_slots=3), "--large-slots") == "16"


EXPOSITION = """# HELP modm_router_retries_total Worker attempts retried after a failure, by status.
# TYPE modm_router_retries_total counter
modm_router_retries_total{code="RESOURCE_EXHAUSTED"} 3.0
modm_router_retries_total{code="UNAVAILABLE"} 1.0
# TYPE modm_router_requests_total counter
modm_router_requests_total{outcome="miss",pool="large",result="ok"} 10.0
modm_router_requests_total{outcome="hit",pool="small",result="ok"} 5.0
modm_router_requests_total{outcome="miss",pool="large",result="RESOURCE_EXHAUSTED"} 2.0
"""


def test_a_routers_counters_are_read_from_its_metrics() -> None:
    assert counters_of(EXPOSITION) == {
        "retries": {"RESOURCE_EXHAUSTED": 3.0, "UNAVAILABLE": 1.0},
        "requests": {"ok": 15.0, "RESOURCE_EXHAUSTED": 2.0},
    }
    assert scrape_counters("http://127.0.0.1:1/metrics") == {}  # nothing listens: nothing recorded
