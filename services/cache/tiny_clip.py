"""A tiny open_clip model with random weights, saved like a real one and loaded the same way.

`build_tiny_clip(out)` writes `open_clip_config.json` and `open_clip_model.safetensors` into
`out`; `local-dir:<out>` then loads through the same `open_clip.create_model_and_transforms`
path real weights take. The tokenizer is open_clip's bundled BPE, so nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_tiny_clip(out: Path, seed: int = 0) -> Path:
    import open_clip
    import safetensors.torch
    import torch

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    safetensors.torch.save_file(model.state_dict(), out / "open_clip_model.safetensors")
    config = {
        "model_cfg": TINY_CLIP_CONFIG,
        "preprocess_cfg": {
            "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD),
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return out
