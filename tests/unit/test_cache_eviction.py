from __future__ import annotations

import random

import pytest

from modm.services.cache.ledger import Ledger, Limits, TenantLimit, parse_tenant_limits
from modm.services.cache.policies import (
    EntryMeta,
    EvictionPolicy,
    FifoPolicy,
    LcbfuPolicy,
    LruPolicy,
    policy_named,
)


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


# --- per-tenant capacity overrides -----------------------------------------------------------


def _three_tenants(policy: str) -> Ledger:
    """gold, free and std each hold four entries g1..g4 / f1..f4 / s1..s4, inserted interleaved."""
    ledger = Ledger(policy_named(policy))
    for i in range(1, 5):
        for j, tenant in enumerate(("gold", "free", "std")):
            ledger.add(meta(f"{tenant[0]}{i}", 3 * i + j, tenant, size=10 * i))
    return ledger


OVERRIDES = Limits(
    tenant_max_entries=3,
    tenant_overrides={"gold": TenantLimit(max_entries=10), "free": TenantLimit(max_entries=1, max_bytes=None)},
)


def test_limits_for_tenant_fall_back_to_the_default_per_measure() -> None:
    limits = Limits(
        tenant_max_entries=5,
        tenant_max_bytes=500,
        max_bytes=300,
        tenant_overrides={"a": TenantLimit(max_entries=2), "b": TenantLimit(max_bytes=100)},
    )
    assert limits.for_tenant("a") == (2, 500)
    assert limits.for_tenant("b") == (5, 100)
    assert limits.for_tenant("other") == (5, 500)
    assert limits.largest_entry_bytes("b") == 100
    assert limits.largest_entry_bytes("a") == 300  # the global cap is smaller than a's


def test_override_evicts_fifo_only_inside_its_tenant() -> None:
    ledger = _three_tenants("fifo")
    victims = ledger.plan_evictions(OVERRIDES, "free")
    assert [(v.meta.entry_id, v.reason) for v in victims] == [
        ("f1", "tenant_capacity"),
        ("f2", "tenant_capacity"),
        ("f3", "tenant_capacity"),
    ]
    assert ledger.plan_evictions(OVERRIDES, "gold") == []  # 4 <= 10: above the default of 3
    assert [v.meta.entry_id for v in ledger.plan_evictions(OVERRIDES, "std")] == ["s1"]  # the default
    assert (ledger.usage("gold").entries, ledger.usage("free").entries, ledger.usage("std").entries) == (4, 1, 3)


def test_override_evicts_lru_only_inside_its_tenant() -> None:
    ledger = _three_tenants("lru")
    ledger.record_hit("f1", 5, now=100)
    ledger.record_hit("f3", 5, now=90)
    ledger.record_hit("g1", 5, now=80)  # another tenant's hit changes nothing for free
    victims = ledger.plan_evictions(OVERRIDES, "free")
    assert [v.meta.entry_id for v in victims] == ["f2", "f4", "f3"]
    assert [m.entry_id for m in ledger.entries() if m.tenant == "free"] == ["f1"]


def test_override_evicts_lcbfu_only_inside_its_tenant() -> None:
    ledger = _three_tenants("lcbfu")
    ledger.record_hit("f1", 30, now=100)  # 30
    ledger.record_hit("f2", 5, now=100)  # 5 + 5 = 10
    ledger.record_hit("f2", 5, now=101)
    ledger.record_hit("f4", 25, now=100)  # 25; f3 never retrieved (0)
    victims = ledger.plan_evictions(OVERRIDES, "free")
    assert [v.meta.entry_id for v in victims] == ["f3", "f2", "f4"]
    assert ledger.usage("gold").entries == 4 and ledger.usage("std").entries == 4


def test_byte_override_and_global_cap_together() -> None:
    ledger = _three_tenants("fifo")  # sizes 10, 20, 30, 40 per tenant: 100 each
    limits = Limits(max_bytes=250, tenant_overrides={"gold": TenantLimit(max_bytes=75)})
    victims = ledger.plan_evictions(limits, "gold")
    # gold down to 70 bytes (g1, g2 out), then the oldest of any tenant until 250 in all.
    assert [(v.meta.entry_id, v.reason) for v in victims] == [
        ("g1", "tenant_capacity"),
        ("g2", "tenant_capacity"),
        ("f1", "global_capacity"),
        ("s1", "global_capacity"),
    ]
    assert ledger.total.bytes == 250


def test_parse_tenant_limits() -> None:
    assert parse_tenant_limits("gold=1000:5000000, free=10:,img.bot-1=:2048") == {
        "gold": TenantLimit(1000, 5_000_000),
        "free": TenantLimit(10, None),
        "img.bot-1": TenantLimit(None, 2048),
    }
    assert parse_tenant_limits("") == {}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("gold=10", "tenant=entries:bytes"),
        ("gold:10:20", "tenant=entries:bytes"),
        ("-bad=1:2", "not a valid tenant id"),
        ("gold=0:", "positive whole number"),
        ("gold=ten:", "positive whole number"),
        ("gold=:", "neither"),
        ("gold=1:,gold=2:", "twice"),
    ],
)
def test_parse_tenant_limits_refuses_bad_input(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_tenant_limits(text)


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


@pytest.mark.parametrize(
    "policy",
    [FifoPolicy(), LruPolicy(), LcbfuPolicy(), LcbfuPolicy(grace_accesses=20, half_life_accesses=50)],
    ids=repr,
)
def test_heap_order_equals_a_full_sort_under_random_churn(policy: EvictionPolicy) -> None:
    """The lazily invalidated heaps (and grace queues) pick exactly what sorting every entry by
    the key would."""
    rng = random.Random(7)
    ledger = Ledger(policy)
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


# --- LCBFU grace and aging --------------------------------------------------------------------


def test_lcbfu_grace_spares_newcomers_until_they_had_a_chance_to_be_hit() -> None:
    ledger = Ledger(LcbfuPolicy(grace_accesses=3))
    ledger.add(meta("old", 1))
    for _ in range(3):
        ledger.record_hit("old", 30, now=2)
    ledger.add(meta("new", 3))
    # "new" is in grace: the popular "old" goes, though it saved far more.
    assert [v.meta.entry_id for v in ledger.plan_evictions(Limits(max_entries=1), "t")] == ["old"]
    ledger.add(meta("newer", 4))
    ledger.record_hit("newer", 5, now=5)
    ledger.add(meta("newest", 6))  # three accesses since "new" arrived: its grace is over
    assert ledger.eviction_order() == ["new", "newer", "newest"]
    assert [v.meta.entry_id for v in ledger.plan_evictions(Limits(max_entries=2), "t")] == ["new"]
    # Only entries in grace left: the oldest of them goes, so capacity still holds.
    assert [v.meta.entry_id for v in ledger.plan_evictions(Limits(max_entries=1), "t")] == ["newer"]


def test_lcbfu_aging_lets_recent_savings_overtake_old_popularity() -> None:
    aging, plain = Ledger(LcbfuPolicy(half_life_accesses=2)), Ledger(LcbfuPolicy())
    for ledger in (aging, plain):
        ledger.add(meta("was_popular", 1))
        ledger.add(meta("is_popular", 2))
        for _ in range(8):
            ledger.record_hit("was_popular", 30, now=3)  # 240 steps, long ago
        for i in range(10):
            ledger.add(meta(f"filler{i}", 4 + i))
        for _ in range(3):
            ledger.record_hit("is_popular", 30, now=20)  # 90 steps, now
    assert plain.eviction_order()[-2:] == ["is_popular", "was_popular"]
    assert aging.eviction_order()[-2:] == ["was_popular", "is_popular"]
    victims = aging.plan_evictions(Limits(max_entries=1), "t")
    assert "was_popular" in {v.meta.entry_id for v in victims} and "is_popular" in aging


def test_lcbfu_aging_keys_stay_finite_after_many_half_lives() -> None:
    ledger = Ledger(LcbfuPolicy(half_life_accesses=1))
    ledger.add(meta("a", 1))
    ledger.add(meta("b", 2))
    for step in range(5000):  # 2**5000 would overflow a float
        ledger.record_hit("a" if step % 3 else "b", 10, now=3)
    assert ledger.eviction_order() == ["b", "a"]


def test_lcbfu_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="grace_accesses"):
        LcbfuPolicy(grace_accesses=-1)


def test_policy_names() -> None:
    assert isinstance(policy_named("fifo"), FifoPolicy)
    assert isinstance(policy_named("lru"), LruPolicy)
    assert isinstance(policy_named("lcbfu"), LcbfuPolicy)
    with pytest.raises(ValueError):
        policy_named("random")
