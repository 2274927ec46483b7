"""The tiny pipelines load and generate through the worker's runner exactly like hub models.

The worker's service tests stand on these models, so this checks them in-process first: the
saved folder, reproducible builds, batches, seeds, img2img for every family, unicode prompts and
negative prompts where the family has them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
from collections.abc import Callable

import pytest
from PIL import Image

from modm.images import ImageFormat
from modm.services.worker.families import family_for
from modm.services.worker.jobs import GenerationJob, JobKind
from modm.services.worker.pipeline import DiffusionRunner
from modm.services.worker.runner import never_stop
from modm.services.worker.tiny import DEFAULT_SIZE, TINY_FAMILIES, build_tiny
from modm.services.worker.tiny.families import FAMILIES

pytestmark = [pytest.mark.slow]

PROMPTS = ["a photo of a red cat on the beach", "an old castle under a starry sky"]
# Distilled families (FLUX, SANA-Sprint) have no negative guidance: the worker refuses a negative prompt.
NEGATIVE_FAMILIES = [f for f in TINY_FAMILIES if family_for(FAMILIES[f].pipeline.__name__).supports_negative_prompt]


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model_dir(family: str, tiny_model: Callable[[str], pathlib.Path]) -> pathlib.Path:
    return tiny_model(family)


@pytest.fixture(scope="module")
def runner(model_dir: pathlib.Path) -> DiffusionRunner:
    return DiffusionRunner.load(str(model_dir), device="cpu", dtype="fp32")


def job(runner: DiffusionRunner, prompt: str, seed: int, steps: int = 2, **changes: object) -> GenerationJob:
    fields: dict[str, object] = dict(
        kind=JobKind.TEXT_TO_IMAGE,
        prompt=prompt,
        negative_prompt=None,
        width=DEFAULT_SIZE,
        height=DEFAULT_SIZE,
        steps=steps,
        guidance_scale=runner.facts.family.default_guidance,
        seed=seed,
        output_format=ImageFormat.PNG,
        planned_steps=steps,
    )
    fields.update(changes)
    return GenerationJob(**fields)  # type: ignore[arg-type]


def run(runner: DiffusionRunner, *jobs: GenerationJob) -> list[Image.Image]:
    images, _ = runner.generate(list(jobs), lambda step, total: None, never_stop)
    return images


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


def test_runner_knows_the_family(family: str, runner: DiffusionRunner) -> None:
    facts = runner.facts
    assert facts.family.name == family
    assert (facts.default_width, facts.default_height) == (DEFAULT_SIZE, DEFAULT_SIZE)
    assert DEFAULT_SIZE % facts.size_multiple == 0


def test_batch_seeds_and_img2img(runner: DiffusionRunner) -> None:
    batch = run(runner, job(runner, PROMPTS[0], 1), job(runner, PROMPTS[1], 2))
    assert [image.size for image in batch] == [(DEFAULT_SIZE, DEFAULT_SIZE)] * 2
    assert batch[0].tobytes() != batch[1].tobytes()
    again = run(runner, job(runner, PROMPTS[0], 1))[0]
    assert again.tobytes() == run(runner, job(runner, PROMPTS[0], 1))[0].tobytes()

    strength = 0.5
    planned = runner.facts.family.img2img_steps(4, strength)
    refine = [
        job(
            runner,
            prompt,
            seed,
            steps=4,
            kind=JobKind.IMAGE_TO_IMAGE,
            strength=strength,
            init_image=init,
            planned_steps=planned,
        )
        for prompt, seed, init in zip(PROMPTS, (3, 4), batch, strict=True)
    ]
    images, steps_run = runner.generate(refine, lambda step, total: None, never_stop)
    assert steps_run == planned
    assert [image.size for image in images] == [(DEFAULT_SIZE, DEFAULT_SIZE)] * 2
    swapped = run(runner, dataclasses.replace(refine[0], init_image=batch[1]))
    assert swapped[0].tobytes() != images[0].tobytes(), "the init image must matter"


def test_unicode_prompt(runner: DiffusionRunner) -> None:
    prompt = "🐱🚀 Ünïcödé 日本語の猫, «quoted» <tag>\n\ttabs — and a zebraunicorn"
    assert len(run(runner, job(runner, prompt, 5, steps=1))) == 1


@pytest.mark.parametrize("family", NEGATIVE_FAMILIES, indirect=True)
def test_negative_prompts_where_the_family_has_them(runner: DiffusionRunner) -> None:
    plain = run(runner, job(runner, PROMPTS[0], 1, steps=1))[0]
    steered = run(runner, job(runner, PROMPTS[0], 1, steps=1, negative_prompt="blurry, low quality"))[0]
    assert steered.tobytes() != plain.tobytes()


def test_unknown_family_is_rejected(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny family"):
        build_tiny("sd9", tmp_path)


def test_png_round_trip_of_a_generated_image(runner: DiffusionRunner) -> None:
    from modm.images import encode_image

    image = run(runner, job(runner, PROMPTS[0], 9, steps=1))[0]
    decoded = Image.open(io.BytesIO(encode_image(image, ImageFormat.PNG)))
    assert decoded.convert("RGB").tobytes() == image.convert("RGB").tobytes()
