"""MilvusVectorStore's error handling, on a stand-in client (the real servers are integration tests)."""

from __future__ import annotations

from typing import Any

import pytest
from pymilvus import MilvusException

from modm.services.cache.milvus import MilvusVectorStore
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
