"""Request traces: timestamped prompts, read from and written to JSONL or Parquet.

A trace line is `{"t": seconds since the start, "prompt": "...", "tenant": "...", "params":
{...}}`; `tenant` and `params` (GenerationParams fields: negative_prompt, width, height, steps,
guidance_scale, seed) are optional. Lines may carry more keys (the generator writes `topic`
and `kind`), kept in `extra` and ignored by the replay. A JSONL trace may start with a header
line `{"meta": {...}}` saying how it was built (Parquet keeps it in the schema's metadata), so a
trace file tells its source and knobs without a side file.

`generate_trace` makes a synthetic trace with the structure that makes caching work in real
logs (MoDM, DiffusionDB): topics that recur, paraphrases of them, exact repeats, and drift of
the popular topics over time. `import_diffusiondb` turns DiffusionDB's metadata parquet
(`prompt`, `timestamp` columns) into a trace.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

PARAM_KEYS = frozenset({"negative_prompt", "width", "height", "steps", "guidance_scale", "seed"})
META_KEY = "meta"  # the key of a JSONL trace's header line


@dataclass(frozen=True)
class TraceRequest:
    t: float  # seconds after the trace's start
    prompt: str
    tenant: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise ValueError("a trace request needs a prompt")
        if self.t < 0:
            raise ValueError(f"time offset {self.t} is negative")
        unknown = set(self.params) - PARAM_KEYS
        if unknown:
            raise ValueError(f"unknown params {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(PARAM_KEYS))}")

    def to_dict(self) -> dict[str, Any]:
        line: dict[str, Any] = {"t": round(self.t, 6), "prompt": self.prompt}
        if self.tenant:
            line["tenant"] = self.tenant
        if self.params:
            line["params"] = self.params
        return line | self.extra

    @classmethod
    def from_dict(cls, line: dict[str, Any]) -> TraceRequest:
        known = {"t", "prompt", "tenant", "params"}
        return cls(
            t=float(line["t"]),
            prompt=str(line["prompt"]),
            tenant=str(line.get("tenant") or ""),
            params=dict(line.get("params") or {}),
            extra={k: v for k, v in line.items() if k not in known},
        )


def read_trace(path: Path) -> list[TraceRequest]:
    """A `.jsonl` or `.parquet` trace, sorted by time."""
    rows = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)[1]
    requests = []
    for number, row in enumerate(rows, 1):
        try:
            requests.append(TraceRequest.from_dict(row))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: request {number}: {error}") from error
    return sorted(requests, key=lambda r: r.t)


def read_trace_meta(path: Path) -> dict[str, Any] | None:
    """The header a builder wrote with the trace, if any."""
    if path.suffix == ".parquet":
        _, pq = _pyarrow()
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY.encode())
        return json.loads(raw) if raw else None
    return _jsonl_rows(path)[0]


def write_trace(requests: Iterable[TraceRequest], path: Path, *, meta: dict[str, Any] | None = None) -> Path:
    """JSONL, or Parquet for a `.parquet` path (a column per key; params as JSON text); `meta`
    becomes the header."""
    rows = [r.to_dict() for r in requests]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pa, pq = _pyarrow()
        for row in rows:  # params differ per row: one JSON text column keeps them exact
            if "params" in row:
                row["params"] = json.dumps(row["params"])
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = pa.table({key: [row.get(key) for row in rows] for key in columns})
        if meta is not None:
            table = table.replace_schema_metadata({META_KEY: json.dumps(meta)})
        pq.write_table(table, path)
    else:
        lines = ([{META_KEY: meta}] if meta is not None else []) + rows
        path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return path


def _jsonl_rows(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the header, the request lines)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rows and set(rows[0]) == {META_KEY}:
        return rows[0][META_KEY], rows[1:]
    return None, rows


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:  # an optional dependency (the bench extra)
        raise RuntimeError("Parquet traces need pyarrow: pip install 'modm[bench]'") from error
    return pa, pq


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    _, pq = _pyarrow()
    rows = [{k: v for k, v in row.items() if v is not None} for row in pq.read_table(path).to_pylist()]
    for row in rows:
        if isinstance(row.get("params"), str):
            row["params"] = json.loads(row["params"])
    return rows


def import_diffusiondb(path: Path, *, limit: int | None = None, tenant: str = "") -> list[TraceRequest]:
    """DiffusionDB's `metadata.parquet` (or any parquet with `prompt` and `timestamp` columns)
    as a trace: times are offsets from the earliest request, in the log's own seconds."""
    _, pq = _pyarrow()
    table = pq.read_table(path, columns=["prompt", "timestamp"])
    rows = [r for r in table.to_pylist() if r["prompt"] and r["timestamp"] is not None]
    rows.sort(key=lambda r: _seconds(r["timestamp"]))
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        return []
    start = _seconds(rows[0]["timestamp"])
    return [TraceRequest(_seconds(r["timestamp"]) - start, str(r["prompt"]), tenant) for r in rows]


def _seconds(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


# --- the synthetic generator ---------------------------------------------------------------

SUBJECTS = (
    "a red fox",
    "an old lighthouse",
    "a vintage sports car",
    "a golden retriever puppy",
    "a medieval castle",
    "a steaming cup of coffee",
    "an astronaut",
    "a wooden sailboat",
    "a snowy owl",
    "a cyberpunk street market",
    "a bowl of ramen",
    "a samurai warrior",
    "a hot air balloon",
    "a koi pond",
    "a steam locomotive",
    "a desert caravan",
    "a robot gardener",
    "a cozy reading nook",
    "a humpback whale",
    "a futuristic city skyline",
    "a field of sunflowers",
    "an ancient temple",
    "a white tiger",
    "a mountain cabin",
)
SETTINGS = (
    "at dusk",
    "in a snowy forest",
    "on a rocky cliff by the sea",
    "under a starry night sky",
    "in the rain",
    "in a misty valley",
    "at sunrise",
    "on a busy city street",
    "in an autumn park",
    "on the surface of the moon",
)
STYLES = (
    "oil painting",
    "digital art",
    "watercolor",
    "studio photograph",
    "pencil sketch",
    "anime style",
    "cinematic lighting",
    "low poly render",
)
TEMPLATES = (
    "{subject} {setting}, {style}",
    "{style} of {subject} {setting}",
    "{subject} {setting}, {style}, highly detailed",
    "{style}: {subject} {setting}",
    "beautiful {style} showing {subject} {setting}",
)
# Rewordings a paraphrase may apply: each keeps the scene, so a prompt embedder sees it close.
SYNONYMS = (
    ("at dusk", "at sunset"),
    ("at sunrise", "at dawn"),
    ("starry night sky", "sky full of stars"),
    ("snowy forest", "forest covered in snow"),
    ("in the rain", "on a rainy day"),
    ("misty valley", "foggy valley"),
    ("oil painting", "painting in oils"),
    ("digital art", "digital painting"),
    ("watercolor", "watercolour painting"),
    ("studio photograph", "studio photo"),
    ("pencil sketch", "pencil drawing"),
    ("old", "ancient"),
    ("puppy", "pup"),
    ("cup of coffee", "coffee cup"),
)
DETAILS = ("highly detailed", "4k", "trending on artstation", "sharp focus", "soft light", "wide angle")


@dataclass(frozen=True)
class TraceKnobs:
    """What shapes a synthetic trace.

    - `repeat_share`: requests that repeat an earlier prompt exactly (the cache serves them
      with no GPU work).
    - `paraphrase_share`: requests that reword a prompt of a recent topic (synonyms, another
      sentence template, an added or dropped detail); the cache's hits.
    - the rest are fresh: a new topic, generated by the large model, that later requests reuse.
    - `active_topics`: how many recent topics repeats and paraphrases draw from; older topics
      fall out of use, so the popular set moves on (drift).
    - `topic_drift`: in [0, 1); how strongly reuse prefers the newest active topics (a topic's
      weight is (1 - topic_drift) ** its age rank; 0 = all active topics alike).
    - `seed`: the whole trace is a function of the knobs and this seed.
    """

    requests: int = 300
    repeat_share: float = 0.1
    paraphrase_share: float = 0.5
    active_topics: int = 24
    topic_drift: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError("requests must be at least 1")
        for name in ("repeat_share", "paraphrase_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.repeat_share + self.paraphrase_share > 1.0:
            raise ValueError("repeat_share + paraphrase_share must be at most 1")
        if self.active_topics < 1:
            raise ValueError("active_topics must be at least 1")
        if not 0.0 <= self.topic_drift < 1.0:
            raise ValueError("topic_drift must be in [0, 1)")


@dataclass
class _Topic:
    number: int
    subject: str
    setting: str
    style: str
    prompts: list[str] = field(default_factory=list)


def generate_trace(knobs: TraceKnobs, *, rate_per_s: float = 1.0) -> list[TraceRequest]:
    """A seeded synthetic trace, timed as Poisson arrivals at `rate_per_s` (re-time it at replay).

    Each request's `extra` says its `kind` (fresh, paraphrase, repeat) and `topic`. The first
    request is always fresh: there is nothing to reuse yet.
    """
    rng = random.Random(knobs.seed)
    every_scene = [(s, p, y) for s in SUBJECTS for p in SETTINGS for y in STYLES]
    scenes: list[tuple[str, str, str]] = []
    topics: list[_Topic] = []  # active, oldest first
    requests: list[TraceRequest] = []
    t = 0.0
    for _ in range(knobs.requests):
        roll = rng.random()
        if not topics or roll >= knobs.repeat_share + knobs.paraphrase_share:
            if not scenes:  # every scene used: start another shuffled round
                scenes = rng.sample(every_scene, len(every_scene))
            subject, setting, style = scenes.pop()
            topic = _Topic(len(requests), subject, setting, style)
            prompt, kind = rng.choice(TEMPLATES).format(subject=subject, setting=setting, style=style), "fresh"
            topics.append(topic)
            del topics[: max(0, len(topics) - knobs.active_topics)]
        else:
            topic = _pick_topic(topics, knobs.topic_drift, rng)
            if roll < knobs.repeat_share:
                prompt, kind = rng.choice(topic.prompts), "repeat"
            else:
                prompt, kind = _paraphrase(topic, rng), "paraphrase"
        topic.prompts.append(prompt)
        requests.append(TraceRequest(t, prompt, extra={"kind": kind, "topic": topic.number}))
        t += rng.expovariate(rate_per_s)
    return requests


def _pick_topic(topics: Sequence[_Topic], drift: float, rng: random.Random) -> _Topic:
    weights = [(1.0 - drift) ** age for age in range(len(topics))]  # age 0 = the newest
    return rng.choices(list(reversed(topics)), weights)[0]


def _paraphrase(topic: _Topic, rng: random.Random) -> str:
    """Another wording of the topic's scene that no earlier request used, when one can be found."""
    for _ in range(20):
        text = rng.choice(TEMPLATES).format(subject=topic.subject, setting=topic.setting, style=topic.style)
        swaps = [pair for pair in SYNONYMS if pair[0] in text]
        for old, new in rng.sample(swaps, k=min(len(swaps), rng.randint(0, 2))):
            text = text.replace(old, new)
        if rng.random() < 0.5:
            text = f"{text}, {rng.choice(DETAILS)}"
        if text not in topic.prompts:
            return text
    return text


def trace_shares(requests: Sequence[TraceRequest]) -> dict[str, float]:
    """Share of each `kind` in a generated trace."""
    counts: dict[str, int] = {}
    for request in requests:
        kind = str(request.extra.get("kind", "unknown"))
        counts[kind] = counts.get(kind, 0) + 1
    return {kind: count / len(requests) for kind, count in sorted(counts.items())} if requests else {}
