"""What differs between pipeline families, keyed by the diffusers pipeline class."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilySpec:
    name: str
    default_steps: int
    default_guidance: float
    # Distilled models (FLUX, SANA-Sprint) have no classifier-free guidance to steer away with.
    supports_negative_prompt: bool
    # Transformer patch size or latent packing: sizes must be multiples of vae factor x this...
    latent_patch: int
    # ...and of this, which the pipeline checks on its own.
    min_multiple: int
    # SD and SDXL img2img floor steps x strength; the flow-matching pipelines round the other way.
    floors_img2img_steps: bool

    def img2img_steps(self, steps: int, strength: float) -> int:
        """Denoising steps an img2img call runs, computed exactly as the family's pipeline does."""
        if self.floors_img2img_steps:
            return steps - max(steps - min(int(steps * strength), steps), 0)
        return steps - int(max(steps - min(steps * strength, steps), 0))


FAMILIES: dict[str, FamilySpec] = {
    "StableDiffusion3Pipeline": FamilySpec("sd3", 28, 7.0, True, 2, 1, False),
    "FluxPipeline": FamilySpec("flux", 28, 3.5, False, 2, 1, False),
    "StableDiffusionXLPipeline": FamilySpec("sdxl", 30, 5.0, True, 1, 8, True),
    "SanaPipeline": FamilySpec("sana", 20, 4.5, True, 1, 32, False),
    "SanaSprintPipeline": FamilySpec("sana_sprint", 2, 4.5, False, 1, 32, False),
    "StableDiffusionPipeline": FamilySpec("sd", 50, 7.5, True, 1, 8, True),
}


def family_for(pipeline_class: str) -> FamilySpec:
    try:
        return FAMILIES[pipeline_class]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise ValueError(f"unsupported pipeline class {pipeline_class}; supported: {known}") from None


FAMILIES_BY_NAME: dict[str, FamilySpec] = {spec.name: spec for spec in FAMILIES.values()}
