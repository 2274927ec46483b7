"""Image quality: CLIP score (prompt vs image) and FID between two image folders.

- CLIP score is 100 x max(cos(text, image), 0) with an open_clip model (torchmetrics' CLIPScore
  convention), by default the one the cache is configured with (MODM_CACHE_OPEN_CLIP_*), or
  `tiny`: the cache's tiny random open_clip, for machines without weights.
- FID uses torchmetrics' FrechetInceptionDistance with torch-fidelity's Inception v3 when its
  weights are on this machine (given as a file, or already in torch's hub cache). Without
  them it computes the same Fréchet distance over the CLIP model's image features ("FD-CLIP")
  and says so: that is a different number, not comparable with published FIDs.

With random weights (the tiny models and the tiny CLIP) every number here is meaningless; the
code paths are the real ones. torch, open_clip and torchmetrics are imported lazily (the
`eval` extra).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # what torch-fidelity downloads
MEANINGLESS = "random weights: these numbers are meaningless; they only show the code path runs"


@dataclass(frozen=True)
class ClipModel:
    """An open_clip model spec: a built-in name with a pretrained tag, or `local-dir:/path`."""

    model: str
    pretrained: str | None
    random_weights: bool = False

    @classmethod
    def configured(cls) -> ClipModel:
        """The cache's configured open_clip model (its settings, read from MODM_CACHE_*)."""
        from modm.services.cache.settings import CacheSettings

        settings = CacheSettings()
        return cls(settings.open_clip_model, settings.open_clip_pretrained)

    @classmethod
    def parse(cls, name: str | None, scratch: Path) -> ClipModel:
        """`tiny` (built under `scratch`), a built-in name (OpenAI weights), `local-dir:` or
        `hf-hub:` path, or None: the cache's configured model."""
        if name == "tiny":
            return cls.tiny(scratch)
        if name:
            return cls(name, None if ":" in name else "openai")
        return cls.configured()

    @classmethod
    def tiny(cls, folder: Path) -> ClipModel:
        """The cache's tiny random open_clip, built into `folder` if it is not there yet."""
        from modm.services.cache.tiny_clip import build_tiny_clip

        if not (folder / "open_clip_config.json").exists():
            build_tiny_clip(folder)
        return cls(f"local-dir:{folder}", None, random_weights=True)


class _Clip:
    def __init__(self, spec: ClipModel, device: str = "cpu") -> None:
        import open_clip

        pretrained = None if spec.model.startswith(("local-dir:", "hf-hub:")) else spec.pretrained
        model, _, preprocess = open_clip.create_model_and_transforms(spec.model, pretrained=pretrained, device=device)
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(spec.model)
        self.device = device

    def image_features(self, images: Sequence[Any]) -> Any:
        import torch

        batch = torch.stack([self.preprocess(image.convert("RGB")) for image in images]).to(self.device)
        with torch.inference_mode():
            return self.model.encode_image(batch).float()

    def text_features(self, texts: Sequence[str]) -> Any:
        import torch

        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()


def clip_scores(images: Sequence[Path], prompts: Sequence[str], spec: ClipModel, *, batch: int = 32) -> list[float]:
    """CLIP score of each image against its prompt."""
    import torch
    from PIL import Image

    if len(images) != len(prompts):
        raise ValueError("one prompt per image")
    clip = _Clip(spec)
    scores: list[float] = []
    for i in range(0, len(images), batch):
        loaded = [Image.open(path) for path in images[i : i + batch]]
        image = torch.nn.functional.normalize(clip.image_features(loaded), dim=-1)
        text = torch.nn.functional.normalize(clip.text_features(prompts[i : i + batch]), dim=-1)
        scores.extend((100.0 * (image * text).sum(-1).clamp(min=0)).tolist())
    return [round(s, 4) for s in scores]


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class FidResult:
    value: float
    metric: str  # "FID" (Inception v3) or "FD-CLIP (<model>)"
    images_a: int
    images_b: int
    note: str


def inception_weights(explicit: Path | None) -> Path | None:
    """The Inception v3 weights file to use, if this machine has one."""
    if explicit is not None:
        if not explicit.is_file():
            raise FileNotFoundError(f"no Inception weights at {explicit}")
        return explicit
    import torch

    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return cached if cached.is_file() else None


def fid(
    folder_a: Path,
    folder_b: Path,
    *,
    weights: Path | None = None,
    clip: ClipModel | None = None,
    batch: int = 32,
) -> FidResult:
    """FID between the images of two folders (Inception when its weights exist, else FD-CLIP)."""
    import torch
    from PIL import Image
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = image_files(folder_a), image_files(folder_b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least two images in each folder")
    inception = inception_weights(weights)
    if inception is not None:
        metric = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(inception))
        name, note = "FID", f"Inception v3 weights from {inception}"
    else:
        spec = clip or ClipModel.configured()
        metric = FrechetInceptionDistance(feature=_clip_features(_Clip(spec)), normalize=True)
        name = f"FD-CLIP ({spec.model})"
        note = (
            "Inception v3 weights are not on this machine (torch-fidelity downloads them on first use, "
            "and there is no network here): this is the Fréchet distance over CLIP image features, not FID"
        )
    for folder, real in ((a, True), (b, False)):
        for i in range(0, len(folder), batch):
            tensors = [_to_tensor(Image.open(path)) for path in folder[i : i + batch]]
            metric.update(torch.stack(tensors), real=real)
    return FidResult(round(float(metric.compute()), 4), name, len(a), len(b), note)


def _to_tensor(image: Any) -> Any:
    """An image as float CxHxW in [0, 1], resized to Inception's input (all images one size)."""
    import numpy as np
    import torch
    from PIL import Image

    rgb = image.convert("RGB").resize((299, 299), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _clip_features(clip: _Clip) -> Any:
    import torch

    class ClipFeatures(torch.nn.Module):
        """Float images in [0, 1] -> open_clip image features (torchmetrics' custom extractor)."""

        def __init__(self) -> None:
            super().__init__()
            visual = clip.model.visual
            size = visual.image_size
            self.size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
            std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
            self.num_features = int(clip.model.visual.output_dim)

        def forward(self, images: Any) -> Any:
            x = torch.nn.functional.interpolate(images.float(), size=self.size, mode="bicubic", antialias=True)
            with torch.inference_mode():
                return clip.model.encode_image((x - self.mean) / self.std).float()

    return ClipFeatures()


def mean_by(values: Sequence[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and count of `(group, value)` pairs by group."""
    groups: dict[str, list[float]] = {}
    for group, value in values:
        groups.setdefault(group, []).append(value)
    return {g: {"mean": round(statistics.fmean(v), 4), "n": len(v)} for g, v in sorted(groups.items())}
