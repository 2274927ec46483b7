"""Lookup latency of the cache's vector store against brute-force NumPy top-1.

For each size N it fills a fresh collection with N random unit vectors (dimension 768 by
default, CLIP ViT-L/14's), then runs Q queries (perturbed copies of stored vectors, so each has
a clear nearest neighbour) through the cache's own `MilvusVectorStore.search` (tenant filter,
COSINE, HNSW, Strong consistency) and through `matrix @ q` + argmax over the same vectors in
the same process. It reports p50/p99 latency of both, recall@1 of the index against brute
force, and memory: the RSS of this process (Milvus Lite runs inside it) or of the Milvus
server's processes. "Embedding included" adds the measured per-query time of the cache's
default embedder (MiniLM, batch 1) to each search.

    python benchmarks/cache_lookup.py --sizes 10000,100000            # Milvus Lite
    python benchmarks/cache_lookup.py --sizes 10000 --server          # starts milvus-server
    python benchmarks/cache_lookup.py --sizes 10000 --milvus-uri http://127.0.0.1:19530

Results go to stdout and bench-out/cache_lookup-<target>.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

from modm.services.cache.milvus import MilvusVectorStore, _row
from modm.services.cache.stores import VectorRecord


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [str(Path(sys.executable).parent / "milvus-server"), "--data", str(folder), "--proxy-port", str(port)]
    for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode"):
        args += ["--extra-config", f"{component}.ip=127.0.0.1"]
    proc = subprocess.Popen(args, stdout=(folder.parent / "milvus.log").open("ab"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    from pymilvus import MilvusClient

    for _ in range(240):
        try:
            MilvusClient(uri=uri, timeout=3).list_collections()
            return proc, uri
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("milvus-server did not start")


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


def run_size(
    uri: str, n: int, dim: int, queries: int, rng: np.random.Generator, embed: list[float], pids: list[int]
) -> dict[str, object]:
    data = rng.standard_normal((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    store = MilvusVectorStore(uri, dim, f"bench_{n}_{uuid.uuid4().hex[:8]}")
    ids = [uuid.uuid4().hex for _ in range(n)]
    started = time.perf_counter()
    for start in range(0, n, 2000):
        rows = [
            _row(VectorRecord(ids[i], "bench", "", "m", f"k/{ids[i]}", 1, float(i), vector=data[i].tolist()))
            for i in range(start, min(n, start + 2000))
        ]
        store.client.insert(store.collection, rows)
    store.client.flush(store.collection)
    insert_s = time.perf_counter() - started
    store.search(data[0].tolist(), 1, "bench", None)  # warm up (loads segments, builds indexes)

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
        agree += bool(hit) and hit[0].record.entry_id == ids[best]
    with_embed = [s + embed[i % len(embed)] for i, s in enumerate(index_s)] if embed else []
    result: dict[str, object] = {
        "entries": n,
        "dim": dim,
        "index": store.index_type,
        "insert_seconds": round(insert_s, 2),
        "index_p50_ms": round(percentile_ms(index_s, 50), 3),
        "index_p99_ms": round(percentile_ms(index_s, 99), 3),
        "brute_p50_ms": round(percentile_ms(brute_s, 50), 3),
        "brute_p99_ms": round(percentile_ms(brute_s, 99), 3),
        "recall_at_1": agree / queries,
        "rss_mb": round(rss_mb(pids), 1),
        "vectors_mb": round(data.nbytes / 2**20, 1),
    }
    if with_embed:
        result["with_embedding_p50_ms"] = round(percentile_ms(with_embed, 50), 3)
        result["with_embedding_p99_ms"] = round(percentile_ms(with_embed, 99), 3)
    result["p50_ratio_index_over_brute"] = round(
        float(result["index_p50_ms"]) / max(float(result["brute_p50_ms"]), 1e-9),
        2,  # type: ignore[arg-type]
    )
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
    parser.add_argument("--no-embedding", action="store_true", help="skip the MiniLM timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    embed = [] if args.no_embedding else embed_seconds(args.queries)
    workdir = Path(tempfile.mkdtemp(prefix="modm-bench-"))
    proc = None
    if args.server:
        proc, uri = start_server(workdir / "milvus")
        target, pids = "server", [proc.pid]
    elif args.milvus_uri:
        uri, target, pids = args.milvus_uri, "server", []
    else:
        uri, target, pids = str(workdir / "lite.db"), "lite", [psutil.Process().pid]
    results = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            result = run_size(uri, n, args.dim, args.queries, rng, embed, pids)
            result["target"] = target
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        if proc is not None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"cache_lookup-{target}.json").write_text(json.dumps(results, indent=2))
    if embed:
        print(
            f"MiniLM embedding, batch 1: p50 {percentile_ms(embed, 50):.2f} ms, p99 {percentile_ms(embed, 99):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
