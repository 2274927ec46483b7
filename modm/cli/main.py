"""The `modm` command: one entry point, a subcommand per job.

Heavy imports (torch, diffusers) happen inside the commands that need them, so `modm --help`
and the torch-free commands stay fast and work without the worker extra.
"""

from __future__ import annotations

import typer

from modm.cli import bench, cache, generate, models, up, worker
from modm.cli import eval as evaluation

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])
app.add_typer(models.app, name="models")
app.command("worker")(worker.worker)
app.command("generate")(generate.generate)
app.command("stats")(generate.stats)
app.command("up")(up.up)
app.command("cache")(cache.cache)
app.command("bench")(bench.bench)
app.add_typer(evaluation.app, name="eval")


if __name__ == "__main__":
    app()
