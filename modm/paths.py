"""Where modm keeps local state (tiny models, the embedded cache) on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def data_home(explicit: Path | None = None) -> Path:
    """`--data-dir`, else $MODM_HOME, else ~/.modm."""
    if explicit is not None:
        return explicit
    env = os.environ.get("MODM_HOME")
    return Path(env) if env else Path.home() / ".modm"


def tiny_model_dir(family: str, home: Path) -> Path:
    return home / "models" / f"tiny-{family}"
