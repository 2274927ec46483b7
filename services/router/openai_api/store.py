"""Images of `response_format=url` responses, kept in the router's memory for a short time.

Why the router and not presigned object-store URLs: the cache's bucket only ever holds the
images the cache inserts (not hits, bypassed or no_insert requests, nor edits), the router
holds no object-store credentials, and the cache's S3 endpoint (embedded SeaweedFS by default)
is not reachable by clients. A URL is a capability: an unguessable id that expires after
`ttl_s`, fetched without a token, like a presigned URL.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from modm.errors import InvalidArgument
from modm.services.router import metrics


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    media_type: str
    expires_at: float


class ImageStore:
    """Bounded by bytes: the oldest images go first when a new one does not fit."""

    def __init__(self, ttl_s: float, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, data: bytes, media_type: str) -> str:
        """Keep `data`; returns its id. An image larger than the whole store is refused."""
        if len(data) > self.max_bytes:
            raise InvalidArgument(
                "response_format",
                f"an image of {len(data)} bytes exceeds the URL store's {self.max_bytes}; use b64_json",
            )
        self._expire()
        while self._images and self._bytes + len(data) > self.max_bytes:
            self._drop(next(iter(self._images)))
        image_id = secrets.token_urlsafe(24)
        self._images[image_id] = StoredImage(data, media_type, self._clock() + self.ttl_s)
        self._bytes += len(data)
        metrics.IMAGE_URLS.set(self._bytes)
        return image_id

    def get(self, image_id: str) -> StoredImage | None:
        self._expire()
        return self._images.get(image_id)

    def _expire(self) -> None:
        now = self._clock()
        while self._images:
            oldest_id, oldest = next(iter(self._images.items()))
            if oldest.expires_at > now:
                break
            self._drop(oldest_id)

    def _drop(self, image_id: str) -> None:
        image = self._images.pop(image_id)
        self._bytes -= len(image.data)
        metrics.IMAGE_URLS.set(self._bytes)
