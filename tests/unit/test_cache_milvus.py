"""MilvusVectorStore's error handling, on a stand-in client (the real servers are integration tests)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pymilvus import MilvusException

from modm.services.cache.milvus import MilvusVectorStore, auto_search_ef
from modm.services.cache.stores import StoreUnavailable


class RestartedServer:
    """Answers like a Milvus server that restarted: not loaded until asked to load."""

    def __init__(self, load_fails: bool = False) -> None:
        self.loaded = False
        self.load_fails = load_fails
        self.calls: list[str] = []

    def search(self, collection: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
        self.calls.append("search")
        if not self.loaded:
            raise MilvusException(code=101, message=f"failed to search: collection not loaded[collection={collection}]")
        return [[]]

    def load_collection(self, collection: str) -> None:
        self.calls.append("load")
        if self.load_fails:
            raise MilvusException(code=1, message="server unavailable")
        self.loaded = True


def store_on(client: RestartedServer) -> MilvusVectorStore:
    store = MilvusVectorStore.__new__(MilvusVectorStore)  # skip the connection and collection set-up
    store.client, store.collection, store.index_type = client, "c", "HNSW"  # type: ignore[assignment]
    store.search_ef, store.read_consistency = 64, "Session"
    store.entries, store._entries_lock = 0, threading.Lock()
    return store


def test_a_collection_not_loaded_after_a_server_restart_is_loaded_and_the_call_retried() -> None:
    client = RestartedServer()
    assert store_on(client).search([1.0, 0.0], 1, "t", None) == []
    assert client.calls == ["search", "load", "search"]


def test_a_failed_reload_is_unavailable() -> None:
    client = RestartedServer(load_fails=True)
    with pytest.raises(StoreUnavailable):
        store_on(client).search([1.0, 0.0], 1, "t", None)
    assert client.calls == ["search", "load"]


class BrokenServer(RestartedServer):
    def search(self, collection: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
        self.calls.append("search")
        raise MilvusException(code=65535, message="something else")


def test_other_errors_are_not_retried() -> None:
    client = BrokenServer()
    with pytest.raises(StoreUnavailable):
        store_on(client).search([1.0, 0.0], 1, "t", None)
    assert client.calls == ["search"]


def test_auto_ef_keeps_64_for_a_small_cache_and_grows_with_the_square_root_of_the_entries() -> None:
    assert [auto_search_ef(n, 1) for n in (0, 5_000, 10_000, 100_000, 1_000_000)] == [64, 64, 64, 208, 640]
    assert auto_search_ef(10**9, 1) == 1024  # capped
    assert auto_search_ef(0, 300) == 300  # never under the number of results asked for


class CountingServer(RestartedServer):
    def __init__(self) -> None:
        super().__init__()
        self.loaded, self.params = True, []

    def search(self, collection: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
        self.params.append(kwargs["search_params"]["params"]["ef"])
        return [[]]

    def insert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        pass

    def delete(self, collection: str, filter: str) -> None:
        pass


def test_the_auto_ef_follows_the_entries_this_store_inserts_and_deletes() -> None:
    from modm.services.cache.stores import VectorRecord

    client = CountingServer()
    store = store_on(client)
    store.search_ef = "auto"
    store.entries = 99_999
    store.search([1.0, 0.0], 1, "t", None)
    store.insert(VectorRecord("a" * 32, "t", "", "m", "k", 1, 0.0, vector=[1.0, 0.0]))
    store.search([1.0, 0.0], 1, "t", None)
    store.delete(["a" * 32, "b" * 32])
    assert store.entries == 99_998
    store.search_ef = 100  # a fixed ef, never under top_k
    store.search([1.0, 0.0], 1, "t", None)
    store.search([1.0, 0.0], 150, "t", None)
    assert client.params == [208, 208, 100, 150]
