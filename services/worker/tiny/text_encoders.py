"""Tiny text encoders: the real transformers classes, so pipelines run their ordinary encode paths."""

from __future__ import annotations

from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Gemma2Config,
    Gemma2Model,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
)

CLIP_HIDDEN = 32
T5_HIDDEN = 64  # SD3 pads the two CLIP outputs (2 x CLIP_HIDDEN) up to T5's width, so it must be wider.
GEMMA_HIDDEN = 32


def clip_text_encoder(
    tokenizer: PreTrainedTokenizerBase, *, projection_dim: int | None = None
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A CLIP text tower; `projection_dim` adds the projected pooled embedding that SDXL and SD3 use."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CLIP_HIDDEN,
        intermediate_size=2 * CLIP_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection_dim or CLIP_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config) if projection_dim is None else CLIPTextModelWithProjection(config)


def t5_encoder(tokenizer: PreTrainedTokenizerBase) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=T5_HIDDEN,
        d_kv=16,
        d_ff=2 * T5_HIDDEN,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def gemma2_encoder(tokenizer: PreTrainedTokenizerBase) -> Gemma2Model:
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=GEMMA_HIDDEN,
        intermediate_size=2 * GEMMA_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=8,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return Gemma2Model(config)
