"""Reading image formats and sizes from headers, on real PNG, JPEG and WebP files."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook_app.archive.images import ImageError, ImageInfo, identify
from webhook_app.sandbox.png import gradient_png

IMAGES = Path(__file__).parent / "fixtures" / "images"


def test_png_from_the_sandbox() -> None:
    assert identify(gradient_png("seed", size=48)) == ImageInfo("png", 48, 48)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("sixteen.jpg", ImageInfo("jpeg", 16, 16)), ("sixteen.webp", ImageInfo("webp", 16, 16))],
)
def test_jpeg_and_webp_files(name: str, expected: ImageInfo) -> None:
    info = identify((IMAGES / name).read_bytes())
    assert info == expected
    assert info.content_type == f"image/{expected.format}"


def test_lossless_webp_header() -> None:
    # VP8L: signature 0x2f, then 14 bits of width-1 and 14 bits of height-1.
    bits = (300 - 1) | ((200 - 1) << 14)
    body = b"VP8L" + (5).to_bytes(4, "little") + b"\x2f" + bits.to_bytes(4, "little")
    data = b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WEBP" + body
    assert identify(data) == ImageInfo("webp", 300, 200)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a\x01\x00\x01\x00",
        b"<html>not an image</html>",
        b"\x89PNG\r\n\x1a\n\x00\x00",  # truncated before IHDR
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",  # JPEG without a frame header
        (IMAGES / "sixteen.jpg").read_bytes()[:20],
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ImageError):
        identify(data)
