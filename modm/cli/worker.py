"""`modm worker`: serve one diffusion pipeline over gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def worker(
    model: Annotated[str | None, typer.Option(help="Hub id or local folder of a diffusers pipeline.")] = None,
    tiny: Annotated[
        str | None, typer.Option(help="Serve the tiny pipeline of this family (built on first use).")
    ] = None,
    revision: Annotated[
        str | None, typer.Option(help="Hub revision to load: a branch, tag or commit hash (pin it in production).")
    ] = None,
    variant: Annotated[str | None, typer.Option(help="Weights variant to load, e.g. fp16.")] = None,
    role: Annotated[str | None, typer.Option(help="large or small (emulated: the profile's unless given).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N, or emulated (sleeps by --profile).")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Emulated device: a shipped profile's name or a profile file (TOML).")
    ] = None,
    time_scale: Annotated[
        float | None, typer.Option(help="Emulated device: multiply every emulated duration (0.1 = 10x faster).")
    ] = None,
    profile_out: Annotated[
        Path | None, typer.Option(help="Write the measured profile here (TOML) after warm-up, for --profile.")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, fp32, fp16 or bf16.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus port.")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Largest dynamic batch.")] = None,
    batch_window_ms: Annotated[float | None, typer.Option(help="How long a batch waits to fill.")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Waiting requests beyond this are refused.")] = None,
    default_steps: Annotated[int | None, typer.Option(help="Steps when a request names none.")] = None,
    torch_threads: Annotated[int | None, typer.Option(help="CPU threads torch may use (default: every core).")] = None,
    log_format: Annotated[str | None, typer.Option(help="json or text.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where tiny models are kept (default ~/.modm).")] = None,
) -> None:
    """Serve one pipeline; flags override MODM_WORKER_* environment variables."""
    from pydantic import ValidationError

    from modm.services.worker.server import main
    from modm.services.worker.settings import WorkerSettings

    if tiny is not None:
        if model is not None:
            raise typer.BadParameter("give --model or --tiny, not both", param_hint="--tiny")
        from modm.cli.models import ensure_tiny
        from modm.paths import data_home

        model = str(ensure_tiny(tiny, data_home(data_dir)))
    try:
        settings = WorkerSettings.load(
            model=model,
            revision=revision,
            variant=variant,
            role=role,
            device=device,
            profile=profile,
            time_scale=time_scale,
            profile_out=profile_out,
            dtype=dtype,
            host=host,
            port=port,
            metrics_port=metrics_port,
            max_batch_size=max_batch_size,
            batch_window_ms=batch_window_ms,
            max_queue=max_queue,
            default_steps=default_steps,
            torch_threads=torch_threads,
            log_format=log_format,
        )
    except ValidationError as error:
        raise typer.BadParameter(str(error)) from error
    main(settings)
