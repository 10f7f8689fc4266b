"""Tiny real PNG images for preview URLs, built without an imaging library."""

from __future__ import annotations

import hashlib
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(tag + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def gradient_png(seed: str, size: int = 64) -> bytes:
    """A `size`x`size` RGB horizontal gradient whose two colours are derived from `seed`."""
    digest = hashlib.sha256(seed.encode()).digest()
    start, end = digest[0:3], digest[3:6]
    last = max(size - 1, 1)
    row = bytearray([0])  # filter type 0 (None) before each scanline
    for x in range(size):
        row.extend((start[c] * (last - x) + end[c] * x) // last for c in range(3))
    pixels = bytes(row) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(pixels))
        + _chunk(b"IEND", b"")
    )
