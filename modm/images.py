"""Image encoding and defensive decoding shared by every service that handles image bytes."""

from __future__ import annotations

import io
import warnings
from enum import StrEnum

from PIL import Image, UnidentifiedImageError

from modm.errors import InvalidArgument


class ImageFormat(StrEnum):
    PNG = "png"
    WEBP = "webp"
    JPEG = "jpeg"


_PIL_NAMES = {ImageFormat.PNG: "PNG", ImageFormat.WEBP: "WEBP", ImageFormat.JPEG: "JPEG"}
_ACCEPTED = ("PNG", "JPEG", "WEBP")


def encode_image(image: Image.Image, fmt: ImageFormat = ImageFormat.PNG, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt is ImageFormat.PNG:
        image.save(buf, format="PNG")
    else:
        image.convert("RGB").save(buf, format=_PIL_NAMES[fmt], quality=quality)
    return buf.getvalue()


def decode_image(data: bytes, *, field: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode untrusted bytes into an RGB image, refusing bombs before any pixel is inflated."""
    if not data:
        raise InvalidArgument(field, "is empty")
    if len(data) > max_bytes:
        raise InvalidArgument(field, f"is {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the three accepted parsers ever see the bytes, not every plugin Pillow has.
            image = Image.open(io.BytesIO(data), formats=_ACCEPTED)
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidArgument(field, f"is {width}x{height}, more than {max_pixels} pixels")
            image.load()
            return image.convert("RGB")
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(field, f"refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InvalidArgument(field, "is not a PNG, JPEG or WebP image") from exc
    except Exception as exc:
        raise InvalidArgument(field, f"is not a decodable image ({type(exc).__name__}: {exc})") from exc
