"""`modm bench --start`: each mode's stack has the same slots, split the way the mode needs."""

from __future__ import annotations

from modm.bench.stack import up_args


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
