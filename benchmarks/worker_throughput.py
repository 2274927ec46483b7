"""Images/s of a tiny large and a tiny small pipeline, in-process versus through gRPC.

Both paths run in the same invocation on the same machine, alternating for several rounds, and
each is reported as its median round, so the ratio between them is the number to quote (this
machine is noisy; absolute numbers are only indicative). Writes
bench-out/worker_throughput.{json,md}.

    .venv/bin/python benchmarks/worker_throughput.py [--images 16] [--max-batch 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modm.images import ImageFormat  # noqa: E402
from modm.services.worker.jobs import GenerationJob, JobKind  # noqa: E402
from modm.services.worker.pipeline import DiffusionRunner  # noqa: E402
from modm.services.worker.runner import never_stop  # noqa: E402
from modm.services.worker.tiny import build_tiny  # noqa: E402
from modm.v1 import common_pb2, worker_pb2, worker_pb2_grpc  # noqa: E402
from tests.procs import start_worker  # noqa: E402

FAMILIES = {"large": "sd3", "small": "sdxl"}


def in_process(runner: DiffusionRunner, images: int, batch: int, steps: int) -> float:
    facts = runner.facts
    jobs = [
        GenerationJob(
            JobKind.TEXT_TO_IMAGE,
            f"a photo number {i}",
            None,
            facts.default_width,
            facts.default_height,
            steps,
            facts.family.default_guidance,
            i,
            ImageFormat.PNG,
            steps,
        )
        for i in range(images)
    ]
    runner.generate(jobs[:batch], lambda s, t: None, never_stop)  # warm
    started = time.perf_counter()
    for i in range(0, images, batch):
        runner.generate(jobs[i : i + batch], lambda s, t: None, never_stop)
    return images / (time.perf_counter() - started)


async def through_grpc(address: str, images: int, concurrency: int, steps: int) -> float:
    """Images/s with `concurrency` requests in flight, so the worker's batcher can fill."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = worker_pb2_grpc.WorkerStub(channel)

        async def one(i: int) -> None:
            params = common_pb2.GenerationParams(prompt=f"a photo number {i}", steps=steps, seed=i)
            await stub.TextToImage(worker_pb2.TextToImageRequest(params=params), timeout=600)

        await one(images)  # warm
        started = time.perf_counter()
        for i in range(0, images, concurrency):
            await asyncio.gather(*(one(j) for j in range(i, min(i + concurrency, images))))
        return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path; medians reported")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for role, family in FAMILIES.items():
            model = build_tiny(family, Path(tmp) / family)
            runner = DiffusionRunner.load(str(model), device="cpu", dtype="fp32")
            worker = start_worker(
                model,
                Path(tmp),
                role=role,
                max_batch_size=args.max_batch,
                batch_window_ms=20,
                log_format="text",
            )
            try:
                worker.wait_serving()
                for batch in sorted({1, args.max_batch}):
                    directs, remotes = [], []
                    for _ in range(args.rounds):
                        directs.append(in_process(runner, args.images, batch, args.steps))
                        remotes.append(asyncio.run(through_grpc(worker.address, args.images, batch, args.steps)))
                    direct, remote = statistics.median(directs), statistics.median(remotes)
                    rows.append(
                        {
                            "role": role,
                            "family": family,
                            "batch": batch,
                            "steps": args.steps,
                            "in_process_images_per_s": round(direct, 3),
                            "grpc_images_per_s": round(remote, 3),
                            "grpc_over_in_process": round(remote / direct, 3),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                worker.stop()
            del runner
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worker_throughput.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| role | family | batch | in-process img/s | gRPC img/s | gRPC / in-process |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['role']} | {r['family']} | {r['batch']} | {r['in_process_images_per_s']} | "
        f"{r['grpc_images_per_s']} | {r['grpc_over_in_process']} |"
        for r in rows
    ]
    (args.out / "worker_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
