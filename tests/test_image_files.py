"""Reading image files: every Pillow mode to the right RGB values, extreme sizes refused, special files skipped."""

from __future__ import annotations

import io
import os
import socket
import struct
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from titok.data.datasets import ImageFolder
from titok.data.images import MAX_ASPECT_RATIO, find_images, load_image, read_image, rgb_array
from titok.data.transforms import Preprocess

LEVEL = 1 / 255  # one 8-bit step


def _reopened(image: Image.Image, fmt: str) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    buf.seek(0)
    return Image.open(buf)


def _png16(values: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (color type 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA) of uint16 ``values`` (H, W[, C]), which
    Pillow cannot write itself."""
    height, width = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _palette_image(mode: str) -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    image.putpixel((1, 0), 1)
    if mode == "PA":
        return image.convert("PA")
    image.info["transparency"] = 1  # the second colour is transparent: its colour is still what is stored
    return _reopened(image, "PNG")


def _lab_red() -> Image.Image:
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    return _reopened(ImageCms.applyTransform(Image.new("RGB", (2, 2), (255, 0, 0)), to_lab), "TIFF")


# mode -> (an image in that mode, the RGB values in [0, 1] it holds, tolerance)
CASES = {
    "1": (lambda: Image.new("1", (2, 2), 1), (1.0, 1.0, 1.0), 0),
    "L": (lambda: _reopened(Image.new("L", (2, 2), 77), "PNG"), (77 / 255,) * 3, 0),
    "LA": (lambda: _reopened(Image.new("LA", (2, 2), (200, 40)), "PNG"), (200 / 255,) * 3, 0),
    "La": (lambda: Image.new("LA", (2, 2), (200, 128)).convert("La"), (200 / 255,) * 3, 2 * LEVEL),
    "P": (lambda: _palette_image("P"), None, 0),
    "PA": (lambda: _palette_image("PA"), None, 0),
    "RGB": (lambda: _reopened(Image.new("RGB", (2, 2), (1, 128, 255)), "PNG"), (1 / 255, 128 / 255, 1.0), 0),
    "RGBA": (lambda: _reopened(Image.new("RGBA", (2, 2), (9, 99, 199, 0)), "PNG"), (9 / 255, 99 / 255, 199 / 255), 0),
    "RGBa": (
        lambda: Image.new("RGBA", (2, 2), (200, 100, 50, 128)).convert("RGBa"),
        (200 / 255, 100 / 255, 50 / 255),
        2 * LEVEL,
    ),
    "RGBX": (lambda: Image.new("RGBX", (2, 2), (5, 6, 7, 0)), (5 / 255, 6 / 255, 7 / 255), 0),
    "CMYK": (lambda: _reopened(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "TIFF"), (1.0, 0.0, 0.0), 0),
    "YCbCr": (lambda: _reopened(Image.new("RGB", (2, 2), (255, 0, 0)).convert("YCbCr"), "TIFF"), (1, 0, 0), 3 * LEVEL),
    "LAB": (_lab_red, (1.0, 0.0, 0.0), 6 * LEVEL),
    "HSV": (lambda: Image.new("RGB", (2, 2), (0, 0, 255)).convert("HSV"), (0.0, 0.0, 1.0), LEVEL),
    "I;16": (lambda: _reopened(Image.fromarray(np.full((2, 2), 20640, np.uint16)), "PNG"), (20640 / 65535,) * 3, 1e-6),
    "I;16B": (lambda: _reopened(Image.fromarray(np.full((2, 2), 40000, ">u2")), "TIFF"), (40000 / 65535,) * 3, 1e-6),
    "I": (lambda: _reopened(Image.fromarray(np.full((2, 2), 65535, np.int32)), "TIFF"), (1.0, 1.0, 1.0), 1e-6),
    "F": (lambda: _reopened(Image.fromarray(np.full((2, 2), 0.25, np.float32)), "TIFF"), (0.25,) * 3, 1e-6),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_every_mode_gives_its_rgb_values(mode):
    make, expected, tolerance = CASES[mode]
    image = make()
    assert image.mode == mode
    array = rgb_array(image)
    assert array.shape == (image.height, image.width, 3)
    values = array.astype(np.float64) / 255 if array.dtype == np.uint8 else array.astype(np.float64)
    if mode in ("P", "PA"):  # the palette's colours, the transparent one included
        np.testing.assert_allclose(values[0, 0], np.array([10, 20, 30]) / 255, atol=1e-12)
        np.testing.assert_allclose(values[0, 1], np.array([200, 150, 100]) / 255, atol=1e-12)
    else:
        np.testing.assert_allclose(values, np.broadcast_to(expected, values.shape), atol=tolerance + 1e-9)


def test_16_bit_grey_is_scaled_not_saturated(tmp_path):
    values = np.random.default_rng(0).integers(0, 41280, (40, 40)).astype(np.uint16)  # mean ~0.315 of 65535
    Image.fromarray(values).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png", 40)
    assert image.mean().item() == pytest.approx(values.mean() / 65535, abs=1e-3)  # was 0.687: saturated at 255
    folder = ImageFolder(tmp_path, Preprocess(40))  # training data read the same way
    assert folder[0][0].mean().item() == pytest.approx(values.mean() / 65535, abs=1e-3)


@pytest.mark.parametrize("color_type,channels", [(2, 3), (6, 4), (4, 2)])
def test_16_bit_colour_pngs_come_out_to_8_bit_precision(tmp_path, color_type, channels):
    values = np.random.default_rng(1).integers(0, 65536, (6, 6, channels)).astype(np.uint16)
    (tmp_path / "c.png").write_bytes(_png16(values, color_type))
    got = read_image(tmp_path / "c.png", 6).astype(np.float64) / 255
    colour = values[..., :3] if channels >= 3 else np.repeat(values[..., :1], 3, axis=2)
    np.testing.assert_allclose(got, colour / 65535, atol=LEVEL + 1e-9)


@pytest.mark.parametrize(
    "image,message",
    [
        (Image.fromarray(np.array([[0, 70000]], np.int32)), r"mode I: 32-bit integer .* \[0, 65535\].* \[0, 70000\]"),
        (Image.fromarray(np.array([[-1, 5]], np.int32)), r"span \[-1, 5\]"),
        (Image.fromarray(np.array([[0.5, 2.0]], np.float32)), r"mode F: 32-bit float .* \[0, 1\].* \[0.5, 2\]"),
        (Image.fromarray(np.array([[0.5, np.nan]], np.float32)), r"mode F: .* span"),
        (types.SimpleNamespace(mode="I;32"), r"mode 'I;32' is not supported"),
    ],
)
def test_modes_that_cannot_be_converted_faithfully_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        rgb_array(image)


def test_extreme_aspect_ratios_are_refused_before_decoding(tmp_path):
    Image.new("L", (3_000_000, 1)).save(tmp_path / "strip.png")  # a few KB, 3 MB of pixels
    assert (tmp_path / "strip.png").stat().st_size < 20_000
    with pytest.raises(ValueError, match=r"strip.png: 3000000x1 pixels: aspect ratio 3,000,000:1 is beyond the 32:1"):
        load_image(tmp_path / "strip.png", 256)
    Image.new("L", (MAX_ASPECT_RATIO * 4, 4)).save(tmp_path / "wide.png")  # at the limit: read
    assert load_image(tmp_path / "wide.png", 8).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="aspect ratio"):  # training transforms refuse it too
        Preprocess(8)(torch.zeros(1, 1, 1000))
    assert ImageFolder(tmp_path, Preprocess(8))[0][2] == 1  # the strip is passed over, the next image served


def test_special_files_in_a_folder_are_reported_not_opened(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "b.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "self.png").symlink_to(tmp_path / "self.png")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.png"))
        skipped: list = []
        found = find_images([tmp_path, tmp_path / "pipe.png"], skipped)
    assert found == [tmp_path / "a.png", tmp_path / "sub" / "b.png"]
    reasons = {Path(p).name: r for p, r in skipped}
    assert sorted(reasons) == ["dangling.png", "loop", "pipe.png", "self.png", "sock.png"]
    assert "FIFO" in reasons["pipe.png"] and "socket" in reasons["sock.png"] and "loop" in reasons["loop"]
    assert "broken symbolic link" in reasons["dangling.png"] and "symbolic link loop" in reasons["self.png"]
    assert len(skipped) == 6  # the FIFO given by name is reported too
    with pytest.raises(ValueError, match="FIFO"):
        load_image(tmp_path / "pipe.png", 4)  # refused without opening it (which would wait for a writer)


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    import titok.data.files

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def scandir(path):  # as for a folder without read permission (chmod does not stop root, who runs CI)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(titok.data.files.os, "scandir", scandir)
    skipped: list = []
    assert find_images([tmp_path], skipped) == [tmp_path / "a.png"]
    assert len(skipped) == 1 and "locked: cannot list this folder (Permission denied)" in skipped[0][1]
