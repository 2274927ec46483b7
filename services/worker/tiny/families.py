"""One builder per pipeline family.

How to drive each family (size multiples, img2img classes, call arguments) is the worker's
knowledge (`modm.services.worker.families` and `.pipeline`), not repeated here.

Every tiny family is sized for 128x128 pixels, so an image made by one family can be refined by
another at the same size. SD3 and FLUX get far deeper transformers than the other families so that
a large image costs about five to six times a small one, as SD3.5-Large does against SDXL on real
hardware (MoDM's pair). Tiny models on a CPU are bound by the number of operators, not FLOPs, so
the depth was chosen by counting the aten operators one image runs at the default steps (SD3 28,
SDXL 30): with 26 joint blocks SD3 runs 6.4x SDXL's operators per image and 7x per denoising step
(c = 0.144). Timed on the idle 2-core machine, one torch thread each, interleaved, at the
default steps: 2.0 s per SD3 image against 0.45 s per SDXL image, 4.5x (c = 0.21 per step); in
the serving stack, where both also pay the same fixed costs per request, 3.4x. Each extra block
adds about 0.08 s per image, so 32 blocks would give 5.5x. The workers' warm-up profiles measure
c again in every run (see docs/bench/). FLUX keeps 10 double and 30 single blocks (against the
real 19 + 38).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SanaPipeline,
    SanaSprintPipeline,
    SanaTransformer2DModel,
    SCMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from .autoencoders import autoencoder_dc, autoencoder_kl
from .text_encoders import CLIP_HIDDEN, GEMMA_HIDDEN, T5_HIDDEN, clip_text_encoder, gemma2_encoder, t5_encoder
from .tokenizer import clip_tokenizer, gemma_tokenizer, t5_tokenizer

SIZE = 128
KL_LATENT = SIZE // 8
DC_LATENT = SIZE // 32
# The SD 1.5 / SDXL noise schedule; both UNet families were trained on it.
SD_BETAS: dict[str, Any] = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


@dataclass(frozen=True)
class TinyFamily:
    pipeline: type[DiffusionPipeline]
    components: Callable[[], dict[str, Any]]  # fresh modules, drawn from torch's global RNG


def _unet(**conditioning: Any) -> UNet2DConditionModel:
    """The SD-style UNet both SD 1.5 and SDXL use; `conditioning` sets the text and added inputs."""
    return UNet2DConditionModel(
        sample_size=KL_LATENT,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=8,
        **conditioning,
    )


def _sd() -> dict[str, Any]:
    tokenizer = clip_tokenizer()
    return dict(
        vae=autoencoder_kl(latent_channels=4, scaling_factor=0.18215),
        text_encoder=clip_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=_unet(cross_attention_dim=CLIP_HIDDEN),
        scheduler=DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl() -> dict[str, Any]:
    tokenizer = clip_tokenizer()
    time_embed_dim = 8
    return dict(
        vae=autoencoder_kl(latent_channels=4, scaling_factor=0.13025),
        text_encoder=clip_text_encoder(tokenizer),
        text_encoder_2=clip_text_encoder(tokenizer, projection_dim=CLIP_HIDDEN),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=_unet(
            cross_attention_dim=2 * CLIP_HIDDEN,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            # Six micro-conditioning numbers (original size, crop, target size) plus the pooled text.
            projection_class_embeddings_input_dim=6 * time_embed_dim + CLIP_HIDDEN,
        ),
        scheduler=EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="leading", steps_offset=1),
    )


def _sd3() -> dict[str, Any]:
    clip, t5 = clip_tokenizer(), t5_tokenizer()
    heads, head_dim = 2, 16
    return dict(
        transformer=SD3Transformer2DModel(
            sample_size=KL_LATENT,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=26,
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            joint_attention_dim=T5_HIDDEN,
            caption_projection_dim=heads * head_dim,
            pooled_projection_dim=2 * CLIP_HIDDEN,
            pos_embed_max_size=4 * KL_LATENT,  # allows up to 4x the default size
            qk_norm="rms_norm",
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=autoencoder_kl(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, quant_conv=False),
        text_encoder=clip_text_encoder(clip, projection_dim=CLIP_HIDDEN),
        tokenizer=clip,
        text_encoder_2=clip_text_encoder(clip, projection_dim=CLIP_HIDDEN),
        tokenizer_2=clip,
        text_encoder_3=t5_encoder(t5),
        tokenizer_3=t5,
    )


def _flux() -> dict[str, Any]:
    clip, t5 = clip_tokenizer(), t5_tokenizer()
    return dict(
        transformer=FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # 16 latent channels packed 2x2
            num_layers=10,
            num_single_layers=30,
            num_attention_heads=2,
            attention_head_dim=16,
            joint_attention_dim=T5_HIDDEN,
            pooled_projection_dim=CLIP_HIDDEN,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        vae=autoencoder_kl(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False),
        text_encoder=clip_text_encoder(clip),
        tokenizer=clip,
        text_encoder_2=t5_encoder(t5),
        tokenizer_2=t5,
    )


def _sana_transformer(**variant: Any) -> SanaTransformer2DModel:
    # sample_size is read only by resolution binning, which must stay off (see _NO_BINNING).
    heads, head_dim = 8, 8
    return SanaTransformer2DModel(
        in_channels=32,
        out_channels=32,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        num_layers=8,
        num_cross_attention_heads=heads,
        cross_attention_head_dim=head_dim,
        cross_attention_dim=heads * head_dim,
        caption_channels=GEMMA_HIDDEN,
        sample_size=DC_LATENT,
        **variant,
    )


def _sana() -> dict[str, Any]:
    tokenizer = gemma_tokenizer()
    return dict(
        tokenizer=tokenizer,
        text_encoder=gemma2_encoder(tokenizer),
        vae=autoencoder_dc(latent_channels=32),
        transformer=_sana_transformer(),
        scheduler=DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, solver_order=2
        ),
    )


def _sana_sprint() -> dict[str, Any]:
    tokenizer = gemma_tokenizer()
    return dict(
        tokenizer=tokenizer,
        text_encoder=gemma2_encoder(tokenizer),
        vae=autoencoder_dc(latent_channels=32),
        transformer=_sana_transformer(guidance_embeds=True, qk_norm="rms_norm_across_heads"),
        scheduler=SCMScheduler(),
    )


FAMILIES: dict[str, TinyFamily] = {
    "sd3": TinyFamily(StableDiffusion3Pipeline, _sd3),
    "flux": TinyFamily(FluxPipeline, _flux),
    "sdxl": TinyFamily(StableDiffusionXLPipeline, _sdxl),
    "sana": TinyFamily(SanaPipeline, _sana),
    "sana_sprint": TinyFamily(SanaSprintPipeline, _sana_sprint),
    "sd": TinyFamily(StableDiffusionPipeline, _sd),
}
