"""Where archived images are kept: a local directory, or any S3-compatible bucket."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from webhook_app.settings import Settings

CHUNK = 64 * 1024
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class StorageError(Exception):
    """The store could not keep or return an object; worth trying again later."""


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def open(self, key: str) -> Iterator[bytes]: ...


def checked_key(key: str) -> str:
    """Keys are ours (job and item ids), but never let one climb out of the store."""
    if not _SAFE_KEY.match(key) or ".." in key:
        raise ValueError(f"unsafe storage key {key!r}")
    return key


class LocalStorage:
    """Files under one directory, written atomically (a reader never sees half a file)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.root / checked_key(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from None

    def open(self, key: str) -> Iterator[bytes]:
        try:
            handle = (self.root / checked_key(key)).open("rb")
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from None
        return _chunks(handle)


def _chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class S3Storage:
    """Objects in an S3-compatible bucket; credentials come from the usual AWS_* variables."""

    def __init__(
        self, bucket: str, *, endpoint_url: str | None = None, prefix: str = "", client: Any = None
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}
            ),
        )

    def put(self, key: str, data: bytes, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + checked_key(key),
                Body=data,
                ContentType=content_type,
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot write {key}: {type(exc).__name__}") from None

    def open(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self.prefix + checked_key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot read {key}: {type(exc).__name__}") from None
        return _chunks_of(answer["Body"])


def _chunks_of(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()


def storage_from_settings(settings: Settings) -> Storage:
    """An S3 bucket when ARCHIVE_S3_BUCKET is set, else the ARCHIVE_DIR directory."""
    if settings.archive_s3_bucket:
        return S3Storage(
            settings.archive_s3_bucket,
            endpoint_url=settings.archive_s3_endpoint_url,
            prefix=settings.archive_s3_prefix,
        )
    return LocalStorage(settings.archive_dir)
