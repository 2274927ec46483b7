"""Lookup latency and recall of the cache's vector store against brute-force NumPy top-1.

For each dataset and size N it fills a collection with N unit vectors ONCE, then sweeps the
search settings over it (`--efs`: HNSW search ef values and `auto`, the cache's own rule):

- `random`: uniformly random unit vectors (dimension `--dim`, 768 = CLIP ViT-L/14's), queried
  with stored vectors plus noise (cosine ~0.89 to their row): HNSW's hardest case.
- `real`: the DiffusionDB prompts of the data folder (`--data DIR`: the 5k first prompts and
  every 100th row, ~25k distinct) embedded with the cache's default MiniLM (384-d), queried with
  prompts of the collection with ~15% of their words dropped. Above ~25k entries the collection
  is filled with synthetic embeddings made from the real ones (`modm.bench.lookup.fill_from`),
  the real ones spread among them.

Each query runs through brute force (`matrix @ q` + argmax, in this process) and through the
cache's own `MilvusVectorStore.search` (tenant filter, COSINE, Session consistency) once per
setting, in an order rotated from query to query, so every setting and brute force share the
same queries and the same machine load. Per setting: p50/p99, recall@1 against brute force's
top-1, and p50 over brute force's p50. The 1-minute load average is sampled every 5 s; each
phase reports it and is flagged `loaded` above 1.5 per core.

`--reuse DIR` keeps the server's data (and the real prompts' embeddings) in DIR: a later run with
the same dataset, size, M, efConstruction and seed finds its collection complete and skips the
insert and the index build. Without it the server and its data live in a temporary folder.

Memory guard: a size is skipped (with a note in the output) when the machine's available
memory is below an estimate of what it needs (the matrix plus `--store-factor` times it for the
store), and a watchdog stops the run if available memory falls under `--min-free-gb`.

    python benchmarks/cache_lookup.py --sizes 10000,100000                      # Milvus Lite
    python benchmarks/cache_lookup.py --sizes 100000 --server --efs 64,128,auto
    python benchmarks/cache_lookup.py --datasets real --data DIR --sizes 25000 --server
    python benchmarks/cache_lookup.py --sizes 1000000 --reuse /var/tmp/lookup   # server, kept

Results go to stdout and bench-out/cache_lookup-<target>.json (rewritten after each size).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from modm.bench.lookup import (
    AUTO,
    LoadRecorder,
    Setting,
    drop_words,
    fill_from,
    parse_settings,
    percentile_ms,
    random_unit,
    rotation,
    summarise,
    top1,
    unit_rows,
)
from modm.bench.prompt_data import load_prompts
from modm.services.cache.embedders import MiniLmEmbedder
from modm.services.cache.milvus import MilvusVectorStore, _row, is_server_uri
from modm.services.cache.milvus_standalone import start_milvus_standalone
from modm.services.cache.stores import VectorRecord

TENANT = "bench"
QUERY_WORDS = 4  # real prompts shorter than this are not made into queries


@dataclass
class Dataset:
    tag: str  # names the collection
    vectors: np.ndarray  # row i is stored with created_at = i: how a hit is matched to its row
    queries: np.ndarray
    truth: np.ndarray  # each query's exact nearest row
    info: dict[str, object]


@functools.cache
def minilm() -> MiniLmEmbedder:
    return MiniLmEmbedder()


def embed(texts: Sequence[str], batch: int = 256) -> np.ndarray:
    return np.concatenate([minilm().embed_texts(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def embed_seconds(queries: int) -> list[float]:
    """MiniLM per prompt at batch 1, as the cache embeds a lone lookup."""
    minilm().embed_texts(["warm up"])
    samples = []
    for i in range(queries):
        started = time.perf_counter()
        minilm().embed_texts([f"a photo of subject number {i} in a city at night, detailed"])
        samples.append(time.perf_counter() - started)
    return samples


def random_dataset(n: int, dim: int, queries: int, seed: int) -> Dataset:
    rng = np.random.default_rng([seed, n, dim])  # the same vectors for a size on every run
    data = random_unit(rng, n, dim)
    targets = rng.integers(0, n, queries)
    noise = rng.standard_normal((queries, dim), dtype=np.float32) * 0.5 / np.sqrt(dim)
    qs = unit_rows(data[targets] + noise)
    return Dataset(f"random{dim}", data, qs, top1(data, qs), {"queries": "stored vectors + noise"})


def real_prompts(data_dir: Path, keep: Path | None) -> tuple[list[str], np.ndarray]:
    """The distinct DiffusionDB prompts and their MiniLM embeddings (kept in `keep` if given)."""
    prompts = list(
        dict.fromkeys(load_prompts(data_dir, "diffusiondb-5k")[0] + load_prompts(data_dir, "diffusiondb-20k")[0])
    )
    digest = hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]
    cached = keep / f"minilm-prompts-{digest}.npy" if keep else None
    if cached and cached.exists():
        return prompts, np.load(cached)
    started = time.perf_counter()
    vectors = embed(prompts)
    print(f"  embedded {len(prompts)} prompts in {time.perf_counter() - started:.0f} s", flush=True)
    if cached:
        np.save(cached, vectors)
    return prompts, vectors


def real_dataset(prompts: list[str], embedded: np.ndarray, n: int, queries: int, seed: int) -> Dataset:
    rng = np.random.default_rng([seed, n, 1])
    m = len(prompts)
    if n <= m:
        chosen = np.sort(rng.choice(m, n, replace=False))
        data, rows_of_real = embedded[chosen].copy(), np.arange(n)
        info: dict[str, object] = {"real": n, "synthetic": 0}
    else:
        chosen, rows_of_real = np.arange(m), np.sort(rng.choice(n, m, replace=False))
        synthetic, sources = fill_from(embedded, n - m, rng)
        to_source = np.einsum("ij,ij->i", synthetic[:10_000], embedded[sources[:10_000]])
        data = np.empty((n, embedded.shape[1]), dtype=np.float32)
        data[rows_of_real] = embedded
        data[np.setdiff1d(np.arange(n), rows_of_real)] = synthetic
        del synthetic
        info = {"real": m, "synthetic": n - m, "synthetic_cosine_to_source_mean": round(float(to_source.mean()), 3)}
    eligible = [i for i, p in enumerate(chosen) if len(prompts[p].split()) >= QUERY_WORDS]
    picks = rng.choice(eligible, queries, replace=False)
    texts = [drop_words(prompts[chosen[i]], rng) for i in picks]
    qs = embed(texts)
    sources = rows_of_real[picks]
    info["queries"] = "real prompts with ~15% of their words dropped"
    info["query_cosine_to_source_mean"] = round(float(np.einsum("ij,ij->i", qs, data[sources]).mean()), 3)
    truth = top1(data, qs)
    info["brute_top1_is_source"] = round(float(np.mean(truth == sources)), 3)
    return Dataset("diffusiondb_minilm", data, qs, truth, info)


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


def index_progress(store: MilvusVectorStore) -> tuple[int, int]:
    """Rows indexed and rows waiting for an index (Milvus Lite reports neither: 0, 0)."""
    info = store.client.describe_index(store.collection, "vector")
    return int(info.get("indexed_rows", 0)), int(info.get("pending_index_rows", 0))


def fill(store: MilvusVectorStore, data: np.ndarray) -> None:
    for start in range(0, len(data), 2000):
        batch = data[start : start + 2000].tolist()
        rows = [
            _row(VectorRecord(uuid.uuid4().hex, TENANT, "", "m", "k", 1, float(start + i), vector=v))
            for i, v in enumerate(batch)
        ]
        store.client.insert(store.collection, rows)
    store.client.flush(store.collection)


def compact(store: MilvusVectorStore, poll_s: float = 2.0) -> None:
    job = store.client.compact(store.collection)
    while store.client.get_compaction_state(job) != "Completed":
        time.sleep(poll_s)


def index_and_load(store: MilvusVectorStore, index_params: dict[str, int], n: int, poll_s: float = 2.0) -> None:
    """Build the cache's index (HNSW, COSINE, the same name) on the compacted segments, wait for
    every row, and load; loaded again should the segments have changed meanwhile."""
    params = store.client.prepare_index_params()
    hnsw = {"M": index_params["m"], "efConstruction": index_params["ef_construction"]}
    params.add_index(field_name="vector", index_name="vector", index_type="HNSW", metric_type="COSINE", params=hnsw)
    store.client.create_index(store.collection, params, sync=False)
    while True:
        indexed, pending = index_progress(store)
        if indexed >= n and pending == 0:
            store.client.load_collection(store.collection)
            loaded = {s.segment_id for s in store.client.list_loaded_segments(store.collection)}
            if loaded == {s.segment_id for s in store.client.list_persistent_segments(store.collection)}:
                return
            store.client.release_collection(store.collection)
        time.sleep(poll_s)


def build(store: MilvusVectorStore, data: np.ndarray, index_params: dict[str, int], recorder: LoadRecorder) -> dict:
    """Fill the collection and index it as it will be searched: what the build took, and the load.

    On a server the index is dropped for the insert and built after a compaction. Milvus seals a
    segment every ~120 MB while rows arrive and later merges those into segments of up to 512 MB,
    indexing the merged ones afresh while it serves the old ones (or a temporary IVF index):
    an index built during the insert is built twice, and searches after it measure a state that
    changes under them. Milvus Lite indexes as it inserts.
    """
    server = is_server_uri(store.uri)
    report: dict[str, object] = {}
    mark, started = recorder.mark(), time.perf_counter()
    if server:
        store.client.release_collection(store.collection)
        store.client.drop_index(store.collection, "vector")
    fill(store, data)
    if server:
        compact(store)
    report["insert_seconds"] = round(time.perf_counter() - started, 1)
    report["load_insert"] = recorder.summary(mark)
    print(f"  {len(data)}: inserted, flushed and compacted in {report['insert_seconds']} s", flush=True)
    mark, started = recorder.mark(), time.perf_counter()
    if server:
        index_and_load(store, index_params, len(data))
    report["index_build_seconds"] = round(time.perf_counter() - started, 1)
    report["load_build"] = recorder.summary(mark)
    print(f"  {len(data)}: index built and loaded in {report['index_build_seconds']} s", flush=True)
    return report


def complete(store: MilvusVectorStore, n: int) -> bool:
    """A kept collection holds every row of its size, all indexed (a build cut short is redone)."""
    indexed, pending = index_progress(store)
    return store.count() == n and indexed >= n and pending == 0


def segments(store: MilvusVectorStore) -> list[int]:
    """Rows of each loaded segment: Milvus builds one HNSW graph per segment and searches each."""
    if not is_server_uri(store.uri):  # Milvus Lite does not list segments
        return []
    return sorted((int(s.num_rows) for s in store.client.list_loaded_segments(store.collection)), reverse=True)


def sweep(
    store: MilvusVectorStore, ds: Dataset, settings: Sequence[Setting]
) -> tuple[list[float], dict[Setting, tuple[list[float], list[int | None], list[int]]]]:
    """Each query through one setting (`rotation`), and one brute-force query timed per round."""
    brute_s: list[float] = []
    runs: dict[Setting, tuple[list[float], list[int | None], list[int]]] = {s: ([], [], []) for s in settings}
    for i, setting in enumerate(rotation(len(ds.queries) // len(settings), settings)):
        q = ds.queries[i]
        if i % len(settings) == 0:
            started = time.perf_counter()
            int(np.argmax(ds.vectors @ q))
            brute_s.append(time.perf_counter() - started)
        store.search_ef = setting  # type: ignore[assignment]
        started = time.perf_counter()
        hits = store.search(q.tolist(), 1, TENANT, None)
        seconds, found, expected = runs[setting]
        seconds.append(time.perf_counter() - started)
        found.append(int(hits[0].record.created_at) if hits else None)
        expected.append(int(ds.truth[i]))
    return brute_s, runs


def run_size(
    uri: str,
    ds: Dataset,
    settings: Sequence[Setting],
    index_params: dict[str, int],
    pids: list[int],
    recorder: LoadRecorder,
    *,
    keep: bool,
    seed: int,
) -> dict[str, object]:
    n, dim = ds.vectors.shape
    name = f"bench_{ds.tag}_{n}_m{index_params['m']}_efc{index_params['ef_construction']}_s{seed}"
    open_store = functools.partial(
        MilvusVectorStore,
        uri,
        dim,
        name if keep else f"{name}_{uuid.uuid4().hex[:8]}",
        hnsw_m=index_params["m"],
        hnsw_ef_construction=index_params["ef_construction"],
    )
    store = open_store()
    result: dict[str, object] = {"dataset": ds.tag, "entries": n, "dim": dim, "index": store.index_type}
    result["hnsw"] = index_params
    reused = keep and complete(store, n)
    if not reused:
        if store.count():  # a kept build that was cut short
            store.drop()
            store = open_store()
        result.update(build(store, ds.vectors, index_params, recorder))
    result["reused"] = reused
    store.entries = store.count()
    warm_up = random_unit(np.random.default_rng(seed), 3, dim)  # vectors of no query set (see `rotation`)
    for v in warm_up:  # loads the indexed segments (and, on Milvus Lite, builds the index)
        store.search(v.tolist(), 1, TENANT, None)
    result["segments_rows"] = segments(store)

    mark = recorder.mark()
    brute_s, runs = sweep(store, ds, settings)
    brute_p50 = percentile_ms(brute_s, 50)
    result["brute_p50_ms"], result["brute_p99_ms"] = brute_p50, percentile_ms(brute_s, 99)
    rows = []
    for setting, (seconds, found, truth) in runs.items():
        store.search_ef = setting  # type: ignore[assignment]
        rows.append(summarise(setting, store.ef(1), seconds, found, truth, brute_p50))
    result["settings"] = rows
    result["load_search"] = recorder.summary(mark)
    result["data"] = ds.info
    result["store_rss_mb"] = round(rss_mb(pids), 1)
    result["vectors_mb"] = round(ds.vectors.nbytes / 2**20, 1)
    result["machine_available_mb"] = round(psutil.virtual_memory().available / 2**20, 1)
    if not keep:
        store.drop()
    store.close()
    return result


def print_table(result: dict[str, Any]) -> None:
    load = result["load_search"]
    print(
        f"  {result['dataset']} {result['entries']}: brute p50 {result['brute_p50_ms']} ms; "
        f"load during searches {load['load1_min']}-{load['load1_max']}{' LOADED' if load['loaded'] else ''}"
    )
    for row in result["settings"]:
        print(
            f"    {row['setting']!s:>5} (ef {row['ef']:>4}): p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  "
            f"recall@1 {row['recall_at_1']:.3f}  p50/brute {row['p50_over_brute']:.3f}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000", help="comma-separated entry counts")
    parser.add_argument("--datasets", default="random", help="comma-separated: random, real")
    parser.add_argument("--data", type=Path, help="the prompt data folder (for the real dataset)")
    parser.add_argument("--dim", type=int, default=768, help="dimension of the random dataset")
    parser.add_argument("--queries", type=int, default=200, help="queries per search setting")
    parser.add_argument("--efs", default=f"64,{AUTO}", help="search settings swept: HNSW ef values and/or auto")
    parser.add_argument("--server", action="store_true", help="start a Milvus standalone for the run")
    parser.add_argument("--reuse", type=Path, help="keep the server's data and collections in DIR (implies --server)")
    parser.add_argument("--milvus-uri", help="an already running Milvus server")
    parser.add_argument("--server-pid", type=int, help="with --milvus-uri: the server process, for its RSS")
    parser.add_argument("--no-embedding", action="store_true", help="skip the MiniLM batch-1 timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--store-factor", type=float, default=4.0, help="store memory per byte of raw vectors")
    parser.add_argument("--min-free-gb", type=float, default=1.5)
    args = parser.parse_args()
    datasets = [d.strip() for d in args.datasets.split(",")]
    if unknown := set(datasets) - {"random", "real"}:
        parser.error(f"unknown datasets {sorted(unknown)}")
    if "real" in datasets and args.data is None:
        parser.error("the real dataset needs --data DIR (the folder holding diffusiondb_2m_*/)")
    settings = parse_settings(args.efs)
    total_queries = args.queries * len(settings)
    index_params = {"m": args.hnsw_m, "ef_construction": args.ef_construction}

    recorder = LoadRecorder()
    recorder.start()
    run_mark = recorder.mark()
    run: dict[str, object] = {"argv": sys.argv[1:], "cpus": os.cpu_count(), "loaded_above": recorder.threshold}
    if not args.no_embedding:
        embed_s = embed_seconds(args.queries)
        run["minilm_batch1_p50_ms"], run["minilm_batch1_p99_ms"] = (
            percentile_ms(embed_s, 50),
            percentile_ms(embed_s, 99),
        )
    workdir = args.reuse or Path(tempfile.mkdtemp(prefix="modm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    if args.server or (args.reuse and not args.milvus_uri):
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
    real = real_prompts(args.data, args.reuse) if "real" in datasets else None
    try:
        for name in datasets:
            for n in (int(s) for s in args.sizes.split(",")):
                dim = args.dim if real is None or name == "random" else real[1].shape[1]
                need = n * dim * 4 * (1 + args.store_factor) + args.min_free_gb * 2**30
                available = psutil.virtual_memory().available
                if available < need:
                    result: dict[str, object] = {
                        "dataset": name,
                        "entries": n,
                        "skipped": f"needs ~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available",
                    }
                else:
                    ds = (
                        random_dataset(n, args.dim, total_queries, args.seed)
                        if real is None or name == "random"
                        else real_dataset(*real, n, total_queries, args.seed)
                    )
                    result = run_size(
                        uri, ds, settings, index_params, pids, recorder, keep=args.reuse is not None, seed=args.seed
                    )
                    print_table(result)
                result["target"] = target
                print(json.dumps(result), flush=True)
                results.append(result)
                run["load_run"] = recorder.summary(run_mark)
                (out / f"cache_lookup-{target}.json").write_text(json.dumps({"run": run, "results": results}, indent=2))
    finally:
        recorder.stop()
        if server is not None:
            server.stop()
        if args.reuse is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
