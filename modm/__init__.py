"""modm: serve text-to-image requests with a mixture of diffusion models and an image cache."""

__version__ = "0.1.0"
