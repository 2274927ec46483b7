"""One diffusers pipeline on one device, plus its img2img twin sharing the same weights."""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, DiffusionPipeline, SanaSprintImg2ImgPipeline
from PIL import Image

from modm.images import ImageFormat
from modm.services.worker.families import FamilySpec, family_for
from modm.services.worker.jobs import GenerationJob, JobKind
from modm.services.worker.sana_img2img import SanaImg2ImgPipeline
from modm.services.worker.settings import FaultKind
from modm.services.worker.tiny.faults import FaultHook

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Families whose img2img class AutoPipelineForImage2Image does not know.
_IMG2IMG_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "SanaPipeline": SanaImg2ImgPipeline,
    "SanaSprintPipeline": SanaSprintImg2ImgPipeline,
}
# SANA's resolution binning only knows the transformer sample sizes of its released checkpoints.
_SANA_BINNED_SAMPLE_SIZES = {16, 32, 64, 128}

StepCallback = Callable[[int, int], None]


def _drop_upcast_warning(record: logging.LogRecord) -> bool:
    """SDXL-style img2img casts its VAE to fp32 on every call (`force_upcast`, by design on fp16
    GPUs); diffusers then warns about the cast once per request, which floods the worker's log."""
    return "should be kept in float32" not in record.getMessage()


def served_model_id(model: str, revision: str | None = None, variant: str | None = None) -> str:
    """The model id a worker reports and the cache records with each image: `model@revision#variant`
    (each suffix only when set), so pods serving different revisions or weight variants of one
    model are told apart."""
    return model + (f"@{revision}" if revision else "") + (f"#{variant}" if variant else "")


@dataclass(frozen=True)
class PipelineFacts:
    model_id: str
    revision: str | None
    variant: str | None
    family: FamilySpec
    device: str
    dtype: str
    default_width: int
    default_height: int
    default_steps: int
    size_multiple: int


@dataclass(frozen=True)
class Profile:
    """Latency model of one image at the default size: overhead + steps x seconds_per_step."""

    seconds_per_step: float
    overhead_seconds: float


def probe_job(facts: PipelineFacts, steps: int) -> GenerationJob:
    """A known-good text-to-image job at the default size, for profiling and self-tests."""
    return GenerationJob(
        JobKind.TEXT_TO_IMAGE,
        "a warm-up photograph",
        None,
        facts.default_width,
        facts.default_height,
        steps,
        facts.family.default_guidance,
        0,
        ImageFormat.PNG,
        steps,
    )


def _img2img_twin(pipe: DiffusionPipeline) -> DiffusionPipeline:
    cls = _IMG2IMG_CLASSES.get(type(pipe).__name__)
    return AutoPipelineForImage2Image.from_pipe(pipe) if cls is None else cls.from_pipe(pipe)


def _default_side(pipe: DiffusionPipeline) -> int:
    """The model's native resolution, as its pipeline computes it when no size is given.

    FLUX hard-codes 1024 px in its pipeline; its VAE config records the same native size, and
    is the only place a smaller model (the tiny ones) can say otherwise.
    """
    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    sample = denoiser.config.get("sample_size")
    if sample is None:
        return int(pipe.vae.config.sample_size)
    return int(sample) * int(pipe.vae_scale_factor)


def _family_kwargs(pipe: DiffusionPipeline, family: FamilySpec) -> dict[str, Any]:
    """Call arguments a family needs beyond the common ones, fixed for the pipeline's lifetime."""
    if family.name not in ("sana", "sana_sprint"):
        return {}
    if "use_resolution_binning" not in inspect.signature(pipe.__call__).parameters:
        return {}
    return {"use_resolution_binning": pipe.transformer.config.sample_size in _SANA_BINNED_SAMPLE_SIZES}


class DiffusionRunner:
    """Runs batches of same-key jobs through the pipeline; blocking, so call it off the loop."""

    def __init__(
        self,
        text2img: DiffusionPipeline,
        img2img: DiffusionPipeline,
        facts: PipelineFacts,
        faults: FaultHook | None = None,
    ) -> None:
        self._text2img = text2img
        self._img2img = img2img
        self._faults = faults
        self._extra_kwargs = {
            JobKind.TEXT_TO_IMAGE: _family_kwargs(text2img, facts.family),
            JobKind.IMAGE_TO_IMAGE: _family_kwargs(img2img, facts.family),
        }
        self.facts = facts

    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: str,
        dtype: str,
        default_steps: int | None = None,
        revision: str | None = None,
        variant: str | None = None,
        test_faults: Mapping[str, FaultKind] | None = None,
    ) -> DiffusionRunner:
        """Load `model` at `revision` with the `variant` weights (e.g. fp16: `*.fp16.safetensors`).

        `test_faults` arms the test-only fault hook, which only tiny models accept.
        """
        started = time.monotonic()
        faults = FaultHook.for_model(model, test_faults) if test_faults else None
        logging.getLogger("diffusers.models.modeling_utils").addFilter(_drop_upcast_warning)
        pipe = DiffusionPipeline.from_pretrained(
            model, dtype=TORCH_DTYPES[dtype], use_safetensors=True, revision=revision, variant=variant
        )
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        family = family_for(type(pipe).__name__)
        img2img = _img2img_twin(pipe)
        img2img.set_progress_bar_config(disable=True)
        patch = getattr(pipe, "patch_size", None) or family.latent_patch
        side = _default_side(pipe)
        facts = PipelineFacts(
            model_id=served_model_id(model, revision, variant),
            revision=revision,
            variant=variant,
            family=family,
            device=device,
            dtype=dtype,
            default_width=side,
            default_height=side,
            default_steps=default_steps or family.default_steps,
            size_multiple=math.lcm(int(pipe.vae_scale_factor) * int(patch), family.min_multiple),
        )
        log.info(
            "pipeline loaded",
            extra={
                "model": facts.model_id,
                "family": family.name,
                "device": device,
                "dtype": dtype,
                "load_seconds": round(time.monotonic() - started, 3),
            },
        )
        return cls(pipe, img2img, facts, faults)

    def generate(self, jobs: Sequence[GenerationJob], on_step: StepCallback) -> tuple[list[Image.Image], int]:
        """Run one pipeline call for jobs sharing a batch key; returns the images and steps run."""
        if self._faults is not None:
            self._faults.check([job.prompt for job in jobs])
        first = jobs[0]
        image_to_image = first.kind is JobKind.IMAGE_TO_IMAGE
        pipe = self._img2img if image_to_image else self._text2img
        steps_run = 0

        def step_end(p: DiffusionPipeline, index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal steps_run
            steps_run = index + 1
            on_step(steps_run, int(p.num_timesteps))
            return {}

        kwargs: dict[str, Any] = {
            "prompt": [job.prompt for job in jobs],
            "width": first.width,
            "height": first.height,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
            # CPU generators make a seed mean the same image on every device.
            "generator": [torch.Generator("cpu").manual_seed(job.seed) for job in jobs],
            "output_type": "pil",
            "callback_on_step_end": step_end,
            **self._extra_kwargs[first.kind],
        }
        if self.facts.family.name == "sana_sprint" and first.steps != 2:
            kwargs["intermediate_timesteps"] = None  # SCM's intermediate step exists only in 2-step schedules
        if first.negative_prompt is not None:
            kwargs["negative_prompt"] = [job.negative_prompt for job in jobs]
        if image_to_image:
            kwargs["image"] = [
                job.init_image.resize((first.width, first.height), Image.Resampling.LANCZOS)
                for job in jobs
                if job.init_image is not None
            ]
            kwargs["strength"] = first.strength
        with torch.inference_mode():
            images = pipe(**kwargs).images
        return list(images), steps_run

    def profile(self, steps: tuple[int, int] = (2, 6), repeats: int = 2) -> Profile:
        """Fit overhead + per-step cost from timed runs at two step counts, after a warm-up run.

        Each point is the fastest of `repeats` runs: noise from neighbours only ever adds time.
        """

        def timed(n: int) -> float:
            started = time.perf_counter()
            self.generate([probe_job(self.facts, n)], lambda step, total: None)
            return time.perf_counter() - started

        timed(steps[0])
        short, long = (min(timed(n) for _ in range(repeats)) for n in steps)
        if long <= short:  # a neighbour slowed the short runs: no usable slope, so no fixed overhead either
            return Profile(seconds_per_step=long / steps[1], overhead_seconds=0.0)
        per_step = (long - short) / (steps[1] - steps[0])
        return Profile(seconds_per_step=per_step, overhead_seconds=max(short - steps[0] * per_step, 0.0))

    def self_test(self) -> None:
        """One known-good generation (two steps at the default size); raises if the pipeline is broken."""
        self.generate([probe_job(self.facts, 2)], lambda step, total: None)
