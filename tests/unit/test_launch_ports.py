"""Ports for servers that start later: below the kernel's ephemeral range, so no outgoing
connection made meanwhile holds one (a port from bind(0) sometimes was, and a worker of a
16-slot `modm up` failed to bind), never the same twice, and never one that is taken."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modm import launch


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_planned_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    ports = [launch.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(launch._LOWEST_PORT <= port < ephemeral_low() for port in ports)
    assert launch.ephemeral_port() >= ephemeral_low()  # the kernel's, for a server started at once


def test_a_taken_port_is_never_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(launch, "_below_ephemeral", lambda: range(taken, taken + 1))
        with pytest.raises(RuntimeError, match="no free port"):
            launch.free_port()
