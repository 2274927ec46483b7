"""The embedded stores start without noise at their source, and a real failure keeps its cause:
SeaweedFS is probed only once its S3 port is open (no urllib3 connection-retry warnings), Milvus
Lite is never asked for the timestamp it does not implement (no server-side traceback) and its
scans raise no MVCC warning."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from modm.services.cache.milvus import MilvusVectorStore
from modm.services.cache.seaweed import SeaweedServer
from tests.integration.cache_helpers import seaweed

pytestmark = [pytest.mark.integration]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def warnings_and_worse(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


def test_seaweed_start_retries_no_connection(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), seaweed(tmp_path / "s3") as s3:
        s3.store("modm-cache").put("k", b"v", "text/plain")
    assert not warnings_and_worse(caplog)


def test_seaweed_on_a_taken_port_fails_with_the_cause(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = SeaweedServer(tmp_path / "s3", s3_port=squatter.getsockname()[1])
        server.start()
        try:
            with pytest.raises(RuntimeError, match=r"SeaweedFS exited with 1:\n.*is not available"):
                server.wait_ready(timeout_s=60)
        finally:
            server.stop()


def test_milvus_lite_opens_and_scans_without_a_traceback_or_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    iterator = Recorder()  # pymilvus' loggers do not propagate to the root, where caplog listens
    logging.getLogger("pymilvus.client.iterator.query_iterator").addHandler(iterator)
    try:
        with caplog.at_level(logging.INFO):
            store = MilvusVectorStore(str(tmp_path / "milvus.db"), 8, "quiet_c")
            try:
                assert list(store.scan()) == [] and store.index_type == "HNSW"
            finally:
                store.close()
    finally:
        logging.getLogger("pymilvus.client.iterator.query_iterator").removeHandler(iterator)
    assert not warnings_and_worse(caplog)
    assert [r.getMessage() for r in iterator.records if r.levelno >= logging.WARNING] == []


def test_seaweed_starts_in_a_folder_deeper_than_a_socket_path_allows(tmp_path: Path) -> None:
    folder = tmp_path / ("a-rather-long-folder-name-" * 5) / "s3"
    assert len(str(folder / "filer.sock")) > 107  # the most a Unix socket's path may hold
    server = SeaweedServer(folder)
    server.start()
    try:
        server.wait_ready(timeout_s=60)
    finally:
        server.stop()
