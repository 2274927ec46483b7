"""Bounded load against a local stack: a router over one tiny large worker (no cache), on loopback.

Closed-loop clients at increasing concurrency, each level for a fixed time, then a quiet period.
Per level: throughput, p50/p99 latency of the answered calls, how many were refused with
RESOURCE_EXHAUSTED (admission control: the router's queue or the deadline), the router's queue
depth (peak seen by Stats), and the router's and worker's RSS. After the load, queue depth and
RSS are read again to show nothing keeps growing. Stops by itself; writes bench-out/load.json.

    .venv/bin/python benchmarks/load.py [--levels 1,2,4,8,16] [--seconds 8] [--max-queue 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import modm  # noqa: E402
from modm.client import ModmClientError, ResourceExhaustedError  # noqa: E402
from modm.launch import ServiceProcess, free_port, start_module  # noqa: E402
from modm.services.worker.tiny import build_tiny  # noqa: E402
from tests.procs import start_worker  # noqa: E402


@dataclass
class Level:
    concurrency: int
    seconds: float
    answered: int = 0
    refused: int = 0  # RESOURCE_EXHAUSTED
    other_errors: dict[str, int] = field(default_factory=dict)
    throughput_per_s: float = 0.0
    p50_s: float = 0.0
    p99_s: float = 0.0
    peak_queue: int = 0
    router_rss_mb: float = 0.0
    worker_rss_mb: float = 0.0
    retry_after_s: list[float] = field(default_factory=list)


def rss_mb(proc: ServiceProcess) -> float:
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def queue_depth(client: modm.Client) -> int:
    return sum(int(p["queue_depth"]) for p in client.stats()["pools"])


def snapshot(client: modm.Client, router: ServiceProcess, worker: ServiceProcess) -> dict[str, float]:
    return {"queue": queue_depth(client), "router_rss_mb": rss_mb(router), "worker_rss_mb": rss_mb(worker)}


def run_level(client: modm.Client, concurrency: int, seconds: float, steps: int, timeout: float) -> Level:
    level = Level(concurrency, seconds)
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                client.generate(f"load {concurrency}-{n}-{i}", steps=steps, cache_policy="off", timeout=timeout)
            except ResourceExhaustedError as error:
                with lock:
                    level.refused += 1
                    level.retry_after_s.append(error.retry_after_s or 0.0)
                time.sleep(min(error.retry_after_s or 0.1, 0.5))  # a client honouring retry-after, briefly
            except ModmClientError as error:
                with lock:
                    level.other_errors[error.code] = level.other_errors.get(error.code, 0) + 1
            else:
                with lock:
                    latencies.append(time.monotonic() - started)
            i += 1

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(concurrency)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        level.peak_queue = max(level.peak_queue, queue_depth(client))
        time.sleep(0.2)
    elapsed = time.monotonic() - began
    level.answered = len(latencies)
    level.throughput_per_s = len(latencies) / elapsed
    if latencies:
        ordered = sorted(latencies)
        level.p50_s = statistics.median(ordered)
        level.p99_s = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    level.retry_after_s = sorted(set(level.retry_after_s))[:5]
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,2,4,8,16", help="Concurrencies, comma-separated.")
    parser.add_argument("--seconds", type=float, default=8.0, help="Duration of each level.")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=4, help="The router's max_queue per pool.")
    parser.add_argument("--max-batch", type=int, default=2, help="The worker's max_batch_size.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Each call's deadline.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out/load.json")
    args = parser.parse_args()
    levels = [int(c) for c in args.levels.split(",")]

    with tempfile.TemporaryDirectory(prefix="modm-load-") as tmp:
        root = Path(tmp)
        worker = start_worker(
            build_tiny("sd3", root / "sd3"), root, role="large", max_batch_size=args.max_batch, log_format="text"
        )
        router = None
        try:
            worker.wait_serving(timeout=300)
            port = free_port()
            router = start_module(
                "modm.services.router",
                {
                    "MODM_ROUTER_PORT": str(port),
                    "MODM_ROUTER_HOST": "127.0.0.1",
                    "MODM_ROUTER_LARGE_WORKERS": worker.address,
                    "MODM_ROUTER_MAX_QUEUE": str(args.max_queue),
                    "MODM_ROUTER_DISCOVERY_INTERVAL_S": "0.5",
                    "MODM_ROUTER_LOG_FORMAT": "text",
                },
                root / "router.log",
                port,
            )
            router.wait_serving()
            with modm.Client(router.address, retries=0, timeout=args.timeout) as client:
                while not any(p["workers"] for p in client.stats()["pools"]):
                    time.sleep(0.2)
                before = {
                    "queue": queue_depth(client),
                    "router_rss_mb": rss_mb(router),
                    "worker_rss_mb": rss_mb(worker),
                }
                results = []
                for concurrency in levels:
                    level = run_level(client, concurrency, args.seconds, args.steps, args.timeout)
                    level.router_rss_mb, level.worker_rss_mb = rss_mb(router), rss_mb(worker)
                    results.append(level)
                time.sleep(2.0)  # quiet: what is left queued or held should be gone
                after = snapshot(client, router, worker)
        finally:
            if router is not None:
                router.stop()
            worker.stop()

    first_refusal = next((lv.concurrency for lv in results if lv.refused), None)
    report = {
        "setup": {
            "worker": "tiny sd3 (CPU)",
            "max_batch_size": args.max_batch,
            "router_max_queue": args.max_queue,
            "steps": args.steps,
            "seconds_per_level": args.seconds,
            "call_deadline_s": args.timeout,
        },
        "levels": [asdict(lv) for lv in results],
        "rejections_start_at_concurrency": first_refusal,
        "before": before,
        "after": after,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    header = ("conc", "ok", "refused", "other", "img/s", "p50 s", "p99 s", "peakQ", "rtrMB", "wrkMB")
    print(" ".join(f"{h:>7}" for h in header))
    for lv in results:
        print(
            f"{lv.concurrency:>7} {lv.answered:>7} {lv.refused:>7} {sum(lv.other_errors.values()):>7} "
            f"{lv.throughput_per_s:>7.2f} {lv.p50_s:>7.2f} {lv.p99_s:>7.2f} {lv.peak_queue:>7} "
            f"{lv.router_rss_mb:>7.0f} {lv.worker_rss_mb:>7.0f}"
        )
    print(f"admission control starts refusing at concurrency {first_refusal}")
    print(f"before load: {before}")
    print(f"after load:  {after}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
