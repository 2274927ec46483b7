"""The local scaler's decision logic (one slot at a time, never emptying a pool the target wants)
and its process handling, with fake worker processes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modm.services.monitor.local_scaler import ROLES, LocalScaler, Role, SlotView, Switch, WorkerSlot, plan_switch
from modm.services.monitor.observations import Allocation, Decision


def views(*roles: Role, loading: int | None = None) -> list[SlotView]:
    return [SlotView(i, role, i != loading) for i, role in enumerate(roles)]


def test_moves_the_last_large_slot_to_small() -> None:
    assert plan_switch(views("large", "large", "small"), Allocation(1, 2)) == Switch(1, "small")


def test_moves_one_slot_at_a_time_even_when_the_target_is_far() -> None:
    assert plan_switch(views("large", "small", "small", "small"), Allocation(3, 1)) == Switch(3, "large")


def test_waits_while_a_slot_is_loading() -> None:
    why = plan_switch(views("large", "large", "small", loading=2), Allocation(1, 2))
    assert isinstance(why, str) and "slot 2" in why


def test_at_target_nothing_moves() -> None:
    assert plan_switch(views("large", "small"), Allocation(1, 1)) == "at target: 1 large + 1 small"


@pytest.mark.parametrize(
    ("roles", "target"),
    [
        (("large", "small"), Allocation(2, 1)),  # asks for more than the slots: small keeps its one
        (("large", "small"), Allocation(1, 2)),
        (("large", "large"), Allocation(2, 1)),  # a slot short for small, but large is not above target
    ],
)
def test_never_empties_a_pool_the_target_wants(roles: tuple[Role, ...], target: Allocation) -> None:
    assert isinstance(plan_switch(views(*roles), target), str)


@dataclass
class FakeWorker:
    slot: str
    role: Role
    serving: bool = True
    code: int | None = None
    drained: bool = False

    def ready(self) -> bool:
        return self.serving

    def exit_code(self) -> int | None:
        return self.code

    def drain(self) -> int:
        self.drained, self.code = True, 0
        return 0


class FakeLauncher:
    def __init__(self) -> None:
        self.started: list[FakeWorker] = []

    def __call__(self, slot: WorkerSlot, role: Role) -> FakeWorker:
        assert slot.envs[role]["MODM_WORKER_ROLE"] == role
        self.started.append(FakeWorker(slot.name, role, serving=False))
        return self.started[-1]


def slot(index: int, role: Role) -> WorkerSlot:
    port = str(41000 + index)
    envs: dict[Role, dict[str, str]] = {r: {"MODM_WORKER_ROLE": r, "MODM_WORKER_PORT": port} for r in ROLES}
    return WorkerSlot(f"slot{index}", 41000 + index, envs, role)


def test_apply_drains_the_slot_and_starts_the_other_model_then_waits_for_it() -> None:
    launcher = FakeLauncher()
    scaler = LocalScaler([slot(0, "large"), slot(1, "large"), slot(2, "small")], launcher)
    scaler.start_all()
    assert scaler.current() == Allocation(2, 1)
    move = Decision(Allocation(1, 2), "hits dominate")
    waiting = scaler.apply(move)  # nothing is serving yet: no switch
    assert waiting.switched is None and "waiting" in waiting.note
    for worker in launcher.started:
        worker.serving = True
    done = scaler.apply(move)
    assert done.switched == Switch(1, "small") and scaler.switches == 1
    old, new = launcher.started[1], launcher.started[-1]
    assert old.drained and (new.slot, new.role) == ("slot1", "small")
    assert scaler.current() == Allocation(1, 2)
    assert scaler.apply(move).switched is None  # the new worker is still loading
    assert scaler.problem() is None  # a drained worker is not a crash


def test_a_worker_that_dies_is_reported_and_stop_drains_all() -> None:
    launcher = FakeLauncher()
    scaler = LocalScaler([slot(0, "large"), slot(1, "small")], launcher)
    scaler.start_all()
    launcher.started[1].code = 1
    assert scaler.problem() == "slot1 (small) exited with 1"
    assert scaler.stop() == "0, 0"
    assert all(w.drained for w in launcher.started)


def test_a_stop_during_a_switch_leaves_no_worker_running() -> None:
    launcher = FakeLauncher()
    scaler = LocalScaler([slot(0, "large"), slot(1, "large")], launcher)
    scaler.start_all()
    for worker in launcher.started:
        worker.serving = True
    switching = launcher.started[1]
    drain = switching.drain

    def drain_while_the_stack_stops() -> int:
        code = drain()
        assert scaler.problem() is None  # the slot being switched is not reported as a crash
        scaler.stop()
        return code

    switching.drain = drain_while_the_stack_stops  # type: ignore[method-assign]
    assert scaler.apply(Decision(Allocation(1, 1), "hits dominate")).switched == Switch(1, "small")
    assert len(launcher.started) == 3 and all(w.drained for w in launcher.started)
