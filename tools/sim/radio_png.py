"""The picture of ``knute plan --png``: a plain RGB PNG written with zlib, no imaging library.

Three panels side by side (legend in docs/radio.md):
1. the city, each node a dot coloured by its spreading factor, concentrators as
   black crosses;
2. the same city coloured by each node's delivery: green >= 99 %, amber >= 90 %,
   red below, black when nothing arrived;
3. the load per channel: one bar per channel, stacked by SF in the colours of
   panel 1, height G: the full panel height is G = 0.1 when no channel carries more
   (grid lines every 0.01), else G = 1 (grid lines every 0.1).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from knute.tools.sim.radio import SFS

SIZE = 400
RGB = tuple[int, int, int]
SF_COLOURS: dict[int, RGB] = {7: (33, 102, 172), 8: (67, 162, 202), 9: (102, 194, 164),
                              10: (254, 224, 139), 11: (244, 109, 67), 12: (158, 1, 66)}
GOOD: RGB = (26, 152, 80)
FAIR: RGB = (253, 174, 97)
POOR: RGB = (215, 48, 39)
NONE: RGB = (0, 0, 0)
GRID: RGB = (220, 220, 220)


class Canvas:
    """An RGB raster with a white background."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.px = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, colour: RGB, r: int = 1) -> None:
        """A filled square of side 2r-1 centred on (x, y), clipped."""
        for yy in range(y - r + 1, y + r):
            if not 0 <= yy < self.height:
                continue
            for xx in range(x - r + 1, x + r):
                if 0 <= xx < self.width:
                    i = (yy * self.width + xx) * 3
                    self.px[i:i + 3] = bytes(colour)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: RGB) -> None:
        """A filled rectangle [x0, x1) x [y0, y1), clipped."""
        x0, x1 = max(0, x0), min(self.width, x1)
        row = bytes(colour) * max(0, x1 - x0)
        for y in range(max(0, y0), min(self.height, y1)):
            i = (y * self.width + x0) * 3
            self.px[i:i + len(row)] = row

    def png(self) -> bytes:
        """The raster as PNG bytes (8-bit RGB, filter 0 on every row)."""
        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.px[y * stride:(y + 1) * stride])
                       for y in range(self.height))

        def chunk(tag: bytes, data: bytes) -> bytes:
            body = tag + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        head = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head)
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _delivery_colour(sent: int, got: int) -> RGB:
    if got == 0:
        return NONE
    if got >= 0.99 * sent:
        return GOOD
    if got >= 0.90 * sent:
        return FAIR
    return POOR


def render(summary: dict[str, Any], node_xy: list[tuple[float, float]],
           node_sf: list[int], radius_km: float) -> bytes:
    """The PNG of one `knute plan` run."""
    pad = 10
    c = Canvas(3 * SIZE + 4 * pad, SIZE + 2 * pad)
    extent = max([radius_km] + [max(abs(x), abs(y)) for x, y in node_xy]) * 1.02
    scale = (SIZE / 2) / extent
    per_node = summary["per_node"]
    gws = summary["gateway_positions_km"]
    for panel in range(2):
        ox = pad + panel * (SIZE + pad) + SIZE // 2
        oy = pad + SIZE // 2
        c.rect(ox - SIZE // 2, oy - SIZE // 2, ox + SIZE // 2, oy + SIZE // 2, (250, 250, 250))
        late: list[tuple[int, int, RGB]] = []
        for n, (x, y) in enumerate(node_xy):
            px, py = ox + int(x * scale), oy - int(y * scale)
            if panel == 0:
                c.dot(px, py, SF_COLOURS[node_sf[n]])
                continue
            colour = _delivery_colour(per_node["sent"][n], per_node["delivered"][n])
            if colour == GOOD:
                c.dot(px, py, colour)
            else:
                late.append((px, py, colour))       # drawn larger, on top
        for px, py, colour in late:
            c.dot(px, py, colour, 2)
        for gx, gy in gws:
            px, py = ox + int(gx * scale), oy - int(gy * scale)
            for d in range(-6, 7):
                c.dot(px + d, py, NONE, 2)
                c.dot(px, py + d, NONE, 2)
    # Panel 3: load per channel, stacked by SF; full height = G of 0.1 or 1.
    x0 = pad + 2 * (SIZE + pad)
    base = pad + SIZE
    loads = summary["channel_load"]
    top = 0.1 if max(float(ch["offered_load"]) for ch in loads) <= 0.1 else 1.0
    for tenth in range(11):
        y = base - int(SIZE * tenth / 10)
        c.rect(x0, y, x0 + SIZE, y + 1, GRID)
    width = SIZE // max(1, len(loads))
    for i, ch in enumerate(loads):
        y = float(base)
        for sf in SFS:
            g = float(ch["by_sf"].get(str(sf), 0.0))
            h = SIZE * min(g / top, 1.0)
            c.rect(x0 + i * width + 4, int(y - h), x0 + (i + 1) * width - 4, int(y),
                   SF_COLOURS[sf])
            y -= h
    return c.png()
