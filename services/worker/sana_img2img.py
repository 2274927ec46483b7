"""Image-to-image for SANA, which diffusers ships only for SANA-Sprint.

MoDM's small model refines cached images, so a SANA small pool needs img2img. This follows the
recipe of the flow-matching img2img pipelines (SD3, FLUX): encode the init image, start the
schedule `strength` of the way from its end, noise the latents to that point, then run SANA's
own denoising step on the remaining timesteps. It shares every component with `SanaPipeline`,
so `from_pipe` builds it without loading anything twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from diffusers import SanaPipeline
from diffusers.pipelines.sana.pipeline_output import SanaPipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

# txt2img and img2img must condition the same way: reuse SanaPipeline's default instruction.
_CALL_PARAMETERS = inspect.signature(SanaPipeline.__call__).parameters
_DEFAULT_INSTRUCTION = _CALL_PARAMETERS["complex_human_instruction"].default

StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


class SanaImg2ImgPipeline(SanaPipeline):
    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        prompt: str | list[str],
        image: Image.Image | list[Image.Image],
        strength: float = 0.6,
        negative_prompt: str | list[str] = "",
        num_inference_steps: int = 20,
        guidance_scale: float = 4.5,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end: StepEnd | None = None,
        max_sequence_length: int = 300,
        complex_human_instruction: list[str] | None = _DEFAULT_INSTRUCTION,
    ) -> SanaPipelineOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        device = self._execution_device
        self._guidance_scale = guidance_scale
        cfg = guidance_scale > 1.0
        embeds, mask, negative_embeds, negative_mask = self.encode_prompt(
            prompts,
            cfg,
            negative_prompt=negative_prompt,
            device=device,
            max_sequence_length=max_sequence_length,
            complex_human_instruction=complex_human_instruction,
        )
        if cfg:
            embeds = torch.cat([negative_embeds, embeds])
            mask = torch.cat([negative_mask, mask])

        timesteps = self._truncated_schedule(num_inference_steps, strength, device)
        latents = self._noised_init_latents(image, (height, width), timesteps[0], generator, len(prompts), device)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, 0.0)
        self._num_timesteps = len(timesteps)
        dtype = self.transformer.dtype
        channels = self.transformer.config.in_channels
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if cfg else latents
            timestep = t.expand(model_input.shape[0]) * self.transformer.config.timestep_scale
            velocity = self.transformer(
                model_input.to(dtype),
                encoder_hidden_states=embeds.to(dtype),
                encoder_attention_mask=mask,
                timestep=timestep,
                return_dict=False,
            )[0].float()
            if cfg:
                uncond, cond = velocity.chunk(2)
                velocity = uncond + guidance_scale * (cond - uncond)
            if self.transformer.config.out_channels // 2 == channels:  # learned-sigma checkpoints
                velocity = velocity.chunk(2, dim=1)[0]
            latents = self.scheduler.step(velocity, t, latents, **extra_step_kwargs, return_dict=False)[0]
            if callback_on_step_end is not None:
                callback_on_step_end(self, i, t, {})

        latents = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        decoded = self.vae.decode(latents, return_dict=False)[0]
        return SanaPipelineOutput(images=self.image_processor.postprocess(decoded, output_type=output_type))

    def _truncated_schedule(self, steps: int, strength: float, device: torch.device) -> torch.Tensor:
        """The last `strength` of the schedule, rounded as the flow-matching img2img pipelines do."""
        self.scheduler.set_timesteps(steps, device=device)
        init_timestep = min(steps * strength, steps)
        start = int(max(steps - init_timestep, 0)) * self.scheduler.order
        self.scheduler.set_begin_index(start)
        return self.scheduler.timesteps[start:]

    def _noised_init_latents(
        self,
        image: Image.Image | list[Image.Image],
        size: tuple[int | None, int | None],
        first_timestep: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        batch: int,
        device: torch.device,
    ) -> torch.Tensor:
        pixels = self.image_processor.preprocess(image, height=size[0], width=size[1]).to(device, self.vae.dtype)
        clean = self.vae.encode(pixels).latent.float() * self.vae.config.scaling_factor
        if clean.shape[0] != batch:
            clean = clean.repeat(batch // clean.shape[0], 1, 1, 1)
        noise = randn_tensor(clean.shape, generator=generator, device=device, dtype=clean.dtype)
        if hasattr(self.scheduler, "scale_noise"):  # FlowMatchEulerDiscreteScheduler
            return self.scheduler.scale_noise(clean, first_timestep.unsqueeze(0), noise)
        if not self.scheduler.config.get("use_flow_sigmas"):
            name = type(self.scheduler).__name__
            raise ValueError(f"{name} without flow sigmas cannot noise an init image")
        sigma = self.scheduler.sigmas[self.scheduler.begin_index].to(device)
        return (1.0 - sigma) * clean + sigma * noise
