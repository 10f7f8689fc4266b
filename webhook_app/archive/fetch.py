"""Downloading one preview image: bounded in size and time, and checked to be an image."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import requests

from webhook_app.archive.images import CONTENT_TYPES, ImageError, ImageInfo, identify

ACCEPTED_TYPES = frozenset(CONTENT_TYPES.values())


class FetchError(Exception):
    """The image could not be had; `transient` says whether trying again may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Fetched:
    data: bytes
    info: ImageInfo
    sha256: str


def fetch_image(http: requests.Session, url: str, *, max_bytes: int, timeout: float) -> Fetched:
    """GET the image, refusing anything that is not a PNG, JPEG or WebP of at most max_bytes."""
    try:
        response = http.get(
            url,
            stream=True,
            timeout=(min(5.0, timeout), timeout),
            headers={"Accept": ", ".join(sorted(ACCEPTED_TYPES))},
        )
    except requests.RequestException as exc:
        raise FetchError(f"download failed: {type(exc).__name__}", transient=True) from None
    with response:
        if response.status_code != 200:
            # 408, 429 and 5xx may pass; any other answer (404, 410 expired...) will not.
            transient = response.status_code in (408, 429) or response.status_code >= 500
            raise FetchError(f"HTTP {response.status_code}", transient=transient)
        declared = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if declared not in ACCEPTED_TYPES:
            raise FetchError(
                f"content type {declared or 'missing'!r} is not an image we keep", transient=False
            )
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"image larger than {max_bytes} bytes", transient=False)
        data = bytearray()
        # The read timeout bounds each read; a server dripping bytes is bounded by this.
        give_up_at = time.monotonic() + 2 * timeout
        try:
            for chunk in response.iter_content(64 * 1024):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise FetchError(f"image larger than {max_bytes} bytes", transient=False)
                if time.monotonic() > give_up_at:
                    raise FetchError("download too slow", transient=True)
        except requests.RequestException as exc:
            raise FetchError(
                f"download interrupted: {type(exc).__name__}", transient=True
            ) from None
    try:
        info = identify(bytes(data))
    except ImageError as exc:
        raise FetchError(str(exc), transient=False) from None
    if info.content_type != declared:
        raise FetchError(
            f"declared {declared} but the bytes are {info.content_type}", transient=False
        )
    return Fetched(bytes(data), info, hashlib.sha256(data).hexdigest())
