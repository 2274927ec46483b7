from __future__ import annotations

import json
from pathlib import Path

import pytest

from modm.errors import FailedPrecondition, InvalidArgument
from modm.services.cache.importer import FolderSource, ObjectStoreSource
from modm.services.cache.memory import MemoryObjectStore


def test_folder_source_reads_sidecars_and_prompts_jsonl(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(b"A")
    (tmp_path / "a.txt").write_text(" a fox \n")
    (tmp_path / "sub" / "b.JPG").write_bytes(b"B")
    (tmp_path / "c.webp").write_bytes(b"C")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"file": "sub/b.JPG", "prompt": "a bee"}) + "\n\n")
    items = {i.name: i for i in FolderSource(tmp_path).items()}
    assert set(items) == {"a.png", "sub/b.JPG", "c.webp"}
    assert items["a.png"].prompt == "a fox" and items["a.png"].read() == b"A"
    assert items["sub/b.JPG"].prompt == "a bee"
    assert items["c.webp"].prompt is None


def test_bad_prompts_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text('{"file": "a.png"}\n')
    with pytest.raises(InvalidArgument) as info:
        FolderSource(tmp_path).items()
    assert "line 1" in str(info.value)


def test_folders_only_under_the_import_root(tmp_path: Path) -> None:
    (tmp_path / "root" / "ok").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    assert FolderSource.under_root("ok", tmp_path / "root").folder == (tmp_path / "root" / "ok").resolve()
    for bad in ("../outside", "/etc", "missing"):
        with pytest.raises(InvalidArgument) as info:
            FolderSource.under_root(bad, tmp_path / "root")
        assert info.value.field == "folder"
    with pytest.raises(FailedPrecondition):
        FolderSource.under_root("ok", None)


def test_object_store_source_reads_sidecars_and_prompts() -> None:
    store = MemoryObjectStore()
    store.put("pre/x.png", b"X", "image/png")
    store.put("pre/x.txt", b"an x", "text/plain")
    store.put("pre/y.png", b"Y", "image/png")
    store.put("pre/prompts.jsonl", json.dumps({"file": "y.png", "prompt": "a y"}).encode(), "text/plain")
    store.put("other/z.png", b"Z", "image/png")
    items = {i.name: i for i in ObjectStoreSource(store, "pre/").items()}
    assert {n: i.prompt for n, i in items.items()} == {"x.png": "an x", "y.png": "a y"}
    assert items["y.png"].read() == b"Y"
