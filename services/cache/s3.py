"""Image bytes in S3-compatible object storage (MinIO, SeaweedFS, AWS S3) through the minio SDK."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from modm.services.cache.stores import ObjectInfo, ObjectMissing, StoreUnavailable

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class S3ObjectStore:
    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        cert_check: bool = True,
        region: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=3 * timeout_s),
            maxsize=32,
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            cert_reqs="CERT_REQUIRED" if cert_check else "CERT_NONE",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self._http = http
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    def ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                    log.info("created bucket", extra={"bucket": self.bucket})
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        except (S3Error, *_NETWORK_ERRORS) as exc:
            raise StoreUnavailable(f"bucket {self.bucket} at {self.endpoint}: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        except (S3Error, *_NETWORK_ERRORS) as exc:
            raise StoreUnavailable(f"put {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectMissing(key) from exc
            raise StoreUnavailable(f"get {key}: {exc}") from exc
        except _NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"get {key}: {exc}") from exc
        try:
            return response.read()
        except _NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"get {key}: {exc}") from exc
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in _MISSING:
                return False
            raise StoreUnavailable(f"stat {key}: {exc}") from exc
        except _NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"stat {key}: {exc}") from exc

    def delete(self, keys: Iterable[str]) -> None:
        batch = [DeleteObject(k) for k in keys]
        try:
            for start in range(0, len(batch), 1000):
                errors = list(self.client.remove_objects(self.bucket, batch[start : start + 1000]))
                real = [e for e in errors if e.code not in _MISSING]
                if real:
                    raise StoreUnavailable(f"delete failed for {len(real)} objects: {real[0]}")
        except (S3Error, *_NETWORK_ERRORS) as exc:
            raise StoreUnavailable(f"delete: {exc}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            items = [
                ObjectInfo(
                    o.object_name or "",
                    int(o.size or 0),
                    o.last_modified.timestamp() if o.last_modified else 0.0,
                )
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if not o.is_dir
            ]
        except (S3Error, *_NETWORK_ERRORS) as exc:
            raise StoreUnavailable(f"list {prefix}: {exc}") from exc
        return iter(items)

    def close(self) -> None:
        self._http.clear()
