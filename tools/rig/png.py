"""Reading the pixels of a PNG (Chromium's screenshots) with the standard library only.

Enough of the PNG specification (W3C PNG, 2nd ed.) for what Chromium writes:
8-bit truecolour with or without alpha (colour types 2 and 6), not
interlaced, the five scanline filters of section 9. ``colours(path)``
counts the pixels of each ``#rrggbb`` colour, so a test can check that a
colour was drawn, not only named in the markup.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngError(Exception):
    """Not a PNG this reader handles; the message says why."""


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def rows(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, unfiltered scanlines) of the PNG at ``path``."""
    data = path.read_bytes()
    if data[:8] != SIGNATURE:
        raise PngError(f"{path}: not a PNG file")
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise PngError(f"{path}: depth {depth}, colour type {colour}, interlace {interlace}: "
                       "only 8-bit RGB/RGBA, not interlaced")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    out: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
        out.append(bytes(line))
        prev = line
    return width, height, bpp, out


def colours(path: Path) -> Counter[str]:
    """How many pixels of each ``#rrggbb`` colour the PNG at ``path`` holds."""
    width, _, bpp, lines = rows(path)
    counts: Counter[str] = Counter()
    for line in lines:
        for x in range(width):
            r, g, b = line[x * bpp:x * bpp + 3]
            counts[f"#{r:02x}{g:02x}{b:02x}"] += 1
    return counts
