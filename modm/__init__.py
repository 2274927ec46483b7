"""modm: serve text-to-image requests with a mixture of diffusion models and an image cache."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["AsyncClient", "Client", "GenerateResult", "ModmClientError", "__version__"]

_CLIENT_NAMES = {"AsyncClient", "Client", "GenerateResult", "ModmClientError"}


def __getattr__(name: str) -> Any:
    """`modm.Client` and friends, imported on first use so `import modm` stays light."""
    if name in _CLIENT_NAMES:
        from modm import client

        return getattr(client, name)
    raise AttributeError(f"module 'modm' has no attribute {name!r}")
