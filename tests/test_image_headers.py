"""The import's header check without PIL (storage.image_headers): the same size as PIL for every PNG mode and JPEG
kind PIL writes, None (so PIL decides) for anything damaged or unusual, and check_image_header's verdicts
unchanged."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from storage.image_headers import declared_size
from storage.importers import check_image_header

PNG_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"]
JPEG_MODES = ["L", "RGB", "CMYK"]


def _encoded(mode: str, fmt: str, size=(37, 23), **params) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


@pytest.mark.parametrize("mode", PNG_MODES)
def test_png_sizes_match_pil(mode):
    data = _encoded(mode, "PNG")
    assert declared_size(data) == Image.open(io.BytesIO(data)).size == (37, 23)


@pytest.mark.parametrize("params", [{}, {"progressive": True}, {"exif": Image.Exif()}, {"quality": 5}])
@pytest.mark.parametrize("mode", JPEG_MODES)
def test_jpeg_sizes_match_pil(mode, params):
    exif = params.get("exif")
    if exif is not None:
        exif[0x010E] = "x" * 5000  # a long APP1 segment before the frame header
    data = _encoded(mode, "JPEG", **params)
    assert declared_size(data) == Image.open(io.BytesIO(data)).size == (37, 23)


def test_damaged_or_other_headers_give_none():
    png = _encoded("RGB", "PNG")
    jpeg = _encoded("RGB", "JPEG")
    bad_crc = png[:29] + bytes([png[29] ^ 1]) + png[30:]
    bad_mode = png[:24] + bytes([7]) + png[25:]  # colour type 7 does not exist
    assert declared_size(bad_crc) is None
    assert declared_size(bad_mode) is None
    assert declared_size(png[:30]) is None  # the IHDR chunk cut short
    assert declared_size(jpeg[:20]) is None  # no frame header in the bytes given
    assert declared_size(b"\xff\xd8\xff\xda" + jpeg[4:]) is None  # a scan before any frame header
    assert declared_size(_encoded("RGB", "GIF")) is None
    assert declared_size(b"") is None


def _pil_verdict(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width >= 1 and im.height >= 1
    except Exception:
        return False


def test_check_image_header_verdicts_unchanged(tmp_path, monkeypatch):
    """Good files pass, damaged ones are refused in words, and a declared size over PIL's bomb limit is refused as
    PIL refuses it: the quick path never accepts what PIL would not."""
    png, jpeg = _encoded("RGB", "PNG"), _encoded("RGB", "JPEG")
    huge = bytearray(png)
    huge[16:24] = struct.pack(">II", 100_000, 100_000)
    huge[29:33] = struct.pack(">I", __import__("zlib").crc32(bytes(huge[12:29])))
    cases = {"good.png": png, "good.jpg": jpeg, "gif.gif": _encoded("RGB", "GIF"), "text.png": b"not an image",
             "cut.jpg": jpeg[:40], "huge.png": bytes(huge)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        digest, problem = check_image_header(tmp_path / name)
        assert (digest is not None) == _pil_verdict(data) or name == "huge.png", name
        assert (digest is None) == (problem is not None)
    assert check_image_header(tmp_path / "huge.png")[1].startswith("image too large")
    assert check_image_header(tmp_path / "text.png")[1].startswith("not an image")
