"""Acceptance of the local scaler: `modm up --workers 3` (two large slots, one small) with the
monitor deciding every 2 s over the router's 30 s window. A burst of misses, then a stream of
hits: a slot that served the large pool ends up serving the small one (the router's Stats show
it), and the monitor's log says why (the hit rate it acted on)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import modm
from modm.launch import free_port
from tests.integration.test_router_stack import ORIGINAL, PARAPHRASE
from tests.integration.test_up import modm_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 4


def pools(client: modm.Client) -> dict[str, str]:
    """Healthy workers by address -> pool, as the router sees them."""
    return {w["address"]: w["pool"] for w in client.stats()["workers"] if w["healthy"]}


def monitor_lines(lines: list[str], message: str) -> list[dict[str, Any]]:
    prefix = "[monitor] "
    found = [json.loads(line[len(prefix) :]) for line in list(lines) if line.startswith(prefix)]
    return [entry for entry in found if entry["msg"] == message]


def test_hits_after_a_burst_of_misses_move_a_large_slot_to_the_small_pool(
    tmp_path: Path, tiny_model: Callable[[str], Path]
) -> None:
    config = tmp_path / "up.toml"
    config.write_text(
        f'[large]\nmodel = "{tiny_model("sd3")}"\nmax_batch_size = 1\nwarmup = false\n'
        f'[small]\nmodel = "{tiny_model("sdxl")}"\nmax_batch_size = 1\nwarmup = false\n'
        "[router]\nwindow_s = 30\ndiscovery_interval_s = 0.5\n"
        '[monitor]\npolicy = "modm-b"\ninterval_s = 2\nmin_small = 1\n'
    )
    port = free_port()
    args = ("--workers", "3", "--config", str(config), "--log-format", "json")  # the monitor's fields, parsed
    with modm_up(tmp_path / "home", port, *args) as lines, modm.Client(f"127.0.0.1:{port}", timeout=120) as client:
        deadline = time.monotonic() + 120
        while sorted((before := pools(client)).values()) != ["large", "large", "small"]:
            assert time.monotonic() < deadline, before
            time.sleep(0.2)

        first = client.generate(ORIGINAL, steps=STEPS, seed=1)  # a miss, inserted for the hits to come
        assert first.outcome == "miss" and first.pool == "large"
        for i in range(3):
            burst = client.generate(f"an unrelated scene number {i}", steps=STEPS, seed=i, cache_policy="no_store")
            assert burst.outcome == "miss"

        moved: list[str] = []
        seed, deadline = 100, time.monotonic() + 150
        while not moved:
            assert time.monotonic() < deadline, "\n".join(lines[-30:])
            seed += 1  # no_store: the paraphrase is never inserted, so it stays a hit, never a repeat
            client.generate(PARAPHRASE, steps=STEPS, seed=seed, cache_policy="no_store")
            now = pools(client)
            moved = [a for a, pool in before.items() if pool == "large" and now.get(a) == "small"]

        stats = client.stats()
        assert stats["outcomes"].get("hit", 0) > stats["outcomes"].get("miss", 0)
        served_small = {w["address"] for w in stats["workers"] if w["pool"] == "small"}
        assert set(moved) <= served_small and len(served_small) == 2

        switches = monitor_lines(lines, "switching slot")
        assert [(s["from"], s["to"]) for s in switches][-1:] == [("large", "small")], switches
        decisions = [d for d in monitor_lines(lines, "decision") if d["action"] == "move"]
        why = decisions[-1]["reason"]
        assert "1 large + 2 small" in why and "h=" in why, why  # modm-b: misses' share of the work, hit rate
