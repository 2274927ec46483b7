"""Progress display for CLI work that takes more than a second."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

_console = Console(stderr=True)


@contextmanager
def spinner(message: str) -> Iterator[None]:
    with _console.status(message):
        yield
    _console.print(f"[green]done[/green] {message}")
