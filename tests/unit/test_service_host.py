"""The service harness: a service that fails while starting stops its gRPC server there, so the
process ends with its own error and no teardown noise after it (a server left for interpreter
exit prints 'Event loop is closed' and 'coroutine ... was never awaited')."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, socket, sys
    from modm.serving import ServiceHost
    from modm.settings import ServiceSettings

    async def main(fail_at: str) -> None:
        port = int(sys.argv[2])
        host = ServiceHost(ServiceSettings(host="127.0.0.1", port=port), [], handle_signals=False)
        async with host:
            raise RuntimeError("the service failed to start")

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.parametrize("fail_at", ["bind", "loading"])
def test_a_failed_start_ends_with_its_own_error_and_nothing_after(fail_at: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1] if fail_at == "bind" else 0
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, fail_at, str(port)], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: " + ("Failed to bind" if fail_at == "bind" else "the service failed")), (
        done.stderr
    )
    assert "Event loop is closed" not in done.stderr and "never awaited" not in done.stderr, done.stderr
