from __future__ import annotations

import pytest

from modm.errors import InvalidArgument
from modm.params import fingerprint
from modm.services.cache.validation import (
    RequestLimits,
    check_embedding,
    check_entry_id,
    check_metadata,
    check_model_id,
    check_prompt,
    check_tenant,
    check_top_k,
)

LIMITS = RequestLimits(max_prompt_chars=50, max_top_k=10, max_image_bytes=1000, max_image_pixels=100)


def field_of(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        fn(*args)
    return info.value.field


@pytest.mark.parametrize("tenant", ["a", "acme", "Team-1.prod_x", "0" * 64])
def test_good_tenants(tenant: str) -> None:
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "-lead", ".hidden", "a b", 'a" or tenant != "b', "x" * 65, "tenant/../x", "é"])
def test_bad_tenants_name_the_field(tenant: str) -> None:
    assert field_of(check_tenant, tenant) == "tenant"


def test_prompts() -> None:
    assert check_prompt("  a fox  ", LIMITS) == "a fox"
    assert field_of(check_prompt, "   ", LIMITS) == "prompt"
    assert field_of(check_prompt, "x" * 51, LIMITS) == "prompt"
    assert field_of(check_prompt, "a\x00b", LIMITS) == "prompt"
    with pytest.raises(InvalidArgument) as info:
        check_prompt("", LIMITS, "params.prompt")
    assert info.value.field == "params.prompt"


def test_top_k() -> None:
    assert check_top_k(0, LIMITS) == 1
    assert check_top_k(10, LIMITS) == 10
    assert field_of(check_top_k, 11, LIMITS) == "top_k"


def test_entry_ids() -> None:
    assert check_entry_id("0123456789abcdef0123456789abcdef")
    for bad in ("", "xyz", "0123456789ABCDEF0123456789ABCDEF", "0" * 33):
        assert field_of(check_entry_id, bad) == "entry_id"


def test_embeddings_are_checked_and_normalised() -> None:
    assert check_embedding([3.0, 4.0], 2) == pytest.approx([0.6, 0.8])
    assert field_of(check_embedding, [1.0], 2) == "embedding"
    assert field_of(check_embedding, [0.0, 0.0], 2) == "embedding"
    assert field_of(check_embedding, [float("nan"), 1.0], 2) == "embedding"


def test_model_id_and_metadata() -> None:
    assert check_model_id(" sd3 ") == "sd3"
    assert field_of(check_model_id, "") == "model_id"
    assert field_of(check_model_id, "m" * 257) == "model_id"
    assert check_metadata({"a": "b"}) == {"a": "b"}
    assert field_of(check_metadata, {str(i): "" for i in range(33)}) == "metadata"
    assert field_of(check_metadata, {"": "x"}).startswith("metadata[")
    assert field_of(check_metadata, {"k": "v" * 1025}) == "metadata['k']"


def test_fingerprint_ignores_only_the_seed_and_whitespace() -> None:
    base = fingerprint("a fox", "", 512, 512, 28, 7.0, 1)
    assert fingerprint(" a fox ", "", 512, 512, 28, 7.0, 2).key == base.key
    for other in (
        fingerprint("a fox!", "", 512, 512, 28, 7.0, 1),
        fingerprint("a fox", "blurry", 512, 512, 28, 7.0, 1),
        fingerprint("a fox", "", 512, 768, 28, 7.0, 1),
        fingerprint("a fox", "", 512, 512, 30, 7.0, 1),
        fingerprint("a fox", "", 512, 512, 28, 7.5, 1),
        fingerprint("a fox", "", 512, 512, 28, None, 1),
    ):
        assert other.key != base.key


def test_seed_must_match_only_when_the_request_fixed_one() -> None:
    stored = fingerprint("a fox", "", 0, 0, 0, None, 42)
    assert fingerprint("a fox", "", 0, 0, 0, None, 42).matches(stored.key, stored.seed)
    assert not fingerprint("a fox", "", 0, 0, 0, None, 43).matches(stored.key, stored.seed)
    assert fingerprint("a fox", "", 0, 0, 0, None, None).matches(stored.key, stored.seed)
    assert not fingerprint("a fox", "", 0, 0, 0, None, None).matches("", "")
