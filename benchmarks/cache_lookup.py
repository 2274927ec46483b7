"""Lookup latency of the cache's vector store against brute-force NumPy top-1.

For each size N it fills a fresh collection with N random unit vectors (dimension 768 by
default, CLIP ViT-L/14's), then runs Q queries (perturbed copies of stored vectors, so each has
a clear nearest neighbour) through the cache's own `MilvusVectorStore.search` (tenant filter,
COSINE, HNSW, Session consistency as the cache's lookups) and through `matrix @ q` + argmax over
the same vectors in the same process. It reports the insert and index-build times, p50/p99
latency of both, recall@1 of the index against brute force, and memory: the RSS of the Milvus
server's processes (or of this process, where Milvus Lite runs inside it) and the size of the
NumPy matrix. "Embedding included" adds the measured per-query time of the cache's default
embedder (MiniLM, batch 1) to each search.

Memory guard: a size is skipped (with a note in the output) when the machine's available
memory is below an estimate of what it needs (the matrix plus `--store-factor` times it for the
store), and a watchdog stops the run if available memory falls under `--min-free-gb`.

    python benchmarks/cache_lookup.py --sizes 10000,100000            # Milvus Lite
    python benchmarks/cache_lookup.py --sizes 10000 --server          # starts a Milvus standalone
    python benchmarks/cache_lookup.py --sizes 10000 --milvus-uri http://127.0.0.1:19530

Results go to stdout and bench-out/cache_lookup-<target>.json (rewritten after each size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

from modm.services.cache.milvus import MilvusVectorStore, _row
from modm.services.cache.milvus_standalone import start_milvus_standalone
from modm.services.cache.stores import VectorRecord


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            total += process.memory_info().rss
            total += sum(c.memory_info().rss for c in process.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def embed_seconds(queries: int) -> list[float]:
    from modm.services.cache.embedders import MiniLmEmbedder

    embedder = MiniLmEmbedder()
    embedder.embed_texts(["warm up"])
    samples = []
    for i in range(queries):
        started = time.perf_counter()
        embedder.embed_texts([f"a photo of subject number {i} in a city at night, detailed"])
        samples.append(time.perf_counter() - started)
    return samples


def watchdog(min_free_bytes: int, pids: list[int]) -> None:
    """Kill the server (and this run) before the machine runs out of memory."""
    while True:
        if psutil.virtual_memory().available < min_free_bytes:
            print(f"ABORT: available memory under {min_free_bytes / 2**30:.1f} GiB", flush=True)
            for pid in pids:
                try:
                    for child in psutil.Process(pid).children(recursive=True):
                        child.kill()
                    if pid != os.getpid():
                        psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass
            os._exit(3)
        time.sleep(1)


def wait_for_index(store: MilvusVectorStore, n: int, limit_s: float) -> bool:
    """Poll the index build on a server (Milvus Lite does not report progress); True when all rows are indexed."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        info = store.client.describe_index(store.collection, "vector")
        if "indexed_rows" not in info:
            return False
        if int(info["indexed_rows"]) >= n:  # pending_index_rows of 2.3.5 is not reliable
            return True
        time.sleep(2)
    return False


def run_size(
    uri: str,
    n: int,
    dim: int,
    queries: int,
    rng: np.random.Generator,
    embed: list[float],
    pids: list[int],
    index_params: dict[str, int],
    existing: str | None = None,
) -> dict[str, object]:
    data = rng.standard_normal((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    store = MilvusVectorStore(
        uri,
        dim,
        existing or f"bench_{n}_{uuid.uuid4().hex[:8]}",
        hnsw_m=index_params["m"],
        hnsw_ef_construction=index_params["ef_construction"],
        search_ef=index_params["ef"],
    )
    started = time.perf_counter()
    if existing is None:
        # Row i has created_at = i: that is how a hit is matched to its brute-force row.
        for start in range(0, n, 2000):
            rows = [
                _row(VectorRecord(uuid.uuid4().hex, "bench", "", "m", "k", 1, float(i), vector=data[i].tolist()))
                for i in range(start, min(n, start + 2000))
            ]
            store.client.insert(store.collection, rows)
        store.client.flush(store.collection)
    insert_s = time.perf_counter() - started
    print(f"  {n}: inserted and flushed in {insert_s:.1f} s", flush=True)
    started = time.perf_counter()
    indexed = wait_for_index(store, n, 4 * 3600)
    for _ in range(3):  # warm up: loads the indexed segments (and, on Milvus Lite, builds the index)
        store.search(data[0].tolist(), 1, "bench", None)
    build_s = time.perf_counter() - started
    print(f"  {n}: index ready in {build_s:.1f} s (progress reported: {indexed})", flush=True)

    targets = rng.integers(0, n, queries)
    noise = rng.standard_normal((queries, dim), dtype=np.float32) * 0.5 / np.sqrt(dim)
    qs = data[targets] + noise
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    index_s, brute_s, agree = [], [], 0
    for q in qs:
        t0 = time.perf_counter()
        hit = store.search(q.tolist(), 1, "bench", None)
        index_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        best = int(np.argmax(data @ q))
        brute_s.append(time.perf_counter() - t0)
        agree += bool(hit) and int(hit[0].record.created_at) == best
    with_embed = [s + embed[i % len(embed)] for i, s in enumerate(index_s)] if embed else []
    result: dict[str, object] = {
        "entries": n,
        "dim": dim,
        "index": store.index_type,
        "hnsw": index_params,
        "insert_seconds": round(insert_s, 2),
        "index_build_seconds": round(build_s, 2),
        "index_build_progress_reported": indexed,
        "index_p50_ms": round(percentile_ms(index_s, 50), 3),
        "index_p99_ms": round(percentile_ms(index_s, 99), 3),
        "brute_p50_ms": round(percentile_ms(brute_s, 50), 3),
        "brute_p99_ms": round(percentile_ms(brute_s, 99), 3),
        "recall_at_1": agree / queries,
        "store_rss_mb": round(rss_mb(pids), 1),
        "vectors_mb": round(data.nbytes / 2**20, 1),
        "bench_process_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "machine_available_mb": round(psutil.virtual_memory().available / 2**20, 1),
    }
    if with_embed:
        result["with_embedding_p50_ms"] = round(percentile_ms(with_embed, 50), 3)
        result["with_embedding_p99_ms"] = round(percentile_ms(with_embed, 99), 3)
    result["p50_ratio_index_over_brute"] = round(
        float(result["index_p50_ms"]) / max(float(result["brute_p50_ms"]), 1e-9),
        2,  # type: ignore[arg-type]
    )
    if existing is None:
        store.drop()
    store.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000", help="comma-separated entry counts")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--server", action="store_true", help="start a milvus-server for the run")
    parser.add_argument("--milvus-uri", help="an already running Milvus server")
    parser.add_argument("--server-pid", type=int, help="with --milvus-uri: the server process, for its RSS")
    parser.add_argument(
        "--collection",
        help="with --milvus-uri and one size: measure this collection, filled by an earlier run with the same "
        "--seed (its insert was timed there); it is kept",
    )
    parser.add_argument("--no-embedding", action="store_true", help="skip the MiniLM timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef", type=int, default=64, help="HNSW search ef (the cache's default)")
    parser.add_argument("--store-factor", type=float, default=4.0, help="store memory per byte of raw vectors")
    parser.add_argument("--min-free-gb", type=float, default=1.5)
    args = parser.parse_args()
    index_params = {"m": args.hnsw_m, "ef_construction": args.ef_construction, "ef": args.ef}

    rng = np.random.default_rng(args.seed)
    embed = [] if args.no_embedding else embed_seconds(args.queries)
    workdir = Path(tempfile.mkdtemp(prefix="modm-bench-"))
    server = None
    if args.server:
        server = start_milvus_standalone(workdir / "milvus", workdir / "milvus.log")
        server.wait_ready()
        uri, target, pids = server.uri, "server", [server.proc.pid]
    elif args.milvus_uri:
        uri, target, pids = args.milvus_uri, "server", [args.server_pid] if args.server_pid else []
    else:
        uri, target, pids = str(workdir / "lite.db"), "lite", [psutil.Process().pid]
    threading.Thread(target=watchdog, args=(int(args.min_free_gb * 2**30), pids), daemon=True).start()
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    results: list[dict[str, object]] = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            vectors = n * args.dim * 4
            need = vectors * (1 + args.store_factor) + args.min_free_gb * 2**30
            available = psutil.virtual_memory().available
            if available < need:
                result = {
                    "entries": n,
                    "target": target,
                    "skipped": f"needs ~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available",
                }
            else:
                result = run_size(uri, n, args.dim, args.queries, rng, embed, pids, index_params, args.collection)
                result["target"] = target
            print(json.dumps(result), flush=True)
            results.append(result)
            (out / f"cache_lookup-{target}.json").write_text(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if embed:
        print(
            f"MiniLM embedding, batch 1: p50 {percentile_ms(embed, 50):.2f} ms, p99 {percentile_ms(embed, 99):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
