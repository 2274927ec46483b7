"""What benchmarks/cache_lookup.py computes, apart from talking to Milvus: the machine's load
while it ran, paraphrase-like queries of real prompts, the vectors that fill a collection of
real embeddings up to a million, and each search setting's summary against brute force.

Kept here, away from the servers, so that the arithmetic behind the reported numbers is tested.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

AUTO = "auto"
Setting = int | str  # an HNSW search ef, or AUTO (the cache's rule)


def read_load1() -> float:
    """The 1-minute load average (Linux)."""
    with open("/proc/loadavg") as file:
        return float(file.read().split()[0])


def loaded_threshold() -> float:
    """A 1-minute load above 1.5 runnable tasks per core marks a run as taken on a loaded
    machine (3 on the 2-core benchmark machine): its latencies are inflated by contention."""
    return 1.5 * (os.cpu_count() or 1)


@dataclass
class LoadRecorder:
    """Samples the 1-minute load average every `period_s` while a run goes on, so each phase of
    it (insert, index build, searches) reports how busy the machine was meanwhile."""

    period_s: float = 5.0
    threshold: float = field(default_factory=loaded_threshold)
    read: Callable[[], float] = read_load1
    clock: Callable[[], float] = time.monotonic
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        self.samples.append((self.clock(), self.read()))

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.period_s)

        threading.Thread(target=loop, name="loadavg", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def mark(self) -> float:
        """The start of a phase (sampled, so that even a short phase has a reading)."""
        self.sample()
        return self.samples[-1][0]

    def summary(self, since: float) -> dict[str, object]:
        """The load from `since` until now, and whether the machine counted as loaded."""
        self.sample()
        loads = [load for at, load in self.samples if at >= since]
        return {
            "load1_min": min(loads),
            "load1_mean": round(sum(loads) / len(loads), 2),
            "load1_max": max(loads),
            "load1_samples": len(loads),
            "loaded": max(loads) > self.threshold,
        }


def parse_settings(text: str) -> list[Setting]:
    """`64,128,auto` -> [64, 128, "auto"]."""
    settings: list[Setting] = []
    for part in (p.strip() for p in text.split(",")):
        if part == AUTO:
            settings.append(AUTO)
        elif part.isdigit() and int(part) > 0:
            settings.append(int(part))
        else:
            raise ValueError(f"a search setting is a positive ef or {AUTO!r}, not {part!r}")
    return settings


def drop_words(prompt: str, rng: np.random.Generator, fraction: float = 0.15) -> str:
    """The prompt with about `fraction` of its words (at least one) left out, in order: a query
    that says nearly the same thing in other words, as a user's retry or a near-duplicate does."""
    words = prompt.split()
    drop = max(1, round(len(words) * fraction))
    if drop >= len(words):
        raise ValueError(f"too few words to drop {drop}: {prompt!r}")
    kept = np.sort(rng.choice(len(words), len(words) - drop, replace=False))
    return " ".join(words[i] for i in kept)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, in place."""
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def random_unit(rng: np.random.Generator, n: int, dim: int, chunk: int = 65_536) -> np.ndarray:
    """n uniformly random unit vectors, normalised chunk by chunk (no second full-size copy)."""
    out = rng.standard_normal((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        unit_rows(out[start : start + chunk])
    return out


def fill_from(
    real: np.ndarray, count: int, rng: np.random.Generator, step: float = 0.5, chunk: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """`count` synthetic embeddings made from real ones, and the real row each started from.

    Each is a real vector moved by `step` times the difference of two other real vectors, then
    normalised. The differences of real embeddings have their covariance, so the synthetic ones
    stay in the narrow cone real text embeddings occupy (random vectors would sit apart from
    them and make the real ones easy to find), at about a paraphrase's distance from their
    source (cosine ~0.85 for MiniLM prompts)."""
    sources = rng.integers(0, len(real), count)
    out = np.empty((count, real.shape[1]), dtype=np.float32)
    for start in range(0, count, chunk):
        part = slice(start, min(count, start + chunk))
        size = part.stop - part.start
        b, c = rng.integers(0, len(real), size), rng.integers(0, len(real), size)
        out[part] = real[sources[part]] + step * (real[b] - real[c])
        unit_rows(out[part])
    return out, sources


def rotation(rounds: int, settings: Sequence[Setting]) -> list[Setting]:
    """The setting each query goes to: one query per setting in each round, every setting
    moving one place on from round to round, so each meets the same share of every moment's
    load and of every position after another setting.

    Each query vector is searched once, by one setting: Milvus 2.3's HNSW keeps the node where a
    vector's last search ended and starts a repeat of that vector there, so a vector searched
    again (at any ef) finds what an earlier search found."""
    return [settings[(r + j) % len(settings)] for r in range(rounds) for j in range(len(settings))]


def top1(data: np.ndarray, queries: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Each query's exact nearest row by dot product (cosine for unit rows), a chunk of queries
    at a time to bound the score matrix."""
    return np.concatenate([np.argmax(queries[i : i + chunk] @ data.T, axis=1) for i in range(0, len(queries), chunk)])


def wilson_low(hits: int, total: int, z: float = 1.96) -> float:
    """The lower end of the 95% Wilson interval of a proportion: what a recall measured on
    `total` queries rules out (0.99 measured on 500 queries only rules out below ~0.977)."""
    if total == 0:
        return 0.0
    p = hits / total
    centre = p + z * z / (2 * total)
    spread = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return float((centre - spread) / (1 + z * z / total))


def percentile_ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 3)


def summarise(
    setting: Setting,
    ef: int,
    seconds: Sequence[float],
    found: Sequence[int | None],
    truth: Sequence[int],
    brute_p50_ms: float,
) -> dict[str, object]:
    """One search setting over the queries: latency, recall@1 against brute force's top-1 for the
    same queries (`found` holds each search's top row, None for an empty answer), and its p50
    over brute force's p50 from the same run."""
    if not (len(seconds) == len(found) == len(truth)):
        raise ValueError("one latency, one answer and one truth per query")
    p50 = percentile_ms(seconds, 50)
    hits = sum(f == t for f, t in zip(found, truth, strict=True))
    return {
        "setting": setting,
        "ef": ef,
        "queries": len(truth),
        "p50_ms": p50,
        "p99_ms": percentile_ms(seconds, 99),
        "recall_at_1": round(hits / len(truth), 4),
        "recall_at_1_low95": round(wilson_low(hits, len(truth)), 4),
        "p50_over_brute": round(p50 / max(brute_p50_ms, 1e-9), 4),
    }
