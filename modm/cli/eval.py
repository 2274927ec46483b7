"""`modm eval`: image quality of a folder of generated images (needs the `eval` extra).

    modm eval clip IMAGES_DIR            # CLIP score of each image against its prompt
    modm eval fid REFERENCE_DIR OTHER_DIR

Prompts come from `prompts.jsonl` in the folder ({"file": ..., "prompt": ...} per line, the
layout the cache's Import uses) or a sidecar `<name>.txt` per image. With random weights (the
tiny models, `--clip-model tiny`) the numbers are meaningless; the command says so.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Image quality: CLIP score and FID.")

ClipOption = Annotated[
    str | None,
    typer.Option(help="open_clip model: 'tiny' (random, offline), a name, or local-dir:/path (default: the cache's)."),
]


def prompts_of(folder: Path) -> dict[str, str]:
    """Image file name -> prompt, from prompts.jsonl and/or <name>.txt sidecars."""
    from modm.bench.quality import image_files

    prompts: dict[str, str] = {}
    listing = folder / "prompts.jsonl"
    if listing.exists():
        for line in listing.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                prompts[str(row["file"])] = str(row["prompt"])
    for image in image_files(folder):
        sidecar = image.with_suffix(".txt")
        if image.name not in prompts and sidecar.exists():
            prompts[image.name] = sidecar.read_text().strip()
    return prompts


@app.command("clip")
def clip(
    folder: Annotated[Path, typer.Argument(help="Images with prompts.jsonl or <name>.txt sidecars.")],
    clip_model: ClipOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every score as JSON.")] = False,
) -> None:
    """CLIP score (100 x max(cos, 0)) of each image against its prompt, and the mean."""
    from modm.bench.quality import MEANINGLESS, ClipModel, clip_scores, image_files

    prompts = prompts_of(folder)
    images = [p for p in image_files(folder) if p.name in prompts]
    if not images:
        raise typer.BadParameter(f"no image with a prompt in {folder}", param_hint="FOLDER")
    spec = ClipModel.parse(clip_model, folder.parent / ".modm-tiny-clip")
    scores = clip_scores(images, [prompts[p.name] for p in images], spec)
    mean = statistics.fmean(scores)
    if as_json:
        named = dict(zip([p.name for p in images], scores, strict=True))
        typer.echo(json.dumps({"model": spec.model, "mean": round(mean, 4), "scores": named}))
    else:
        typer.echo(f"CLIP score ({spec.model}) over {len(scores)} images: mean {mean:.4f}")
    if spec.random_weights:
        typer.echo(f"WARNING: {MEANINGLESS}", err=True)


@app.command("fid")
def fid(
    reference: Annotated[Path, typer.Argument(help="Reference images (e.g. the large model's).")],
    other: Annotated[Path, typer.Argument(help="Images to compare (e.g. modm's).")],
    inception_weights: Annotated[
        Path | None, typer.Option(help="torch-fidelity's Inception v3 weights file (default: torch's hub cache).")
    ] = None,
    clip_model: ClipOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """FID between two folders; without Inception weights, the Fréchet distance of CLIP features."""
    from dataclasses import asdict

    from modm.bench.quality import MEANINGLESS, ClipModel
    from modm.bench.quality import fid as compute

    spec = ClipModel.parse(clip_model, reference.parent / ".modm-tiny-clip")
    try:
        result = compute(reference, other, weights=inception_weights, clip=spec)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    if as_json:
        typer.echo(json.dumps(asdict(result)))
    else:
        typer.echo(f"{result.metric}: {result.value:.4f} ({result.images_a} vs {result.images_b} images)")
        typer.echo(f"note: {result.note}")
    if result.metric != "FID" and spec.random_weights:
        typer.echo(f"WARNING: {MEANINGLESS}", err=True)
