"""Path and key safety: what callers send never becomes a file path or an object key unescaped,
and Import reads nothing outside its configured root or the cache's own bucket rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modm.errors import FailedPrecondition, InvalidArgument, ModmError
from modm.services.cache.importer import FolderSource, ObjectStoreSource
from modm.services.cache.memory import MemoryObjectStore
from modm.services.cache.model import NewEntry
from tests.hostile import NASTY_STRINGS, Tally, fuzz_settings, hostile_text
from tests.unit.test_cache_engine import Harness, png

TALLY = Tally("paths")
KEY = re.compile(r"^entries/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[0-9a-f]{32}$")
TRICKS = ["..", "../outside", "../../etc", "/etc", "/", "ok/../../outside", "ok/../..", "./../outside", "~", "link-out"]


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print("\n" + TALLY.report())


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """An import root with a folder `ok`, a secret file beside the root, and links out of it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ok").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"SECRET IMAGE")
    (outside / "secret.txt").write_text("the contents of a private file")
    (outside / "prompts.jsonl").write_text(json.dumps({"file": "a.png", "prompt": "leaked"}) + "\n")
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    return root, outside


@pytest.mark.parametrize("folder", [*TRICKS, "ok\x00", "missing"])
def test_import_folders_outside_the_root_are_refused(layout: tuple[Path, Path], folder: str) -> None:
    root, _ = layout
    with pytest.raises(InvalidArgument) as refused:
        FolderSource.under_root(folder, root)
    assert refused.value.field == "folder"
    TALLY.count("Import folder (path tricks)", "invalid_argument")


def test_import_is_disabled_without_a_root() -> None:
    with pytest.raises(FailedPrecondition):
        FolderSource.under_root("ok", None)


def test_links_inside_the_folder_do_not_read_outside_the_root(layout: tuple[Path, Path]) -> None:
    """A planted link to an image, a sidecar or prompts.jsonl elsewhere is never read."""
    root, outside = layout
    ok = root / "ok"
    (ok / "a.png").write_bytes(png())
    (ok / "a.txt").symlink_to(outside / "secret.txt")  # the prompt would be a private file
    (ok / "b.png").symlink_to(outside / "secret.png")  # the image would be a private file
    (ok / "b.txt").write_text("an innocent prompt")
    (ok / "prompts.jsonl").symlink_to(outside / "prompts.jsonl")
    (ok / "sub").symlink_to(outside, target_is_directory=True)
    items = {item.name: item for item in FolderSource.under_root("ok", root).items()}
    assert set(items) == {"a.png"} and items["a.png"].prompt is None
    TALLY.count("Import folder (planted links)", "skipped")


def test_links_that_stay_inside_the_root_are_followed(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "shared").mkdir()
    (root / "shared" / "p.txt").write_text("a prompt kept once for many images")
    (root / "ok" / "c.png").write_bytes(png())
    (root / "ok" / "c.txt").symlink_to(root / "shared" / "p.txt")
    items = FolderSource.under_root("ok", root).items()
    assert [(i.name, i.prompt) for i in items] == [("c.png", "a prompt kept once for many images")]


def test_undecodable_prompt_files_are_refused_or_replaced(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "ok" / "prompts.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
    with pytest.raises(InvalidArgument) as refused:
        FolderSource.under_root("ok", root).items()
    assert refused.value.field == "prompts.jsonl"
    (root / "ok" / "prompts.jsonl").unlink()
    (root / "ok" / "d.png").write_bytes(png())
    (root / "ok" / "d.txt").write_bytes(b"caf\xe9")
    assert [i.prompt for i in FolderSource.under_root("ok", root).items()] == ["caf\ufffd"]


class FakeEngine:
    """What ObjectStoreSource.for_request reads off the engine."""

    def __init__(self) -> None:
        self.objects = MemoryObjectStore()
        self.objects.bucket = "modm-cache"  # type: ignore[attr-defined]
        self.prefix = "entries/"
        self.opened: list[str] = []

    def object_store_for_bucket(self, bucket: str) -> MemoryObjectStore:
        self.opened.append(bucket)
        return MemoryObjectStore()


@given(prefix=st.one_of(st.sampled_from([*TRICKS, "entries/", "entries", "entries/x", "e", ""]), hostile_text))
@fuzz_settings(1000)
def test_bucket_prefixes_stay_relative_and_off_the_caches_own_keys(prefix: str) -> None:
    engine = FakeEngine()
    try:
        source = ObjectStoreSource.for_request(engine, "", prefix)  # type: ignore[arg-type]
    except InvalidArgument as refused:
        assert refused.field == "bucket_prefix"
        TALLY.count("Import bucket_prefix", "invalid_argument")
        return
    TALLY.count("Import bucket_prefix", "accepted")
    parts = prefix.split("/")
    assert source.prefix == prefix and not prefix.startswith("/") and ".." not in parts and "\x00" not in prefix
    assert not prefix.startswith("entries/") and not "entries/".startswith(prefix)


@given(bucket=st.one_of(st.sampled_from(["Not_A_Bucket", "../x", "a" * 64, "ab", "-ab", "a..b/c"]), hostile_text))
@fuzz_settings(500)
def test_foreign_bucket_names_are_checked_before_any_store_is_opened(bucket: str) -> None:
    engine = FakeEngine()
    try:
        ObjectStoreSource.for_request(engine, bucket, "precache/")  # type: ignore[arg-type]
    except InvalidArgument as refused:
        assert refused.field == "bucket" and engine.opened == []
        TALLY.count("Import bucket", "invalid_argument")
        return
    TALLY.count("Import bucket", "accepted")
    assert not bucket or bucket == "modm-cache" or re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket)


@given(
    tenant=st.one_of(
        st.sampled_from(["a", "Tenant-1", "x.y_z", "a..", "9"]), st.sampled_from(NASTY_STRINGS), hostile_text
    ),
    prompt=hostile_text,
)
@fuzz_settings(300)
async def test_object_keys_are_built_from_checked_tenants_and_random_ids_only(tenant: str, prompt: str) -> None:
    """Whatever the tenant and prompt, every object the cache writes is entries/<tenant>/<hex>,
    and the prompt appears in no key."""
    harness = Harness()
    await harness.engine.start(background=False)
    try:
        try:
            await harness.engine.insert(NewEntry(tenant, prompt + " a red fox", png(), "model"))
        except ModmError:
            TALLY.count("cache Insert key", "refused")
            assert not harness.objects.objects
            return
        TALLY.count("cache Insert key", "stored")
        (key,) = harness.objects.objects
        assert KEY.match(key) and key.split("/")[1] == tenant, key
    finally:
        await harness.engine.close()
        await harness.engine.embedder.close()


def test_a_foreign_bucket_is_read_only_when_the_settings_allow_it() -> None:
    engine = FakeEngine()
    with pytest.raises(InvalidArgument, match="import_buckets") as refused:
        ObjectStoreSource.for_request(engine, "someone-elses", "precache/")  # type: ignore[arg-type]
    assert refused.value.field == "bucket" and engine.opened == []  # refused before any store is opened
    source = ObjectStoreSource.for_request(
        engine,  # type: ignore[arg-type]
        "precache-bucket",
        "precache/",
        allowed_buckets={"precache-bucket"},
    )
    assert engine.opened == ["precache-bucket"] and source.prefix == "precache/"
