"""Replayable traces from real prompts (see modm.bench.prompt_data for the files):

- `prompt_trace`: a source's prompts in file order, timed by one of modm.bench.schedule's
  re-timings (poisson, ramp, burst) at a target rate;
- `session_trace`: the Alibaba trace's arrivals (a window, compressed to a target rate and
  duration; see modm.bench.sessions) carrying prompts: each session takes the next run of
  consecutive prompts of the file, so a DiffusionDB user's refinements stay in one session.
  Steps go into `params`; images per request, user and session into extra keys, which the
  replay ignores (modm returns one image per request).

Each request's `kind` says what it offers a cache (modm.bench.reuse). Both are pure functions of
their inputs and seed, and the header records the knobs and the input files' digests, so a
committed trace can be rebuilt and checked byte for byte.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from itertools import accumulate
from pathlib import Path
from typing import Any

from modm.bench.prompt_data import ALIBABA_FILE, describe, load_prompts, source_file
from modm.bench.reuse import NEAR_JACCARD, reuse_kinds
from modm.bench.schedule import Timing, arrival_times, rate_of
from modm.bench.sessions import Window, load_shape, read_arrivals, select, session_stats
from modm.bench.traces import TraceRequest, trace_shares

Meta = dict[str, Any]


def prompt_trace(
    data: Path, source: str, timing: Timing, *, limit: int | None = None
) -> tuple[list[TraceRequest], Meta]:
    """The first `limit` prompts of a source (all by default), in order, at `timing`'s arrivals."""
    if timing.shape == "recorded":
        raise ValueError("prompt files carry no times: choose poisson, ramp or burst")
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    prompts, file = load_prompts(data, source)
    prompts = prompts[:limit]
    times = arrival_times(len(prompts), rate_of(timing, len(prompts)), seed=timing.seed)
    kinds = reuse_kinds(prompts)
    requests = [TraceRequest(t, p, extra={"kind": k}) for t, p, k in zip(times, prompts, kinds, strict=True)]
    meta = {"builder": "prompts", "prompts": {"source": source, "limit": limit} | file, "timing": asdict(timing)}
    return requests, meta | _summary(requests, times[-1])


def session_trace(data: Path, source: str, window: Window) -> tuple[list[TraceRequest], Meta]:
    """The Alibaba trace's arrivals in `window`, each session given consecutive prompts of `source`."""
    prompts, file = load_prompts(data, source)
    arrivals_path = source_file(data, ALIBABA_FILE)
    chosen = select(read_arrivals(arrivals_path), window)
    compression = chosen.span_s / window.duration_s
    lengths = Counter(chosen.session)
    first = list(accumulate((lengths[s] for s in range(len(lengths))), initial=0))  # each session's first prompt
    taken: Counter[int] = Counter()
    texts = []
    for s in chosen.session:
        texts.append(prompts[(first[s] + taken[s]) % len(prompts)])  # past the end, the file starts over
        taken[s] += 1
    kinds = reuse_kinds(texts)
    requests = [
        TraceRequest(
            (a.t - chosen.origin) / compression,
            text,
            params={"steps": a.steps} if a.steps else {},
            extra={"kind": kind, "user": a.user, "session": s} | ({"images": a.images} if a.images else {}),
        )
        for a, s, text, kind in zip(chosen.arrivals, chosen.session, texts, kinds, strict=True)
    ]
    meta = {
        "builder": "sessions",
        "prompts": {"source": source} | file,
        "arrivals": describe(arrivals_path, ALIBABA_FILE),
        "window": asdict(window),
        "compression": round(compression, 3),  # trace seconds per replay second
        "prompt_passes": math.ceil(len(texts) / len(prompts)),  # over 1: prompts reused by wrapping
        "session_lengths": session_stats(chosen.session),
        "load": load_shape([a.t for a in chosen.arrivals], chosen.origin, chosen.span_s),
    }
    return requests, meta | _summary(requests, window.duration_s)


def _summary(requests: list[TraceRequest], duration_s: float) -> Meta:
    """What the trace offers: size, mean rate and the share of each reuse kind."""
    return {
        "requests": len(requests),
        "duration_s": round(duration_s, 3),
        "mean_rate": round(len(requests) / duration_s, 4) if duration_s else None,
        "kinds": {kind: round(share, 4) for kind, share in trace_shares(requests).items()},
        "near_jaccard": NEAR_JACCARD,
    }
