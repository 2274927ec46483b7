"""`modm models`: build and inspect local pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modm.cli.progress import spinner

app = typer.Typer(no_args_is_help=True, help="Build and inspect local pipelines.")


@app.command("build-tiny")
def build_tiny(
    family: Annotated[str, typer.Option(help="sd3, flux, sdxl, sana, sana_sprint or sd.")],
    out: Annotated[Path, typer.Option(help="Folder to save the pipeline into.")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build a tiny randomly initialised pipeline and save it like a real model."""
    from modm.services.worker.tiny import TINY_FAMILIES, build_tiny

    if family not in TINY_FAMILIES:
        raise typer.BadParameter(f"choose one of {', '.join(TINY_FAMILIES)}", param_hint="--family")
    with spinner(f"building tiny {family} pipeline"):
        path = build_tiny(family, out, seed=seed)
    typer.echo(str(path))


def ensure_tiny(family: str, home: Path) -> Path:
    """The tiny pipeline of `family` under the data dir, built on first use."""
    from modm.paths import tiny_model_dir
    from modm.services.worker.tiny import build_tiny

    target = tiny_model_dir(family, home)
    if not (target / "model_index.json").exists():
        with spinner(f"building tiny {family} pipeline into {target}"):
            build_tiny(family, target)
    return target
