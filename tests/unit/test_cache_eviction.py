from __future__ import annotations

import random

import pytest

from modm.services.cache.ledger import Ledger, Limits
from modm.services.cache.policies import EntryMeta, FifoPolicy, LcbfuPolicy, LruPolicy, policy_named


def meta(entry_id: str, created: float, tenant: str = "t", size: int = 10, **kw: object) -> EntryMeta:
    return EntryMeta(entry_id, tenant, size, created, object_key=f"k/{entry_id}", **kw)  # type: ignore[arg-type]


def filled(policy_name: str, *metas: EntryMeta) -> Ledger:
    ledger = Ledger(policy_named(policy_name))
    for m in metas:
        ledger.add(m)
    return ledger


def test_fifo_evicts_in_insert_order_regardless_of_hits() -> None:
    ledger = filled("fifo", meta("a", 1), meta("b", 2), meta("c", 3), meta("d", 4))
    ledger.record_hit("a", 30, now=10)
    ledger.record_hit("a", 30, now=11)
    victims = ledger.plan_evictions(Limits(max_entries=2), "t")
    assert [v.meta.entry_id for v in victims] == ["a", "b"]
    assert {v.reason for v in victims} == {"global_capacity"}
    assert ledger.eviction_order() == ["c", "d"]


def test_lru_evicts_least_recently_used_first() -> None:
    ledger = filled("lru", meta("a", 1), meta("b", 2), meta("c", 3), meta("d", 4))
    ledger.record_hit("a", 5, now=10)  # a used last at 10
    ledger.record_hit("c", 5, now=8)  # c at 8
    ledger.record_hit("b", 5, now=9)  # b at 9; d never used, inserted at 4
    assert ledger.eviction_order() == ["d", "c", "b", "a"]
    victims = ledger.plan_evictions(Limits(max_entries=1), "t")
    assert [v.meta.entry_id for v in victims] == ["d", "c", "b"]
    ledger.record_hit("a", 5, now=12)
    assert ledger.eviction_order() == ["a"]


def test_lcbfu_evicts_lowest_count_times_steps_saved_then_oldest() -> None:
    ledger = filled("lcbfu", meta("a", 1), meta("b", 2), meta("c", 3), meta("d", 4), meta("e", 5))
    # a: 2 retrievals x 30 = 60; b: 1 x 25 = 25; c: 3 x 5 = 15; d, e: never retrieved (0).
    for k in (30, 30):
        ledger.record_hit("a", k, now=10)
    ledger.record_hit("b", 25, now=10)
    for k in (5, 5, 5):
        ledger.record_hit("c", k, now=10)
    assert ledger.eviction_order() == ["d", "e", "c", "b", "a"]
    victims = ledger.plan_evictions(Limits(max_entries=2), "t")
    assert [v.meta.entry_id for v in victims] == ["d", "e", "c"]
    # b overtakes a once it has saved more.
    ledger.record_hit("b", 25, now=11)
    ledger.record_hit("b", 25, now=11)
    assert ledger.eviction_order() == ["a", "b"]


def test_lcbfu_ranks_few_big_savings_against_many_small_ones() -> None:
    ledger = filled("lcbfu", meta("many_small", 1), meta("few_big", 2))
    for _ in range(5):
        ledger.record_hit("many_small", 5, now=3)  # 5 x 5 = 25
    ledger.record_hit("few_big", 30, now=3)  # 1 x 30 = 30
    assert ledger.eviction_order() == ["many_small", "few_big"]


def test_tenant_capacity_evicts_only_that_tenant() -> None:
    ledger = filled(
        "fifo",
        meta("a1", 1, "a"),
        meta("b1", 2, "b"),
        meta("a2", 3, "a"),
        meta("b2", 4, "b"),
        meta("a3", 5, "a"),
    )
    victims = ledger.plan_evictions(Limits(tenant_max_entries=2), "a", protect=frozenset({"a3"}))
    assert [(v.meta.entry_id, v.reason) for v in victims] == [("a1", "tenant_capacity")]
    assert ledger.usage("a").entries == 2
    assert ledger.usage("b").entries == 2


def test_global_capacity_takes_the_policy_minimum_across_tenants() -> None:
    ledger = filled("fifo", meta("a1", 1, "a"), meta("b1", 2, "b"), meta("a2", 3, "a"), meta("b2", 4, "b"))
    victims = ledger.plan_evictions(Limits(max_entries=2), "a")
    assert [v.meta.entry_id for v in victims] == ["a1", "b1"]


def test_byte_limits_count_sizes_per_tenant_and_globally() -> None:
    ledger = filled("fifo", meta("a1", 1, "a", size=40), meta("a2", 2, "a", size=40), meta("b1", 3, "b", size=50))
    assert ledger.usage("a").bytes == 80
    assert ledger.total.bytes == 130
    victims = ledger.plan_evictions(Limits(tenant_max_bytes=60), "a")
    assert [v.meta.entry_id for v in victims] == ["a1"]
    victims = ledger.plan_evictions(Limits(max_bytes=60), "b", protect=frozenset({"b1"}))
    assert [v.meta.entry_id for v in victims] == ["a2"]
    assert ledger.total.bytes == 50 and ledger.total.entries == 1


def test_protected_entry_is_never_a_victim_and_stays_evictable_later() -> None:
    ledger = filled("fifo", meta("old", 1), meta("new", 2))
    assert ledger.plan_evictions(Limits(max_entries=1), "t", protect=frozenset({"old"}))[0].meta.entry_id == "new"
    ledger.add(meta("newer", 3))
    assert [v.meta.entry_id for v in ledger.plan_evictions(Limits(max_entries=1), "t")] == ["old"]


def test_nothing_to_evict_when_everything_is_protected() -> None:
    ledger = filled("fifo", meta("only", 1, size=100))
    assert ledger.plan_evictions(Limits(max_bytes=10), "t", protect=frozenset({"only"})) == []
    assert "only" in ledger


def test_ttl_expiry_removes_entries_older_than_ttl() -> None:
    ledger = filled("fifo", meta("a", 100), meta("b", 150), meta("c", 190))
    expired = ledger.plan_expiry(60, now=200)
    assert sorted(e.meta.entry_id for e in expired) == ["a"]
    assert {e.reason for e in expired} == {"ttl"}
    assert ledger.plan_expiry(None, now=10_000) == []
    assert len(ledger) == 2


def test_remove_updates_accounting_and_params_index() -> None:
    ledger = filled("fifo", meta("a", 1, size=7, params_key="p"), meta("b", 2, size=3, params_key="p"))
    assert {m.entry_id for m in ledger.with_params("p")} == {"a", "b"}
    assert ledger.remove("a") is not None
    assert ledger.remove("a") is None
    assert [m.entry_id for m in ledger.with_params("p")] == ["b"]
    assert ledger.usage("t").bytes == 3
    ledger.remove("b")
    assert ledger.tenants() == [] and ledger.with_params("p") == []


def test_adding_an_id_twice_is_refused() -> None:
    ledger = filled("fifo", meta("a", 1))
    with pytest.raises(KeyError):
        ledger.add(meta("a", 2))


@pytest.mark.parametrize("name", ["fifo", "lru", "lcbfu"])
def test_heap_order_equals_a_full_sort_under_random_churn(name: str) -> None:
    """The lazily invalidated heaps pick exactly what sorting every entry by the key would."""
    rng = random.Random(7)
    ledger = Ledger(policy_named(name))
    clock = 0.0
    next_id = 0
    for _ in range(3000):
        clock += 1
        op = rng.random()
        if op < 0.45 or len(ledger) < 3:
            ledger.add(meta(f"e{next_id}", clock, tenant=rng.choice("xyz"), size=rng.randint(1, 9)))
            next_id += 1
        elif op < 0.9:
            target = rng.choice(ledger.eviction_order())
            ledger.record_hit(target, rng.choice((5, 10, 15, 25, 30)), now=clock)
        else:
            expected = ledger.eviction_order()[:2]
            victims = ledger.plan_evictions(Limits(max_entries=len(ledger) - 2), "x")
            assert [v.meta.entry_id for v in victims] == expected


def test_policy_names() -> None:
    assert isinstance(policy_named("fifo"), FifoPolicy)
    assert isinstance(policy_named("lru"), LruPolicy)
    assert isinstance(policy_named("lcbfu"), LcbfuPolicy)
    with pytest.raises(ValueError):
        policy_named("random")
