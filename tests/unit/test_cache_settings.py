from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modm.services.cache.ledger import Limits, TenantLimit
from modm.services.cache.policies import FifoPolicy, LcbfuPolicy
from modm.services.cache.settings import CacheSettings
from modm.services.cache.thresholds import table


def test_defaults_are_the_embedded_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODM_HOME", str(tmp_path))
    settings = CacheSettings.load()
    assert settings.embedder == "minilm" and settings.s3_endpoint is None
    assert settings.resolved_milvus_uri() == str(tmp_path / "cache" / "milvus.db")
    assert settings.limits() == Limits(max_entries=10_000)
    assert settings.eviction_policy == "fifo" and settings.index_type == "HNSW"
    assert settings.threshold_table() is None


def test_env_prefix_and_the_shared_milvus_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODM_MILVUS_URI", "http://127.0.0.1:19530")
    monkeypatch.setenv("MODM_CACHE_EVICTION_POLICY", "lcbfu")
    monkeypatch.setenv("MODM_CACHE_TENANT_MAX_BYTES", "1000")
    settings = CacheSettings.load()
    assert settings.milvus_uri == "http://127.0.0.1:19530"
    assert settings.eviction_policy == "lcbfu" and settings.limits().tenant_max_bytes == 1000
    monkeypatch.setenv("MODM_CACHE_MILVUS_URI", "/data/m.db")
    assert CacheSettings.load().milvus_uri == "/data/m.db"
    assert CacheSettings.load(milvus_uri="/x/y.db").milvus_uri == "/x/y.db"  # CLI flags win


def test_tenant_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODM_CACHE_TENANT_LIMITS", "gold=100:,free=2:4096")
    limits = CacheSettings.load(tenant_max_entries=10).limits()
    assert limits.tenant_overrides == {"gold": TenantLimit(100, None), "free": TenantLimit(2, 4096)}
    assert limits.for_tenant("free") == (2, 4096) and limits.for_tenant("other") == (10, None)


def test_import_buckets_are_a_checked_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODM_CACHE_IMPORT_BUCKETS", "precache, archive-2026")
    assert CacheSettings.load().import_buckets == ["precache", "archive-2026"]
    assert CacheSettings.load(import_buckets="").import_buckets == []


def test_reconcile_runs_periodically_by_default_and_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CacheSettings.load().reconcile_interval_seconds == 600
    monkeypatch.setenv("MODM_CACHE_RECONCILE_INTERVAL_SECONDS", "0")
    assert CacheSettings.load().reconcile_interval_seconds == 0


def test_lcbfu_grace_and_half_life_default_to_the_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = CacheSettings.load(eviction_policy="lcbfu", max_entries=500).policy()
    assert isinstance(policy, LcbfuPolicy)
    assert (policy.grace_accesses, policy.half_life_accesses) == (50, 500)
    monkeypatch.setenv("MODM_CACHE_LCBFU_GRACE_ACCESSES", "0")
    monkeypatch.setenv("MODM_CACHE_LCBFU_HALF_LIFE_ACCESSES", "7")
    policy = CacheSettings.load(eviction_policy="lcbfu", max_entries=None).policy()
    assert (policy.grace_accesses, policy.half_life_accesses) == (0, 7)  # type: ignore[attr-defined]
    assert isinstance(CacheSettings.load().policy(), FifoPolicy)


def test_thresholds_override_is_parsed() -> None:
    assert CacheSettings.load(thresholds="[[0.9, 25], [0.8, 5]]").threshold_table() == table((0.9, 25), (0.8, 5))


@pytest.mark.parametrize(
    "overrides",
    [
        {"eviction_policy": "random"},
        {"thresholds": "[[2, 5]]"},
        {"s3_endpoint": "127.0.0.1:9000"},  # without credentials
        {"s3_bucket": "Bad_Bucket"},
        {"max_entries": 0},
        {"embedder": "word2vec"},
        {"collection_prefix": "has-dash"},
        {"tenant_limits": "gold=0:"},
        {"import_buckets": "ok-bucket,Not_A_Bucket"},
        {"reconcile_interval_seconds": -1},
        {"lcbfu_grace_accesses": -1},
        {"lcbfu_half_life_accesses": -5},
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CacheSettings.load(**overrides)
