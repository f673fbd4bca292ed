"""load_image: every kind of image a user may bring ends as RGB, or as an ImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnviz.images import MAX_SIDE, ImageError, load_image
from cnnviz.samples import load_sample, sample_names


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    out = load_image(encode(image, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (255, 0, 0)


def test_grayscale_becomes_three_equal_channels():
    out = load_image(encode(Image.new("L", (3, 3), 77), "PNG"))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (77, 77, 77)


def test_sixteen_bit_is_scaled_to_eight_bit():
    array = np.array([[0, 65535], [32896, 1000]], dtype=np.uint16)
    out = load_image(encode(Image.fromarray(array), "PNG"))
    values = np.asarray(out)[..., 0]
    assert values[0, 0] == 0 and values[0, 1] == 255 and abs(int(values[1, 0]) - 128) <= 1


def test_palette_with_transparency():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    out = load_image(encode(image, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent index -> white
    assert out.getpixel((1, 0)) == (0, 255, 0)


def test_cmyk_jpeg_becomes_rgb():
    out = load_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    r, g, b = out.getpixel((4, 4))
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60  # pure red


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    r, g, b = load_image(data).getpixel((2, 2))
    assert r > 200 and b < 60


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    top = np.asarray(out)[:5].mean()
    assert top > 200  # the left band is now on top


def test_large_images_are_shrunk():
    out = load_image(encode(Image.new("RGB", (3000, 1500)), "PNG"))
    assert out.size == (MAX_SIDE, MAX_SIDE // 2)


def test_path_and_file_object(tmp_path):
    path = tmp_path / "x.webp"
    Image.new("RGB", (5, 6), (1, 2, 3)).save(path)
    assert load_image(path).size == (5, 6)
    with open(path, "rb") as handle:
        assert load_image(handle).size == (5, 6)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"hello, this is a text file", "not an image"),
        (encode(Image.new("RGB", (64, 64), (9, 9, 9)), "PNG")[:60], "damaged or truncated"),
        (encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:200], "damaged or truncated"),
        (_png_header_only(60_000, 60_000), "too large"),
        (_png_header_only(9_000, 5_000), "million"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "bomb-pil", "bomb-ours"],
)
def test_bad_input_raises_image_error_with_message(data, words):
    with pytest.raises(ImageError) as info:
        load_image(data)
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_path_and_wrong_type():
    with pytest.raises(ImageError, match="No image file"):
        load_image("/nonexistent/cat.png")
    with pytest.raises(ImageError, match="Cannot read"):
        load_image(12345)  # type: ignore[arg-type]


_VALID = encode(Image.new("RGB", (16, 16), (200, 10, 10)), "PNG")


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.integers(0, len(_VALID) - 1).map(lambda n: _VALID[:n]),
                 st.tuples(st.integers(8, len(_VALID) - 1), st.integers(0, 255)).map(
                     lambda t: _VALID[: t[0]] + bytes([t[1]]) + _VALID[t[0] + 1:])))
def test_nothing_but_image_error_escapes(data):
    try:
        out = load_image(data)
    except ImageError:
        return
    assert out.mode == "RGB"


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_loads_as_rgb(name):
    image = load_sample(name)
    smallest = 28 if name.startswith("digit") else 32  # MNIST digits are 28×28, as MNIST ships them
    assert image.mode == "RGB" and min(image.size) >= smallest and max(image.size) <= MAX_SIDE
