"""The open_clip embedder (tiny random weights saved and loaded like real ones) in a cache process:
text embeddings for queries, image embeddings for inserts, retrieval text-to-image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modm.services.cache.embedders import OpenClipEmbedder, load_embedder
from modm.services.cache.thresholds import CLIP_VIT_L_14
from modm.services.cache.tiny_clip import TINY_CLIP_CONFIG, build_tiny_clip
from modm.v1 import cache_pb2
from tests.integration.cache_helpers import OBJECTS, CacheClient, new_bucket, png, seaweed, started_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def test_tiny_clip_loads_through_the_real_path(tiny_clip: Path) -> None:
    embedder = load_embedder("open_clip", open_clip_model=f"local-dir:{tiny_clip}")
    assert isinstance(embedder, OpenClipEmbedder)
    assert embedder.dim == TINY_CLIP_CONFIG["embed_dim"] and embedder.insert_input == "image"
    assert embedder.default_thresholds == CLIP_VIT_L_14
    texts = embedder.embed_texts(["a red square", "a blue circle"])
    images = embedder.embed_images([Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))])
    assert texts.shape == images.shape == (2, embedder.dim)
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    # Same weights, same vectors: a second load is deterministic.
    again = OpenClipEmbedder(f"local-dir:{tiny_clip}")
    assert np.allclose(again.embed_texts(["a red square"])[0], texts[0], atol=1e-5)


def test_cache_with_open_clip_embeds_inserted_images(tiny_clip: Path, tmp_path: Path) -> None:
    proc = started_cache(
        tmp_path / "data",
        tmp_path,
        embedder="open_clip",
        open_clip_model=f"local-dir:{tiny_clip}",
        thresholds="[[0.99, 30], [-1.0, 5]]",  # random weights: every candidate is a hit
    )
    cache = CacheClient(proc.address)
    try:
        red, blue = png((255, 0, 0), 32), png((0, 0, 255), 32)
        red_id = cache.insert("clip", "a red square", red).entry_id
        blue_id = cache.insert("clip", "a blue square", blue).entry_id
        stats = cache.stats()
        assert stats.embedder == "open_clip:" + tiny_clip.name and stats.dimension == 32
        # The entry vectors are the images' embeddings: querying with one finds its image exactly.
        local = OpenClipEmbedder(f"local-dir:{tiny_clip}")
        blue_vec = local.embed_images([Image.open(io.BytesIO(blue))])[0]
        found = cache.stub.Lookup(cache_pb2.LookupRequest(tenant="clip", embedding=blue_vec.tolist(), top_k=2))
        assert found.matches[0].entry.entry_id == blue_id
        assert found.matches[0].similarity == pytest.approx(1.0, abs=1e-3)
        assert found.decision.skipped_steps == 30
        # Text queries go through the text tower (text-to-image retrieval).
        by_text = cache.lookup("clip", "a red square", top_k=2)
        assert {m.entry.entry_id for m in by_text.matches} == {red_id, blue_id}
        expected = float(local.embed_texts(["a red square"])[0] @ local.embed_images([Image.open(io.BytesIO(red))])[0])
        sims = {m.entry.entry_id: m.similarity for m in by_text.matches}
        assert sims[red_id] == pytest.approx(expected, abs=1e-3)
    finally:
        cache.close()
        proc.stop()


def test_switching_embedders_and_back_loses_no_image(tiny_clip: Path, tmp_path: Path) -> None:
    """Each embedder's collection keeps its images in a folder of its own, so a reconcile of the
    other embedder's collection (grace 0) does not take them for orphans."""
    clip = {"embedder": "open_clip", "open_clip_model": f"local-dir:{tiny_clip}"}
    with seaweed(tmp_path / "s3") as s3:
        bucket = new_bucket()
        settings = s3.settings(bucket)
        entry_id = ""
        for step, embedder in (("insert", {}), ("switch", clip), ("back", {})):
            proc = started_cache(tmp_path / "data", tmp_path, **settings, **embedder)
            cache = CacheClient(proc.address)
            try:
                if step == "insert":
                    entry_id = cache.insert("switch", "a lighthouse on a cliff", png((1, 2, 3))).entry_id
                cache.reconcile(grace_seconds=0)
                if step == "back":
                    assert cache.fetch("switch", entry_id).image == png((1, 2, 3))
            finally:
                cache.close()
                proc.stop()
        assert [o.key for o in s3.store(bucket).list("entries/")] == [f"{OBJECTS}switch/{entry_id}"]
