"""`modm up` started and stopped by the test, twice on one data dir: the cache survives. A
newcomer's first start prints no traceback and no warning, every service in one format (text,
or JSON with --log-format json); a broken start still prints its error with the cause."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import modm
from modm.launch import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODM = str(Path(sys.executable).parent / "modm")
SERVICE_LINE = re.compile(r"^\[(cache |slot\d+|router|monitor)\s*\] (?P<record>.*)$")
TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \w+ [\w.]+: ")


def assert_quiet_in_one_format(lines: list[str], fmt: str) -> None:
    """No traceback, no warning (logged, or printed by Python's warnings module), no progress bar,
    and once the stack starts every line is modm up's own or one record of a service in `fmt`."""
    text = "\n".join(lines)
    for noise in ("Traceback", "WARNING", "Warning:", "%|"):
        assert noise not in text, text
    started = next(i for i, line in enumerate(lines) if line.startswith("[modm  ]"))
    for line in lines[started:]:
        if line.startswith("[modm  ]"):
            continue
        match = SERVICE_LINE.match(line)
        assert match is not None, f"not a service's record: {line!r}"
        record = match["record"]
        assert TEXT_RECORD.match(record) if fmt == "text" else json.loads(record)["level"] == "INFO", line


@contextmanager
def modm_up(home: Path, port: int, *args: str) -> Iterator[list[str]]:
    """`modm up` (with `args`) until the block ends; yields its output lines as they come."""
    proc = subprocess.Popen(
        [MODM, "up", "--data-dir", str(home), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip())
            if "modm is up" in lines[-1]:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 400
        while not up.wait(0.5):
            assert proc.poll() is None, "\n".join(lines[-40:])
            assert time.monotonic() < deadline, "\n".join(lines[-40:])
        yield lines
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(10)
    assert code == 0, "\n".join(lines[-40:])


def test_modm_up_serves_and_keeps_the_cache_across_restarts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    http_port = free_port()
    with modm_up(home, port, "--http-port", str(http_port)) as lines:
        assert_quiet_in_one_format(lines, "text")  # the first start: tiny models built, stores created
        assert any(line.startswith("[cache ]") for line in lines)
        assert any(line.startswith("[router]") for line in lines)
        assert any(f"http://127.0.0.1:{http_port}/v1" in line for line in lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/models", timeout=30) as answer:
            assert answer.status == 200 and json.load(answer)["object"] == "list"
        out = tmp_path / "first.png"
        done = subprocess.run(
            [
                MODM,
                "generate",
                "a lighthouse at dusk",
                "--steps",
                "2",
                "--seed",
                "5",
                "-o",
                str(out),
                "--json",
                "--endpoint",
                endpoint,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        meta = json.loads(done.stdout)
        assert meta["outcome"] == "miss" and meta["pool"] == "large" and meta["cache_available"]
        assert out.stat().st_size > 0
        with modm.Client(endpoint) as client:  # wait for the insert after the reply
            deadline = time.monotonic() + 30
            while client.stats()["outcomes"].get("miss") and time.monotonic() < deadline:
                probe = client.generate("a lighthouse at dusk", steps=2, seed=5, cache_policy="no_store")
                if probe.outcome == "exact_repeat":
                    break
                time.sleep(0.5)
        stats = subprocess.run([MODM, "stats", "--endpoint", endpoint], capture_output=True, text=True, timeout=60)
        assert stats.returncode == 0 and "pool large" in stats.stdout, stats.stderr
    assert any("stopping" in line for line in lines) and any("router stopped (0)" in line for line in lines)
    assert (home / "logs" / "router.log").exists() and (home / "cache").is_dir()

    with modm_up(home, port, "--http-port", "0", "--log-format", "json") as lines, modm.Client(endpoint) as client:
        again = client.generate("a lighthouse at dusk", steps=2, seed=5)
        assert again.outcome == "exact_repeat" and again.pool == "cache", again.metadata()
        assert_quiet_in_one_format(lines, "json")


def test_a_broken_start_prints_the_error_and_its_cause(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    config = tmp_path / "broken.toml"
    config.write_text(f'[large]\nmodel = "{empty}"\n')
    args = ["--config", str(config), "--no-cache", "--no-monitor", "--workers", "1", "--http-port", "0"]
    done = subprocess.run(
        [MODM, "up", "--data-dir", str(tmp_path / "home"), "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" in done.stdout, done.stdout
    assert f"OSError: Error no file named model_index.json found in directory {empty}" in done.stdout
    assert f"slot0 did not start: process exited with 1; its output is above and in {tmp_path}" in done.stdout
    assert "Event loop is closed" not in done.stdout and "never awaited" not in done.stdout, done.stdout
