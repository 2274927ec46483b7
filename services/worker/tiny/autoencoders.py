"""Tiny VAEs that keep the real models' downsampling factors (8x KL, 32x DC-AE).

The factor decides which pixel sizes a pipeline accepts and how many latent tokens an image makes,
so keeping it real keeps the tiny pipelines' size rules and relative costs like the real ones.
"""

from __future__ import annotations

from diffusers import AutoencoderDC, AutoencoderKL


def autoencoder_kl(
    *, latent_channels: int, scaling_factor: float, shift_factor: float | None = None, quant_conv: bool = True
) -> AutoencoderKL:
    """8x KL VAE; SD/SDXL use 4 latent channels with quant convs, SD3/FLUX 16 channels with a shift."""
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=128,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=quant_conv,
        use_post_quant_conv=quant_conv,
    )


def autoencoder_dc(*, latent_channels: int) -> AutoencoderDC:
    """32x deep-compression VAE as SANA uses: three conv stages then three linear-attention stages."""
    stages = 6
    return AutoencoderDC(
        latent_channels=latent_channels,
        attention_head_dim=8,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        encoder_block_out_channels=(8, 8, 16, 16, 32, 32),
        decoder_block_out_channels=(8, 8, 16, 16, 32, 32),
        encoder_layers_per_block=(1,) * stages,
        decoder_layers_per_block=(1,) * stages,
        encoder_qkv_multiscales=((),) * 3 + ((5,),) * 3,
        decoder_qkv_multiscales=((),) * 3 + ((5,),) * 3,
        scaling_factor=0.41407,
    )
