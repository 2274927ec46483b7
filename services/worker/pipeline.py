"""One diffusers pipeline on one device, plus its img2img twin sharing the same weights: the
`Runner` of every real device (torch and diffusers are imported here and only here)."""

from __future__ import annotations

import inspect
import logging
import math
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, DiffusionPipeline, SanaSprintImg2ImgPipeline
from PIL import Image

from modm.images import ImageFormat, encode_image
from modm.services.worker.families import FamilySpec, family_for
from modm.services.worker.jobs import GenerationJob, JobKind
from modm.services.worker.runner import GenerationStopped, PipelineFacts, StepCallback, StopCheck
from modm.services.worker.sana_img2img import SanaImg2ImgPipeline
from modm.services.worker.settings import FaultKind, WorkerSettings
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


def _drop_upcast_warning(record: logging.LogRecord) -> bool:
    """SDXL-style img2img casts its VAE to fp32 on every call (`force_upcast`, by design on fp16
    GPUs); diffusers then warns about the cast once per request, which floods the worker's log."""
    return "should be kept in float32" not in record.getMessage()


def served_model_id(model: str, revision: str | None = None, variant: str | None = None) -> str:
    """The model id a worker reports and the cache records with each image: `model@revision#variant`
    (each suffix only when set), so pods serving different revisions or weight variants of one
    model are told apart."""
    return model + (f"@{revision}" if revision else "") + (f"#{variant}" if variant else "")


def load_diffusion_runner(settings: WorkerSettings) -> DiffusionRunner:
    """The worker's runner on a real device; call it on the pipeline thread, where every call runs."""
    if settings.torch_threads is not None:
        # Workers sharing a host's cores must not each spin one thread per core: on 2 cores
        # two tiny pipelines ran 3x to 10x slower per step than either alone.
        torch.set_num_threads(settings.torch_threads)
    return DiffusionRunner.load(
        settings.model,
        device=settings.device,
        dtype=settings.torch_dtype_name(),
        default_steps=settings.default_steps,
        revision=settings.revision,
        variant=settings.variant,
        test_faults=settings.test_faults,
    )


def _hardware(device: str) -> str:
    """The device's name, for recorded profiles: the GPU's model, or the CPU's architecture."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


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
    """Runs batches of same-key jobs through the pipeline (the `Runner` protocol); blocking."""

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
            hardware=_hardware(device),
            dtype=dtype,
            default_width=side,
            default_height=side,
            default_steps=default_steps or family.default_steps,
            size_multiple=math.lcm(int(pipe.vae_scale_factor) * int(patch), family.min_multiple),
            load_seconds=time.monotonic() - started,
        )
        log.info(
            "pipeline loaded",
            extra={
                "model": facts.model_id,
                "family": family.name,
                "device": device,
                "dtype": dtype,
                "load_seconds": round(facts.load_seconds, 3),
            },
        )
        return cls(pipe, img2img, facts, faults)

    def generate(
        self, jobs: Sequence[GenerationJob], on_step: StepCallback, should_stop: StopCheck
    ) -> tuple[list[Image.Image], int]:
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
            if should_stop():  # raising is the one way out of every family's denoising loop
                raise GenerationStopped(f"stopped after step {steps_run} of {p.num_timesteps}")
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

    def encode(self, image: Image.Image, output_format: ImageFormat) -> bytes:
        return encode_image(image, output_format)
