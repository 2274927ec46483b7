"""The service harness and the router's authentication against hostile callers, in process.

Bytes that are not the request message must be INVALID_ARGUMENT (gRPC alone says UNKNOWN), an
anonymous caller must learn nothing more than UNAUTHENTICATED, and rotated token files must
take effect at the next call, however the file was replaced.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from hypothesis import given
from hypothesis import strategies as st

from modm.services.router.auth import BearerAuthInterceptor, TokenFile
from modm.serving import ServiceHost
from modm.settings import ServiceSettings
from modm.v1 import router_pb2, router_pb2_grpc
from tests.hostile import Tally, fuzz_settings

TALLY = Tally("harness")


class Echo(router_pb2_grpc.RouterServicer):
    """Counts the calls that got through; answers with what it parsed."""

    def __init__(self) -> None:
        self.calls = 0

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: aio.ServicerContext
    ) -> router_pb2.GenerateResponse:
        self.calls += 1
        return router_pb2.GenerateResponse(tenant=request.tenant)

    async def GenerateStream(
        self, request: router_pb2.GenerateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateEvent]:
        self.calls += 1
        yield router_pb2.GenerateEvent(result=router_pb2.GenerateResponse(tenant=request.tenant))


class Harness:
    """A ServiceHost with the Echo servicer on its own event-loop thread; a blocking client."""

    def __init__(self, tokens: Path | None = None, interceptors: Sequence[aio.ServerInterceptor] = ()) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servicer = Echo()
        self.host = self._run(self._start(tokens, interceptors))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.host.port}")

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self, tokens: Path | None, extra: Sequence[aio.ServerInterceptor]) -> ServiceHost:
        interceptors = [*([BearerAuthInterceptor(TokenFile(tokens))] if tokens else []), *extra]
        host = ServiceHost(
            ServiceSettings(port=0, max_message_mb=1),
            ["modm.v1.Router"],
            handle_signals=False,
            interceptors=interceptors,
        )
        router_pb2_grpc.add_RouterServicer_to_server(self.servicer, host.server)
        await host.start()
        return host

    def call(self, method: str, data: bytes, token: str | None = None) -> tuple[grpc.StatusCode, str]:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        try:
            if method == "GenerateStream":
                list(self.channel.unary_stream(f"/modm.v1.Router/{method}")(data, timeout=10, metadata=metadata))
            else:
                self.channel.unary_unary(f"/modm.v1.Router/{method}")(data, timeout=10, metadata=metadata)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""  # type: ignore[attr-defined]
        return grpc.StatusCode.OK, ""

    def close(self) -> None:
        self.channel.close()
        self._run(self.host.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def open_host() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()
    print("\n" + TALLY.report())


@given(data=st.binary(max_size=128), method=st.sampled_from(["Generate", "GenerateStream"]))
@fuzz_settings(600)
def test_bytes_that_are_not_the_message_are_invalid_argument(open_host: Harness, data: bytes, method: str) -> None:
    code, details = open_host.call(method, data)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert details.startswith("request: not a valid message"), details
    TALLY.count(f"router {method} (raw bytes, in process)", code.name)


@pytest.mark.parametrize("method", ["Generate", "GenerateStream"])
def test_a_tenant_that_is_not_utf8_is_invalid_argument(open_host: Harness, method: str) -> None:
    code, details = open_host.call(method, b"\x12\x02\xff\xfe")  # field 2 (tenant): 0xff 0xfe
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "String field" in details, details


def test_oversize_is_resource_exhausted(open_host: Harness) -> None:
    code, details = open_host.call("Generate", b"\x12" + b"\xff\xff\x7f" + b"x" * (2 << 20))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details


def test_anonymous_callers_touch_nothing_even_with_malformed_bytes(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("good-token a\n")
    harness = Harness(tokens)
    try:
        for method in ("Generate", "GenerateStream"):
            for data in (b"", b"\xff\xff\xff", router_pb2.GenerateRequest(tenant="a").SerializeToString()):
                for token in (None, "bad-token", "good-toke", "good-token2", "Good-Token"):
                    code, _ = harness.call(method, data, token)
                    assert code is grpc.StatusCode.UNAUTHENTICATED, (method, data, token)
        assert harness.servicer.calls == 0
        ok = router_pb2.GenerateRequest(tenant="a").SerializeToString()
        assert harness.call("Generate", ok, "good-token") == (grpc.StatusCode.OK, "")
        assert harness.call("Generate", b"\xff", "good-token")[0] is grpc.StatusCode.INVALID_ARGUMENT
        assert harness.servicer.calls == 1
    finally:
        harness.close()


# --- token rotation ------------------------------------------------------------------------------


def test_rotations_within_one_mtime_tick_take_effect(tmp_path: Path) -> None:
    """Coarse timestamps (1 s on some filesystems) must not hide a rotation: a rewrite of
    another length, or an atomic rename of a same-length file, is seen at the next call."""
    path = tmp_path / "tokens"
    path.write_text("token-aaaa\n")
    tokens = TokenFile(path)
    assert tokens.accepts("token-aaaa")
    tick = path.stat().st_mtime_ns
    path.write_text("token-bb\n")
    os.utime(path, ns=(tick, tick))
    assert tokens.accepts("token-bb") and not tokens.accepts("token-aaaa")
    staged = tmp_path / "tokens.new"
    staged.write_text("token-cc\n")
    os.utime(staged, ns=(tick, tick))
    staged.replace(path)
    assert tokens.accepts("token-cc") and not tokens.accepts("token-bb")


def test_a_kubernetes_style_symlink_swap_rotates(tmp_path: Path) -> None:
    """A mounted Secret: `tokens` -> `..data/tokens`, `..data` -> a timestamped folder swapped
    atomically on update (the new file may keep the old one's mtime)."""
    old, new = tmp_path / "..2026_01", tmp_path / "..2026_02"
    old.mkdir()
    new.mkdir()
    (old / "tokens").write_text("old-token\n")
    (new / "tokens").write_text("new-token\n")
    stat = (old / "tokens").stat()
    os.utime(new / "tokens", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (tmp_path / "..data").symlink_to(old.name)
    (tmp_path / "tokens").symlink_to("..data/tokens")
    tokens = TokenFile(tmp_path / "tokens")
    assert tokens.accepts("old-token")
    (tmp_path / "..data_tmp").symlink_to(new.name)
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    assert tokens.accepts("new-token") and not tokens.accepts("old-token")


def test_a_vanished_or_emptied_file_keeps_the_last_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\nkeep-me\n")
    tokens = TokenFile(path)
    path.unlink()
    assert tokens.accepts("keep-me")
    path.write_text("")
    assert tokens.accepts("keep-me")
    path.write_text("next\n")
    assert tokens.accepts("next") and not tokens.accepts("keep-me")


def test_no_token_file_content_means_no_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no token"):
        TokenFile(path)
    with pytest.raises(FileNotFoundError):
        TokenFile(tmp_path / "missing")
