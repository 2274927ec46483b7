"""Warm the cache from existing images with their prompts (MoDM's pre-cached directory).

A source is a folder on the cache server (only under the configured import root) or a prefix
in a bucket of the cache's object store. Each image (.png, .jpg, .jpeg, .webp) needs its
prompt, from a sidecar `<name>.txt` beside it or from a line `{"file": "<name>", "prompt":
"..."}` of a `prompts.jsonl` in the folder/prefix (names relative to it). Images without a
prompt, or that the cache refuses (undecodable, too large), are skipped and reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from modm.errors import FailedPrecondition, InvalidArgument, ModmError, Unavailable
from modm.services.cache.model import NewEntry
from modm.services.cache.settings import BUCKET
from modm.services.cache.stores import ObjectMissing, ObjectStore, StoreUnavailable

if TYPE_CHECKING:
    from modm.services.cache.engine import CacheEngine

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
PROMPTS_FILE = "prompts.jsonl"


@dataclass(frozen=True)
class ImportItem:
    name: str
    prompt: str | None
    read: Callable[[], bytes]


class ImportSource(ABC):
    @abstractmethod
    def items(self) -> list[ImportItem]:
        """Every image of the source with its prompt (None when it has none); blocking."""


def _utf8(data: bytes, name: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidArgument(name, "is not UTF-8 text") from exc


def _parse_prompts(text: str) -> dict[str, str]:
    prompts = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts[str(row["file"])] = str(row["prompt"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidArgument(PROMPTS_FILE, f"line {number} is not {{'file': ..., 'prompt': ...}}") from exc
    return prompts


class FolderSource(ImportSource):
    def __init__(self, folder: Path, root: Path | None = None) -> None:
        self.folder = folder
        self.root = (root or folder).resolve()

    def _inside(self, path: Path) -> bool:
        """Whether `path`, symlinks followed, stays under the import root: a link planted in the
        folder must not read (and store as an image or a prompt) a file from elsewhere."""
        return path.resolve().is_relative_to(self.root)

    @classmethod
    def under_root(cls, folder: str, root: Path | None) -> FolderSource:
        if root is None:
            raise FailedPrecondition("imports from folders are disabled: set MODM_CACHE_IMPORT_ROOT")
        if "\x00" in folder:
            raise InvalidArgument("folder", "must not contain NUL characters")
        base = root.resolve()
        target = (base / folder).resolve()
        if not target.is_relative_to(base):
            raise InvalidArgument("folder", "must be inside the import root")
        if not target.is_dir():
            raise InvalidArgument("folder", "is not a folder under the import root")
        return cls(target, base)

    def items(self) -> list[ImportItem]:
        listed = self.folder / PROMPTS_FILE
        prompts = {}
        if listed.is_file() and self._inside(listed):
            prompts = _parse_prompts(_utf8(listed.read_bytes(), PROMPTS_FILE))
        found = []
        for path in sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            if not self._inside(path):
                continue
            name = path.relative_to(self.folder).as_posix()
            sidecar = path.with_suffix(".txt")
            prompt = prompts.get(name)
            if not prompt and sidecar.is_file() and self._inside(sidecar):
                prompt = sidecar.read_bytes().decode(errors="replace").strip()
            found.append(ImportItem(name, prompt, path.read_bytes))
        return found


class ObjectStoreSource(ImportSource):
    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    @classmethod
    def for_request(
        cls,
        engine: CacheEngine,
        bucket: str,
        prefix: str,
        *,
        allowed_buckets: Collection[str] = (),
        reserved_prefix: str | None = None,
    ) -> ObjectStoreSource:
        """Only the cache's own bucket (off `reserved_prefix`, where every collection's entries
        live; by default the engine's own prefix) or one of `allowed_buckets`: the cache's
        credentials may reach buckets, and other tenants' images, that Import must not read."""
        reserved = engine.prefix if reserved_prefix is None else reserved_prefix
        if not prefix or prefix.startswith("/") or ".." in PurePosixPath(prefix).parts or "\x00" in prefix:
            raise InvalidArgument("bucket_prefix", "must be a relative key prefix such as 'precache/'")
        if bucket and not BUCKET.match(bucket):
            raise InvalidArgument("bucket", "is not a valid bucket name")
        own_bucket = not bucket or bucket == getattr(engine.objects, "bucket", bucket)
        if own_bucket and (prefix.startswith(reserved) or reserved.startswith(prefix)):
            raise InvalidArgument("bucket_prefix", f"must not overlap the cache's own prefix {reserved!r}")
        if own_bucket:
            store = engine.objects
        elif bucket in allowed_buckets and engine.object_store_for_bucket is not None:
            store = engine.object_store_for_bucket(bucket)
        else:
            raise InvalidArgument("bucket", f"{bucket!r} is not the cache's own bucket nor one of its import_buckets")
        return cls(store, prefix)

    def items(self) -> list[ImportItem]:
        keys = [o.key for o in self.store.list(self.prefix)]
        prefix = self.prefix if self.prefix.endswith("/") else self.prefix.rsplit("/", 1)[0] + "/"
        prompts: dict[str, str] = {}
        if f"{prefix}{PROMPTS_FILE}" in keys:
            prompts = _parse_prompts(_utf8(self.store.get(f"{prefix}{PROMPTS_FILE}"), PROMPTS_FILE))
        key_set = set(keys)
        found = []
        for key in keys:
            suffix = PurePosixPath(key).suffix.lower()
            if suffix not in IMAGE_SUFFIXES:
                continue
            name = key[len(prefix) :] if key.startswith(prefix) else key
            sidecar = key[: -len(suffix)] + ".txt"
            prompt = prompts.get(name)
            if prompt is None and sidecar in key_set:
                prompt = self.store.get(sidecar).decode(errors="replace").strip()
            found.append(ImportItem(name, prompt, lambda k=key: self.store.get(k)))
        return found


@dataclass
class ImportReport:
    entry_ids: list[str] = field(default_factory=list)
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        self.errors.append(f"{name}: {why}")


async def import_items(
    engine: CacheEngine,
    source: ImportSource,
    *,
    tenant: str,
    model_id: str,
    shared: bool = False,
    limit: int | None = None,
    concurrency: int = 4,
) -> ImportReport:
    from modm.services.cache.validation import check_tenant

    check_tenant(tenant)
    try:
        items = await asyncio.to_thread(source.items)
    except StoreUnavailable as exc:
        raise Unavailable(f"cannot list the import source: {exc}") from exc
    if limit is not None:
        items = items[:limit]
    report = ImportReport()
    results: list[str | None] = [None] * len(items)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, item: ImportItem) -> None:
        if not item.prompt:
            report.skip(item.name, "no prompt (sidecar .txt or prompts.jsonl line)")
            return
        async with gate:
            try:
                data = await asyncio.to_thread(item.read)
            except (OSError, ObjectMissing) as exc:
                report.skip(item.name, f"unreadable ({exc})")
                return
            try:
                inserted = await engine.insert(
                    NewEntry(tenant, item.prompt, data, model_id, metadata={"import": item.name}, shared=shared)
                )
            except ModmError as exc:
                report.skip(item.name, str(exc))
                return
            results[index] = inserted.entry_id

    await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    report.entry_ids = [r for r in results if r is not None]
    log.info("import finished", extra={"imported": len(report.entry_ids), "skipped": report.skipped})
    return report
