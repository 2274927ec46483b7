from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from modm.errors import Unavailable
from modm.services.cache.embedders import BatchingEmbedder, Embedder
from modm.services.cache.thresholds import MINILM_L6_V2


class Recorder(Embedder):
    name = "Recorder Model/v1"
    dim = 3
    insert_input = "prompt"
    default_thresholds = MINILM_L6_V2

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[str, int]] = []
        self.threads: set[str] = set()
        self.fail = fail

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("model exploded")
        self.batches.append(("text", len(texts)))
        return np.asarray([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    def embed_images(self, images: Sequence[object]) -> np.ndarray:
        self.batches.append(("image", len(images)))
        return np.ones((len(images), 3), dtype=np.float32)


def test_slug_is_safe_for_collection_names() -> None:
    assert Recorder().slug == "recorder_model_v1"


async def test_concurrent_requests_share_batches_per_kind_and_keep_their_results() -> None:
    model = Recorder()
    batcher = BatchingEmbedder(model, max_batch=4, window_ms=20)
    texts = [f"x{'y' * i}" for i in range(10)]
    results = await asyncio.gather(*(batcher.embed_text(t) for t in texts), batcher.embed_image(object()))
    for text, vector in zip(texts, results[:10], strict=True):
        assert vector[0] == len(text)  # every caller got its own row back
    text_batches = [n for kind, n in model.batches if kind == "text"]
    assert sum(text_batches) == 10 and max(text_batches) <= 4 and len(text_batches) == 3
    assert ("image", 1) in model.batches
    assert model.threads == {"embedder_0"}  # never the event loop's thread
    await batcher.close()


async def test_a_failing_model_fails_the_whole_batch_and_the_batcher_survives() -> None:
    model = Recorder(fail=True)
    batcher = BatchingEmbedder(model, max_batch=8, window_ms=5)
    outcomes = await asyncio.gather(batcher.embed_text("a"), batcher.embed_text("b"), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    model.fail = False
    assert (await batcher.embed_text("abc"))[0] == 3
    await batcher.close()


async def test_a_text_the_model_cannot_embed_fails_only_its_own_request() -> None:
    class Choosy(Recorder):
        def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
            if "poison" in texts:
                raise ValueError("cannot embed poison")
            return super().embed_texts(texts)

    model = Choosy()
    batcher = BatchingEmbedder(model, max_batch=8, window_ms=20)
    outcomes = await asyncio.gather(*(batcher.embed_text(t) for t in ("ab", "poison", "abcd")), return_exceptions=True)
    assert isinstance(outcomes[1], ValueError)
    assert [o[0] for o in (outcomes[0], outcomes[2])] == [2, 4]  # type: ignore[index]
    assert model.batches == [("text", 1), ("text", 1)]
    await batcher.close()


async def test_a_batcher_started_before_any_request_serves_them() -> None:
    batcher = BatchingEmbedder(Recorder())
    batcher.start()
    assert (await batcher.embed_text("ab"))[0] == 2
    await batcher.close()


async def test_closed_batcher_refuses_work() -> None:
    batcher = BatchingEmbedder(Recorder())
    await batcher.close()
    with pytest.raises(Unavailable):
        await batcher.embed_text("late")


class ThreadCounter(Recorder):
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        return np.full((len(texts), 1), torch.get_num_threads(), dtype=np.float32)


async def test_the_embedder_thread_runs_torch_on_the_threads_it_was_given() -> None:
    import torch

    target = 1 if torch.get_num_threads() > 1 else 2
    before = torch.get_num_threads()
    batcher = BatchingEmbedder(ThreadCounter(), torch_threads=target)
    assert (await batcher.embed_text("ab"))[0] == target
    await batcher.close()
    assert torch.get_num_threads() == before  # the loop's thread keeps its own
