"""The declared size of a PNG or JPEG read from its first bytes, without PIL: the large import's header check
(storage.importers.check_image_header) opens a million files, and PIL's `Image.open` (plugin search, a parser
object per file) is most of that time.

`declared_size` answers only for a header it can read in full and that PIL would open the same way (a PNG whose
IHDR chunk is whole, its CRC right and its bit depth and colour type a pair PIL reads; a baseline, extended,
progressive or lossless JPEG whose start-of-frame segment lies in the bytes given, with 1, 3 or 4 components).
Anything else gives None, and the caller asks PIL, which words what is wrong.
"""
from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) pairs PIL opens (PIL.PngImagePlugin._MODES)
PNG_MODES = {(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (2, 3), (4, 3), (8, 3), (8, 4),
             (16, 4), (8, 6), (16, 6)}
# Start-of-frame markers (SOF0-SOF15 less DHT, JPG and DAC), and markers that stand alone (no length)
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG file starting with `data` declares, or None (see the module doc)."""
    if data.startswith(PNG_SIGNATURE):
        return _png_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if (depth, colour) not in PNG_MODES or struct.unpack(">I", data[29:33])[0] != zlib.crc32(data[12:29]):
        return None
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        if marker in JPEG_STANDALONE:
            at += 2
            continue
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if length < 2:
            return None
        if marker in JPEG_SOF:
            if length < 8 or at + 10 > len(data):
                return None
            height, width, components = struct.unpack(">HHB", data[at + 5:at + 10])
            return (width, height) if components in (1, 3, 4) else None
        if marker in (0xD9, 0xDA):  # end of image, or the scan, before any frame header
            return None
        at += 2 + length
    return None
