"""The tiny pipelines must load and generate like hub models, since the worker's tests stand on them."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from diffusers import AutoPipelineForImage2Image, DiffusionPipeline  # noqa: E402
from PIL import Image  # noqa: E402

from modm.services.worker.tiny import (  # noqa: E402
    CALL_KWARGS,
    DEFAULT_SIZE,
    IMG2IMG_CLASS,
    NEGATIVE_PROMPT,
    TINY_FAMILIES,
    build_tiny,
)
from modm.services.worker.tiny.families import FAMILIES  # noqa: E402

pytestmark = [pytest.mark.slow]

PROMPTS = ["a photo of a red cat on the beach", "an old castle under a starry sky"]
# Families whose text-to-image class diffusers' own AutoPipelineForImage2Image maps to an img2img class.
AUTO_IMG2IMG = {"sd3", "flux", "sdxl", "sd"}


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def generate(pipe: DiffusionPipeline, family: str, **kwargs) -> list[Image.Image]:
    kwargs = {
        "num_inference_steps": 2,
        "height": DEFAULT_SIZE,
        "width": DEFAULT_SIZE,
        "guidance_scale": 4.0,
        "output_type": "pil",
        **CALL_KWARGS[family],
        **kwargs,
    }
    return pipe(**kwargs).images


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model_dir(family: str, tiny_model: Callable[[str], pathlib.Path]) -> pathlib.Path:
    return tiny_model(family)


@pytest.fixture(scope="module")
def pipe(model_dir: pathlib.Path) -> DiffusionPipeline:
    pipeline = DiffusionPipeline.from_pretrained(model_dir, use_safetensors=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def batch(pipe: DiffusionPipeline, family: str) -> list[Image.Image]:
    return generate(pipe, family, prompt=PROMPTS, generator=generators(1, 2))


def test_saved_folder_is_a_small_safetensors_pipeline(family: str, model_dir: pathlib.Path) -> None:
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == FAMILIES[family].pipeline.__name__
    files = [path for path in model_dir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".safetensors" for path in files)
    assert not [path for path in files if path.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
    assert sum(path.stat().st_size for path in files) < 12_000_000


def test_build_is_reproducible_from_the_seed(family: str, tmp_path: pathlib.Path) -> None:
    def weights(seed: int) -> dict[str, bytes]:
        folder = build_tiny(family, tmp_path / str(seed) / family, seed=seed)
        return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*.safetensors")}

    first = weights(0)
    assert weights(0) == first
    assert weights(1) != first


def test_loads_as_its_pipeline_class(family: str, pipe: DiffusionPipeline) -> None:
    assert type(pipe) is FAMILIES[family].pipeline


def test_txt2img_batch_gives_one_image_per_prompt(batch: list[Image.Image]) -> None:
    assert [image.size for image in batch] == [(DEFAULT_SIZE, DEFAULT_SIZE)] * 2
    assert batch[0].tobytes() != batch[1].tobytes()


def test_same_seed_gives_identical_bytes(family: str, pipe: DiffusionPipeline) -> None:
    first, second = (generate(pipe, family, prompt=PROMPTS[0], generator=generators(7))[0] for _ in range(2))
    assert first.tobytes() == second.tobytes()


def test_img2img_batch_from_txt2img_output(
    family: str, pipe: DiffusionPipeline, batch: list[Image.Image]
) -> None:
    name = IMG2IMG_CLASS.get(type(pipe).__name__)
    if name is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no image-to-image pipeline for {family}")
    img2img = getattr(diffusers, name).from_pipe(pipe)
    images = generate(img2img, family, prompt=PROMPTS, image=batch, strength=0.5, generator=generators(3, 4))
    assert [image.size for image in images] == [(DEFAULT_SIZE, DEFAULT_SIZE)] * 2
    assert images[0].tobytes() != batch[0].tobytes()


def test_auto_img2img_agrees_with_img2img_class(family: str, pipe: DiffusionPipeline) -> None:
    if family not in AUTO_IMG2IMG:
        with pytest.raises(ValueError):
            AutoPipelineForImage2Image.from_pipe(pipe)
        return
    assert type(AutoPipelineForImage2Image.from_pipe(pipe)).__name__ == IMG2IMG_CLASS[type(pipe).__name__]


def test_unicode_prompt(family: str, pipe: DiffusionPipeline) -> None:
    prompt = "🐱🚀 Ünïcödé 日本語の猫, «quoted» <tag>\n\ttabs — and a zebraunicorn"
    images = generate(pipe, family, prompt=prompt, num_inference_steps=1, generator=generators(5))
    assert len(images) == 1


def test_negative_prompt_per_prompt(family: str, pipe: DiffusionPipeline) -> None:
    if family not in NEGATIVE_PROMPT:
        pytest.skip(f"{family} does not honour negative prompts")
    images = generate(
        pipe,
        family,
        prompt=PROMPTS,
        negative_prompt=["blurry", "low quality, ugly"],
        num_inference_steps=1,
        generator=generators(1, 2),
    )
    assert len(images) == 2


def test_unknown_family_is_rejected(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny family"):
        build_tiny("sd9", tmp_path)
